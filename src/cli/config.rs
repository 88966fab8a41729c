//! `llm-sidecar config check|path|show|reload`.
//!
//! `check` and `show` read the file themselves (no daemon needed); `reload` asks the running
//! daemon to re-read it (`daemon.reload`, as `SIGHUP` does) and prints what changed, or every
//! error of a refused file.

use super::Cli;
use anyhow::Result;
use clap::Subcommand;
use llm_sidecar::config::Config;
use llm_sidecar::rpc::client::field;
use llm_sidecar::rpc::{ClientError, ErrorCode};
use rmpv::Value;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the config file and report every error with its line, column and key
    Check,
    /// Print where the config file is looked for
    Path,
    /// Print the effective configuration (file merged over defaults, built-in provider presets
    /// included) as TOML, with a comment on settings that have no effect
    Show,
    /// Make the running daemon re-read the config file (like `kill -HUP`); an invalid file is
    /// refused and the daemon keeps its current config
    Reload,
}

fn strings(v: &Value, name: &str) -> Vec<String> {
    field(v, name)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

pub async fn run(cli: &Cli, command: &ConfigCommand) -> Result<ExitCode> {
    let (path, explicit) = cli.config_path();
    match command {
        ConfigCommand::Path => {
            outln!("{}", path.display());
        }
        ConfigCommand::Check => match Config::load(&path, explicit) {
            Ok(_) if !path.exists() => {
                outln!("ok: {} does not exist; built-in defaults apply", path.display());
            }
            Ok(_) => {
                outln!("ok: {}", path.display());
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::FAILURE);
            }
        },
        ConfigCommand::Show => {
            let mut config = Config::load(&path, explicit)?;
            // Show where the daemon would listen and keep its data, not just "unset".
            config.daemon.socket = Some(cli.socket_path(Some(&config)));
            if config.daemon.data_dir.is_none() {
                config.daemon.data_dir = Some(llm_sidecar::config::default_data_dir());
            }
            outln!("# effective configuration: {} merged over the built-in defaults", path.display());
            out!("{}", config.render_effective().map_err(anyhow::Error::msg)?);
        }
        ConfigCommand::Reload => {
            let client = cli.connect().await?;
            match client.call("daemon.reload", vec![]).await {
                Ok(r) => {
                    let applied = strings(&r, "applied");
                    let config_file = field(&r, "config_file").and_then(Value::as_str).unwrap_or("?");
                    if applied.is_empty() {
                        outln!("reloaded {config_file}: no change that applies to new calls");
                    } else {
                        outln!("reloaded {config_file}: new calls use the new {}", applied.join(", "));
                    }
                    let restart = strings(&r, "restart_required");
                    if !restart.is_empty() {
                        outln!("changed but only applied after a restart: {}", restart.join(", "));
                    }
                    outln!("never reloaded (restart to change): {}", strings(&r, "not_reloadable").join(", "));
                }
                Err(ClientError::Rpc(e)) if e.code == ErrorCode::ConfigInvalid => {
                    eprintln!("error: {}", e.message);
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
