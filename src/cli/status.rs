//! `llm-sidecar status`: call `daemon.info` and print it for a person (or as JSON).

use super::Cli;
use anyhow::Result;
use rmpv::Value;
use std::process::ExitCode;

pub async fn run(cli: &Cli, json: bool) -> Result<ExitCode> {
    let client = cli.connect().await?;
    let info = client.call("daemon.info", vec![]).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&to_json(&info))?);
        return Ok(ExitCode::SUCCESS);
    }
    let get = |k: &str| llm_sidecar::rpc::client::field(&info, k).map(display).unwrap_or_else(|| "?".into());
    let uptime = llm_sidecar::rpc::client::field(&info, "uptime_ms").and_then(Value::as_u64).unwrap_or(0);
    outln!("llm-sidecar {} is running (protocol {})", get("version"), get("protocol"));
    outln!("  pid          {}", get("pid"));
    outln!("  uptime       {}", human_duration(uptime / 1000));
    outln!("  socket       {}", get("socket"));
    let http = llm_sidecar::rpc::client::field(&info, "http").and_then(Value::as_str).map(|a| format!("http://{a}"));
    outln!("  http         {}", http.as_deref().unwrap_or("off (serve --http or [http] listen)"));
    outln!("  config       {}", get("config_file"));
    outln!("  data         {}", get("data_dir"));
    outln!("  connections  {}", get("connections"));
    let vault = llm_sidecar::rpc::client::field(&info, "vault");
    let vault_get =
        |k: &str| vault.and_then(|v| llm_sidecar::rpc::client::field(v, k)).map(display).unwrap_or_else(|| "?".into());
    outln!("  vault        {} ({} mode)", vault_get("state"), vault_get("mode"));
    let sync = llm_sidecar::rpc::client::field(&info, "sync");
    let sync_get =
        |k: &str| sync.and_then(|v| llm_sidecar::rpc::client::field(v, k)).map(display).unwrap_or_else(|| "?".into());
    if sync_get("enabled") == "true" {
        outln!("  sync         {} ({} pending)", sync_get("state"), sync_get("pending"));
    } else {
        outln!("  sync         off (no [sync] url)");
    }
    let unhealthy =
        llm_sidecar::rpc::client::field(&info, "providers").and_then(Value::as_array).cloned().unwrap_or_default();
    for t in &unhealthy {
        let get = |k: &str| llm_sidecar::rpc::client::field(t, k).map(display).unwrap_or_else(|| "?".into());
        let cooling = llm_sidecar::rpc::client::field(t, "cooldown_remaining_ms").and_then(Value::as_u64);
        match cooling {
            Some(ms) => outln!("  unhealthy    {} (cooling down, {}s left)", get("target"), ms / 1000),
            None => outln!("  unhealthy    {} ({} recent failures)", get("target"), get("consecutive_failures")),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.as_str().unwrap_or("?").to_string(),
        other => other.to_string(),
    }
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Converts a MessagePack value into JSON for `--json` output.
pub fn to_json(v: &Value) -> serde_json::Value {
    llm_sidecar::rpc::value_to_json(v)
}
