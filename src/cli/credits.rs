//! `llm-sidecar credits`: the prepaid credit balance, the last transactions, and the days left
//! at the current rate.

use super::status::to_json;
use super::usage::thousands;
use super::Cli;
use anyhow::Result;
use clap::Args;
use llm_sidecar::rpc::client::field;
use rmpv::Value;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CreditsArgs {
    /// Print `{balance, transactions}` as JSON
    #[arg(long)]
    json: bool,
    /// How many of the last transactions to show
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
}

fn int(v: &Value, name: &str) -> Option<i64> {
    field(v, name).and_then(|x| x.as_i64().or_else(|| x.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX))))
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).and_then(Value::as_str).unwrap_or("-")
}

pub async fn run(cli: &Cli, args: &CreditsArgs) -> Result<ExitCode> {
    let client = cli.connect().await?;
    let b = client.call("credits.balance", vec![]).await?;
    let limit = Value::Map(vec![(Value::from("limit"), Value::from(args.limit))]);
    let t = client.call("credits.transactions", vec![limit]).await?;
    if args.json {
        let out = serde_json::json!({ "balance": to_json(&b), "transactions": to_json(field(&t, "transactions").unwrap_or(&Value::Nil)) });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let n = |name: &str| int(&b, name).map_or("-".to_string(), thousands);
    outln!(
        "balance    {} credits ({} available, {} held by running calls)",
        n("balance"),
        n("available"),
        n("reserved")
    );
    match int(&b, "backend_balance") {
        Some(backend) => outln!(
            "backend    {} credits as of {}, less {} deducted here since",
            thousands(backend),
            int(&b, "as_of").map_or("-".into(), |s| llm_sidecar::policy::Bounds::rfc3339(s.saturating_mul(1000))),
            n("unacknowledged")
        ),
        None => outln!("backend    no balance reported yet (log in: `llm-sidecar account login`)"),
    }
    outln!("tier       {} (credits: {})", text(&b, "tier"), text(&b, "uses"));
    if let Some(p) = field(&b, "price").filter(|p| !p.is_nil()) {
        match text(p, "basis") {
            "fixed" => outln!(
                "price      {} per call + {} per 1k tokens",
                int(p, "per_request").unwrap_or(0),
                int(p, "per_1k_tokens").unwrap_or(0)
            ),
            _ => outln!(
                "price      provider cost x {} / ${:.4} per credit, rounded up",
                field(p, "markup").and_then(Value::as_f64).unwrap_or(1.0),
                int(p, "unit_microusd").unwrap_or(0) as f64 / 1_000_000.0
            ),
        }
    }
    let days = field(&b, "days_left").and_then(Value::as_f64);
    outln!(
        "rate       {} credits in the last 7 days{}",
        n("deducted_last_7_days"),
        days.map_or(String::new(), |d| format!(", about {d:.1} days left at that rate"))
    );
    let txs = field(&t, "transactions").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if txs.is_empty() {
        outln!("no credit transactions yet");
    } else {
        outln!("\n{:<24} {:<10} {:>9}  {}", "time", "kind", "credits", "for");
        for tx in txs {
            let what = match (
                field(tx, "record_id").and_then(Value::as_str),
                field(tx, "reference").and_then(Value::as_str),
            ) {
                (Some(r), _) => format!("record {r}"),
                (None, Some(r)) => r.to_string(),
                _ => String::new(),
            };
            outln!(
                "{:<24} {:<10} {:>+9}  {what}",
                int(tx, "ts").map_or("-".into(), llm_sidecar::policy::Bounds::rfc3339),
                text(tx, "kind"),
                int(tx, "credits").unwrap_or(0)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
