//! `llm-sidecar keys add|list|rm|test`: manage provider keys in the daemon's vault.

use super::vault::{decode_as, read_secret};
use super::Cli;
use anyhow::Result;
use clap::Subcommand;
use llm_sidecar::rpc::Client;
use llm_sidecar::vault::{KeyMeta, KeyStatus};
use rmpv::Value;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Store a key for PROVIDER (e.g. openai, anthropic, gemini); reads it from the terminal
    /// without echo, or one line from stdin. Replaces the key with the same provider and label.
    Add {
        provider: String,
        /// Name of this key, to keep several per provider (default: "default")
        #[arg(long)]
        label: Option<String>,
        /// Store it even if PROVIDER is neither built in nor configured (yet)
        #[arg(long)]
        force: bool,
    },
    /// List stored keys (metadata only; keys never leave the daemon)
    List {
        /// Only this provider's keys
        #[arg(long)]
        provider: Option<String>,
        /// Print the raw result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a key by id (see `keys list`)
    Rm { id: String },
    /// Check a key with its provider (lists models) and record whether it is valid
    Test { id: String },
}

#[derive(Deserialize)]
struct KeyOut {
    key: KeyMeta,
    #[serde(default)]
    replaced: bool,
}

#[derive(Deserialize)]
struct ListOut {
    keys: Vec<KeyMeta>,
}

#[derive(Deserialize)]
struct TestOut {
    key: KeyMeta,
    valid: bool,
    http_status: u16,
    latency_ms: u64,
}

pub async fn run(cli: &Cli, command: &KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Add { provider, label, force } => {
            // Connect first: a missing daemon is reported before the user types a key.
            let client = cli.connect().await?;
            let secret = read_secret(&format!("API key for {provider}: "), true)?;
            let mut arg = vec![
                (Value::from("provider"), Value::from(provider.as_str())),
                (Value::from("secret"), Value::from(secret.expose_secret())),
            ];
            if let Some(l) = label {
                arg.push((Value::from("label"), Value::from(l.as_str())));
            }
            if *force {
                arg.push((Value::from("force"), Value::from(true)));
            }
            let out: KeyOut = call(&client, "keys.set", arg).await?;
            let k = &out.key;
            let verb = if out.replaced { "replaced" } else { "added" };
            outln!("{verb} key {} ({} / {}, {})", k.id, k.provider, k.label, shown(k));
        }
        KeysCommand::List { provider, json } => {
            let client = cli.connect().await?;
            let mut arg = Vec::new();
            if let Some(p) = provider {
                arg.push((Value::from("provider"), Value::from(p.as_str())));
            }
            let raw = client.call("keys.list", vec![Value::Map(arg)]).await?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&super::status::to_json(&raw))?);
            } else {
                let out: ListOut = decode_as(raw)?;
                print_keys(&out.keys)?;
            }
        }
        KeysCommand::Rm { id } => {
            let client = cli.connect().await?;
            let out: KeyOut = call(&client, "keys.remove", vec![(Value::from("id"), Value::from(id.as_str()))]).await?;
            outln!("removed key {} ({} / {})", out.key.id, out.key.provider, out.key.label);
        }
        KeysCommand::Test { id } => {
            let client = cli.connect().await?;
            let out: TestOut = call(&client, "keys.test", vec![(Value::from("id"), Value::from(id.as_str()))]).await?;
            let verdict = if out.valid { "valid" } else { "INVALID" };
            outln!(
                "{} ({} / {}): {verdict} (HTTP {}, {} ms)",
                out.key.id,
                out.key.provider,
                out.key.label,
                out.http_status,
                out.latency_ms
            );
            if !out.valid {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn call<T: DeserializeOwned>(client: &Client, method: &str, arg: Vec<(Value, Value)>) -> Result<T> {
    decode_as(client.call(method, vec![Value::Map(arg)]).await?)
}

fn shown(k: &KeyMeta) -> String {
    k.last4.as_ref().map_or_else(|| "short key".to_string(), |l| format!("...{l}"))
}

fn print_keys(keys: &[KeyMeta]) -> Result<()> {
    if keys.is_empty() {
        outln!("no keys stored; add one with `llm-sidecar keys add <provider>`");
        return Ok(());
    }
    let header = ["ID", "PROVIDER", "LABEL", "KEY", "STATUS", "CREATED (UTC)", "LAST USED (UTC)"];
    let rows: Vec<[String; 7]> = keys
        .iter()
        .map(|k| {
            [
                k.id.clone(),
                k.provider.clone(),
                k.label.clone(),
                shown(k),
                match k.status {
                    KeyStatus::Unknown => "untested",
                    KeyStatus::Valid => "valid",
                    KeyStatus::Invalid => "INVALID",
                }
                .to_string(),
                when(Some(k.created_at)),
                when(k.last_used),
            ]
        })
        .collect();
    super::print_table(&header, &rows)?;
    Ok(())
}

fn when(ms: Option<i64>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    ms.and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "never".to_string())
}
