//! `llm-sidecar account login --token-file F | logout | status`: the entitlement token.

use super::status::to_json;
use super::Cli;
use anyhow::{Context, Result};
use clap::Subcommand;
use llm_sidecar::rpc::client::field;
use rmpv::Value;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Verify and store an entitlement token (a signed JWT) read from a file (`-` for stdin)
    Login {
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
    },
    /// Forget the entitlement token; the default tier applies again
    Logout,
    /// Show the entitlement in force
    Status {
        /// Print the raw result as JSON
        #[arg(long)]
        json: bool,
    },
}

fn text<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).and_then(Value::as_str).unwrap_or("-")
}

fn print_status(s: &Value) -> Result<()> {
    let logged_in = field(s, "logged_in").and_then(Value::as_bool).unwrap_or(false);
    outln!("tier        {} (from {})", text(s, "tier"), text(s, "tier_source"));
    if logged_in {
        outln!("account     {}", text(s, "sub"));
        outln!("period      {} → {}", text(s, "period_start"), text(s, "period_end"));
        outln!("expires     {}", text(s, "expires_at"));
    } else {
        outln!("account     not logged in");
    }
    if let Some(url) = field(s, "backend_url").and_then(Value::as_str) {
        outln!("backend     {url}");
    }
    Ok(())
}

pub async fn run(cli: &Cli, command: &AccountCommand) -> Result<ExitCode> {
    let client = cli.connect().await?;
    match command {
        AccountCommand::Login { token_file } => {
            let token = if token_file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read the token from stdin")?
            } else {
                std::fs::read_to_string(token_file)
                    .with_context(|| format!("cannot read the token file {}", token_file.display()))?
            };
            let arg = Value::Map(vec![(Value::from("token"), Value::from(token.trim()))]);
            let s = client.call("account.login", vec![arg]).await?;
            print_status(&s)?;
        }
        AccountCommand::Logout => {
            let r = client.call("account.logout", vec![]).await?;
            let was = field(&r, "logged_out").and_then(Value::as_bool).unwrap_or(false);
            outln!("{}; tier is now {}", if was { "logged out" } else { "was not logged in" }, text(&r, "tier"));
        }
        AccountCommand::Status { json } => {
            let s = client.call("account.status", vec![]).await?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&to_json(&s))?);
            } else {
                print_status(&s)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
