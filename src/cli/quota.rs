//! `llm-sidecar quota`: the active tier, each limit with a usage bar, and when the period ends.

use super::status::to_json;
use super::usage::thousands;
use super::Cli;
use anyhow::Result;
use clap::Args;
use llm_sidecar::rpc::client::field;
use rmpv::Value;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct QuotaArgs {
    /// Print the raw result as JSON
    #[arg(long)]
    json: bool,
}

const BAR: usize = 24;

fn int(v: &Value, name: &str) -> i64 {
    field(v, name)
        .and_then(|x| x.as_i64().or_else(|| x.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX))))
        .unwrap_or(0)
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).and_then(Value::as_str).unwrap_or("-")
}

/// `[#######.........]` for `used` of `limit`.
pub fn bar(used: i64, limit: i64) -> String {
    let filled = if limit <= 0 {
        BAR
    } else {
        usize::try_from((used.max(0) as i128 * BAR as i128 / limit as i128).min(BAR as i128)).unwrap_or(BAR)
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

fn amount(metric: &str, n: i64) -> String {
    if metric == "cost_microusd" {
        format!("${:.2}", n as f64 / 1_000_000.0)
    } else {
        thousands(n)
    }
}

pub async fn run(cli: &Cli, args: &QuotaArgs) -> Result<ExitCode> {
    let client = cli.connect().await?;
    let s = client.call("quota.status", vec![]).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&to_json(&s))?);
        return Ok(ExitCode::SUCCESS);
    }
    if field(&s, "enabled").and_then(Value::as_bool) != Some(true) {
        outln!("no tiers configured: every call is allowed (see docs/policy.md)");
        return Ok(ExitCode::SUCCESS);
    }
    outln!("tier      {} (from {})", text(&s, "tier"), text(&s, "tier_source"));
    outln!("period    {} → {}", text(&s, "period_start"), text(&s, "period_end"));
    if let Some(rpm) = field(&s, "requests_per_minute").and_then(Value::as_u64) {
        outln!("rate      {rpm} requests/minute");
    }
    let limits = field(&s, "limits").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if limits.is_empty() {
        outln!("limits    none (unlimited)");
    }
    for l in limits {
        let m = text(l, "metric");
        let (used, limit) = (int(l, "used"), int(l, "limit"));
        let pct = if limit > 0 { used as f64 * 100.0 / limit as f64 } else { 100.0 };
        let name = if m == "cost_microusd" { "cost" } else { m };
        outln!(
            "{name:<9} {} {} of {} ({pct:.0}%), {} left, projected {}",
            bar(used, limit),
            amount(m, used),
            amount(m, limit),
            amount(m, int(l, "remaining")),
            amount(m, int(l, "projected")),
        );
    }
    if field(&s, "overage").and_then(Value::as_bool) == Some(true) {
        outln!("overage   allowed past the limits (billed per 1k tokens)");
    }
    if let Some(b) = field(&s, "byok").filter(|b| b.is_map()) {
        let used = field(b, "used").cloned().unwrap_or(Value::Nil);
        let counts = field(b, "counts_toward_quota").and_then(Value::as_bool) == Some(true);
        let line = if field(b, "allowed").and_then(Value::as_bool) == Some(false) {
            "not allowed on this tier".to_string()
        } else {
            format!(
                "{} requests, {} tokens, {} this period; {}",
                thousands(int(&used, "requests")),
                thousands(int(&used, "tokens")),
                amount("cost_microusd", int(&used, "cost_microusd")),
                if counts { "counted in the limits above" } else { "not counted in the limits above" }
            )
        };
        outln!("own keys  {line}");
    }
    restricted(&client, text(&s, "tier")).await
}

/// Lists the models this tier refuses, with the tier that allows each, and how to change tier.
async fn restricted(client: &llm_sidecar::rpc::Client, tier: &str) -> Result<ExitCode> {
    let list = client.call("models.list", vec![]).await?;
    let providers = field(&list, "providers").and_then(Value::as_array).cloned().unwrap_or_default();
    // (provider, required tier) → models
    let mut refused: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    let mut hint = None;
    for p in &providers {
        let name = text(p, "name");
        for m in field(p, "models").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            if field(m, "allowed").and_then(Value::as_bool) != Some(false) {
                continue;
            }
            let model = format!("{name}/{}", text(m, "id"));
            let arg = Value::Map(vec![(Value::from("model"), Value::from(model.as_str()))]);
            let check = client.call("quota.check", vec![arg]).await?;
            let data = field(&check, "error").and_then(|e| field(e, "data")).cloned().unwrap_or(Value::Nil);
            let required = field(&data, "required_tier").and_then(Value::as_str).unwrap_or("no tier").to_string();
            if hint.is_none() {
                hint = field(&data, "upgrade").and_then(Value::as_str).map(str::to_string);
            }
            refused.entry((name.to_string(), required)).or_default().push(text(m, "id").to_string());
        }
    }
    if refused.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    outln!("not in the `{tier}` tier:");
    for ((provider, required), models) in &refused {
        let allowed_by = if required == "no tier" {
            "no tier allows them".to_string()
        } else {
            format!("the `{required}` tier allows them")
        };
        outln!("  {provider}: {} ({allowed_by})", models.join(", "));
    }
    if let Some(h) = hint {
        outln!("hint: {h}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars() {
        assert_eq!(bar(0, 10), format!("[{}]", ".".repeat(24)));
        assert_eq!(bar(5, 10), format!("[{}{}]", "#".repeat(12), ".".repeat(12)));
        assert_eq!(bar(50, 10), format!("[{}]", "#".repeat(24)));
    }
}
