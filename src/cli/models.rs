//! `llm-sidecar models [--provider P] [--json]`: the `models.list` table: every provider with
//! its adapter, whether a key is present, each model's price per million tokens and whether the
//! active tier allows it; then the configured routes.

use super::status::to_json;
use super::Cli;
use anyhow::Result;
use llm_sidecar::rpc::client::field;
use rmpv::Value;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    /// Only this provider
    #[arg(long, short)]
    provider: Option<String>,
    /// Print the raw result as JSON
    #[arg(long)]
    json: bool,
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).and_then(Value::as_str).unwrap_or("-")
}

/// `$2.50` from micro-dollars per million tokens.
fn per_million(price: &Value, name: &str) -> String {
    match field(price, name).and_then(Value::as_i64) {
        Some(m) => format!("${:.2}", m as f64 / 1_000_000.0),
        None => "-".into(),
    }
}

pub async fn run(cli: &Cli, args: &ModelsArgs) -> Result<ExitCode> {
    let client = cli.connect().await?;
    let mut params = Vec::new();
    if let Some(p) = &args.provider {
        params.push((Value::from("provider"), Value::from(p.as_str())));
    }
    let list = client.call("models.list", vec![Value::Map(params)]).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&to_json(&list))?);
        return Ok(ExitCode::SUCCESS);
    }
    let header = ["PROVIDER", "MODEL", "KEY", "INPUT/1M", "OUTPUT/1M", "CACHED/1M", "TIER"];
    let mut rows: Vec<[String; 7]> = Vec::new();
    let providers = field(&list, "providers").and_then(Value::as_array).cloned().unwrap_or_default();
    for p in &providers {
        let key = if field(p, "keyless").and_then(Value::as_bool) == Some(true) {
            "not needed"
        } else if field(p, "key_present").and_then(Value::as_bool) == Some(true) {
            "yes"
        } else {
            "no"
        };
        let models = field(p, "models").and_then(Value::as_array).cloned().unwrap_or_default();
        if models.is_empty() {
            rows.push([
                text(p, "name").into(),
                "(any model by name)".into(),
                key.into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for m in &models {
            let price = field(m, "price").cloned().unwrap_or(Value::Nil);
            let allowed = field(m, "allowed").and_then(Value::as_bool) != Some(false);
            rows.push([
                text(p, "name").into(),
                text(m, "id").into(),
                key.into(),
                per_million(&price, "input"),
                per_million(&price, "output"),
                per_million(&price, "cached"),
                if allowed { "allowed" } else { "not in tier" }.into(),
            ]);
        }
    }
    super::print_table(&header, &rows)?;
    let routes = field(&list, "routes").and_then(Value::as_array).cloned().unwrap_or_default();
    if !routes.is_empty() && args.provider.is_none() {
        outln!();
        outln!("routes:");
        for r in &routes {
            let targets: Vec<&str> = field(r, "targets")
                .and_then(Value::as_array)
                .map(|t| t.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            outln!("  {} → {}", text(r, "name"), targets.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
