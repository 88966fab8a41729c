//! `llm-sidecar sync status|now|requeue`: what the usage sync is doing (a pause for a wrong URL
//! or refused token, dead letters with their reasons), "send everything now", and "send these
//! refused records again".

use super::status::to_json;
use super::usage::thousands;
use super::Cli;
use anyhow::Result;
use clap::Subcommand;
use llm_sidecar::rpc::client::field;
use rmpv::Value;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum SyncCommand {
    /// Show the sync state: queue, last success and error, next attempt, dead letters
    Status {
        /// Print the raw result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Send every waiting record now (skips a backoff wait or pause)
    Now {
        /// Also resend the records the backend refused earlier (dead letters)
        #[arg(long)]
        retry_dead_letters: bool,
        /// Print the raw result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back to the queue (all, or the given record ids) to be sent again
    Requeue {
        /// Record ids (default: every dead letter)
        ids: Vec<String>,
    },
}

fn int(v: &Value, name: &str) -> Option<i64> {
    field(v, name).and_then(|x| x.as_i64().or_else(|| x.as_u64().map(|u| i64::try_from(u).unwrap_or(i64::MAX))))
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).and_then(Value::as_str).unwrap_or("?")
}

fn ago(at_ms: Option<i64>) -> String {
    match at_ms {
        None => "never".into(),
        Some(at) => {
            let secs = (llm_sidecar::clock::now_ms() - at).max(0) / 1000;
            format!("{} ago", human(secs))
        }
    }
}

fn human(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s / 60 % 60),
        s => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

fn describe_error(e: &Value) -> String {
    if e.is_nil() {
        return "none".into();
    }
    format!("{} ({})", text(e, "message"), ago(int(e, "at_ms")))
}

pub async fn run(cli: &Cli, command: &SyncCommand) -> Result<ExitCode> {
    let client = cli.connect().await?;
    match command {
        SyncCommand::Status { json } => {
            let s = client.call("sync.status", vec![]).await?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&to_json(&s))?);
                return Ok(ExitCode::SUCCESS);
            }
            let enabled = field(&s, "enabled").and_then(Value::as_bool).unwrap_or(false);
            if !enabled {
                outln!("sync: off (set `url` in the [sync] section of config.toml)");
            } else {
                outln!("sync: {} → {}", text(&s, "state"), text(&s, "endpoint"));
                match text(&s, "state") {
                    "misconfigured" => outln!(
                        "  paused: the backend says this URL is wrong (404/405/410 or a redirect); fix [sync] url, \
                         then `llm-sidecar sync now` (nothing was dead-lettered)"
                    ),
                    "paused" => outln!("  paused: the backend refused the token; waiting for a new one"),
                    _ => {}
                }
            }
            let pending = int(&s, "pending").unwrap_or(0);
            let oldest = int(&s, "oldest_pending_age_ms").map(|ms| format!(" (oldest {} old)", human(ms / 1000)));
            outln!("  source        {}", text(&s, "source"));
            outln!("  subject       {}", text(&s, "subject"));
            outln!("  pending       {}{}", thousands(pending), oldest.unwrap_or_default());
            outln!("  dead letters  {}", thousands(int(&s, "dead_letters").unwrap_or(0)));
            if !enabled && pending > 0 {
                outln!(
                    "  pending records are kept in the local ledger until a [sync] url is set, then sent; \
                     to move them elsewhere: `llm-sidecar usage export -o usage.jsonl`"
                );
            }
            if enabled {
                outln!("  last success  {}", ago(int(&s, "last_success_at_ms")));
                outln!("  last error    {}", describe_error(field(&s, "last_error").unwrap_or(&Value::Nil)));
                if let Some(next) = int(&s, "next_attempt_at_ms") {
                    let secs = (next - llm_sidecar::clock::now_ms()).max(0) / 1000;
                    outln!("  next attempt  in {}", human(secs));
                }
                outln!(
                    "  sent          {} records in {} batches since the daemon started",
                    thousands(int(&s, "sent_total").unwrap_or(0)),
                    thousands(int(&s, "batches_total").unwrap_or(0))
                );
            }
            for d in field(&s, "recent_dead_letters").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                let status = int(d, "status").map(|c| format!(" HTTP {c}")).unwrap_or_default();
                let body = field(d, "body").and_then(Value::as_str).map(|b| format!(": {b}")).unwrap_or_default();
                outln!(
                    "  dead letter   {} {}{status}{body} ({})",
                    text(d, "id"),
                    text(d, "reason"),
                    ago(int(d, "at_ms"))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SyncCommand::Now { retry_dead_letters, json } => {
            let arg = Value::Map(vec![(Value::from("retry_dead_letters"), Value::from(*retry_dead_letters))]);
            let r = client.call("sync.now", vec![arg]).await?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&to_json(&r))?);
            } else {
                let requeued = int(&r, "requeued").unwrap_or(0);
                if requeued > 0 {
                    outln!("requeued {} dead letters", thousands(requeued));
                }
                outln!(
                    "sent {}, dead-lettered {}, pending {} ({})",
                    thousands(int(&r, "sent").unwrap_or(0)),
                    thousands(int(&r, "dead_lettered").unwrap_or(0)),
                    thousands(int(&r, "pending").unwrap_or(0)),
                    text(&r, "state")
                );
            }
            let error = field(&r, "error").cloned().unwrap_or(Value::Nil);
            if !error.is_nil() {
                eprintln!("error: {}", text(&error, "message"));
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        SyncCommand::Requeue { ids } => {
            let arg = if ids.is_empty() {
                Value::Map(Vec::new())
            } else {
                let list = ids.iter().map(|i| Value::from(i.as_str())).collect();
                Value::Map(vec![(Value::from("ids"), Value::Array(list))])
            };
            let r = client.call("sync.requeue", vec![arg]).await?;
            outln!("requeued {} dead letters", thousands(int(&r, "requeued").unwrap_or(0)));
            Ok(ExitCode::SUCCESS)
        }
    }
}
