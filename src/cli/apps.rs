//! `llm-sidecar apps add|list|rm`: the apps that call the daemon over HTTP with an app token.

use super::vault::decode_as;
use super::Cli;
use anyhow::Result;
use clap::Subcommand;
use llm_sidecar::rpc::Client;
use rmpv::Value;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AppsCommand {
    /// Make app NAME and print its token (once: only a hash of it is kept). The token alone goes
    /// to stdout, so `TOKEN=$(llm-sidecar apps add NAME)` captures it.
    Add { name: String },
    /// List apps with when they were made, last used and their calls this month (never tokens)
    List {
        /// Print the raw result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove app NAME: its token stops working at once (its usage history stays)
    Rm { name: String },
}

#[derive(Deserialize)]
struct AddOut {
    name: String,
    token: String,
}

#[derive(Deserialize)]
struct AppOut {
    name: String,
    created: String,
    last_used: Option<String>,
    calls_this_month: u64,
}

#[derive(Deserialize)]
struct ListOut {
    apps: Vec<AppOut>,
}

#[derive(Deserialize)]
struct RemoveOut {
    removed: bool,
}

pub async fn run(cli: &Cli, command: &AppsCommand) -> Result<ExitCode> {
    match command {
        AppsCommand::Add { name } => {
            let client = cli.connect().await?;
            let out: AddOut = call(&client, "apps.add", name_arg(name)).await?;
            outln!("{}", out.token);
            eprintln!(
                "added app `{}`; the token above will not be shown again (only its hash is stored): keep it now",
                out.name
            );
        }
        AppsCommand::List { json } => {
            let client = cli.connect().await?;
            let raw = client.call("apps.list", vec![Value::Map(Vec::new())]).await?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&super::status::to_json(&raw))?);
            } else {
                let out: ListOut = decode_as(raw)?;
                print_apps(&out.apps)?;
            }
        }
        AppsCommand::Rm { name } => {
            let client = cli.connect().await?;
            let out: RemoveOut = call(&client, "apps.remove", name_arg(name)).await?;
            if !out.removed {
                eprintln!("error: no app named `{name}` (see `llm-sidecar apps list`)");
                return Ok(ExitCode::FAILURE);
            }
            outln!("removed app `{name}`; its token no longer works");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn name_arg(name: &str) -> Vec<(Value, Value)> {
    vec![(Value::from("name"), Value::from(name))]
}

async fn call<T: DeserializeOwned>(client: &Client, method: &str, arg: Vec<(Value, Value)>) -> Result<T> {
    decode_as(client.call(method, vec![Value::Map(arg)]).await?)
}

fn print_apps(apps: &[AppOut]) -> Result<()> {
    if apps.is_empty() {
        outln!("no apps; add one with `llm-sidecar apps add <name>`");
        return Ok(());
    }
    let header = ["NAME", "CREATED (UTC)", "LAST USED (UTC)", "CALLS THIS MONTH"];
    let rows: Vec<[String; 4]> = apps
        .iter()
        .map(|a| [a.name.clone(), when(Some(&a.created)), when(a.last_used.as_deref()), a.calls_this_month.to_string()])
        .collect();
    super::print_table(&header, &rows)?;
    Ok(())
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM` (UTC), like `keys list`.
fn when(t: Option<&str>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    t.and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .and_then(|t| t.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_else(|| "never".to_string())
}
