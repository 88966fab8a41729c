//! Command line: `serve` runs the daemon; every other subcommand is an RPC client of it.
//!
//! Exit codes: 0 success, 1 error, 2 usage error (clap), 3 no daemon running.

mod chat;
mod keys;
mod serve;
mod service;
mod status;
mod sync;
mod usage;
mod vault;

use anyhow::Result;
use clap::{Parser, Subcommand};
use llm_sidecar::config::{self, Config, LogFormat};
use llm_sidecar::rpc::{Client, ClientError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "llm-sidecar", version, about = "Local daemon that holds LLM keys, routes and meters chat calls")]
pub struct Cli {
    /// Socket path (default: $LLM_SIDECAR_SOCK, else $XDG_RUNTIME_DIR/llm-sidecar/sock, else a per-user temp dir)
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Config file (default: $XDG_CONFIG_HOME/llm-sidecar/config.toml; missing means defaults)
    #[arg(long, global = true, value_name = "FILE", env = "LLM_SIDECAR_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info`, `debug`, `llm_sidecar=trace` (default: $RUST_LOG, else config, else info)
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon in the foreground
    Serve {
        /// Data directory (vault, ledger); default $XDG_DATA_HOME/llm-sidecar
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Show whether the daemon runs, its version and state
    Status {
        /// Print the raw result as JSON
        #[arg(long)]
        json: bool,
    },
    /// Manage provider API keys in the vault
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Unlock, lock and inspect the key vault
    Vault {
        #[command(subcommand)]
        command: vault::VaultCommand,
    },
    /// Install or remove the per-user service (systemd user units / launchd agent)
    Service {
        #[command(subcommand)]
        command: service::ServiceCommand,
    },
    /// Send one prompt and stream the answer; prints usage and cost at the end
    Chat(chat::ChatArgs),
    /// Usage per provider, model, app or key source, with the projected month-end
    Usage(usage::UsageArgs),
    /// Usage sync to the backend
    Sync {
        #[command(subcommand)]
        command: sync::SyncCommand,
    },
    /// Configuration file tools
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate the config file and report errors with their line and key
    Check,
    /// Print where the config file is looked for
    Path,
    /// Print the effective configuration (file merged over defaults) as TOML
    Show,
}

/// An error that maps to a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NoDaemon(String);

impl Cli {
    fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => (config::default_config_file(), false),
        }
    }

    fn load_config(&self) -> Result<(Config, PathBuf)> {
        let (path, explicit) = self.config_path();
        Ok((Config::load(&path, explicit)?, path))
    }

    /// Socket path for clients: `--socket`, env, then the config's `daemon.socket`, then defaults.
    fn socket_path(&self, config: Option<&Config>) -> PathBuf {
        let explicit = self.socket.clone().or_else(|| {
            if std::env::var_os("LLM_SIDECAR_SOCK").is_some_and(|v| !v.is_empty()) {
                None
            } else {
                config.and_then(|c| c.daemon.socket.clone())
            }
        });
        llm_sidecar::rpc::socket_path(explicit)
    }

    /// Connects to the running daemon, with a clear message when there is none.
    async fn connect(&self) -> Result<Client> {
        let config = self.load_config().ok().map(|(c, _)| c);
        let path = self.socket_path(config.as_ref());
        match Client::connect(&path).await {
            Ok(c) => Ok(c),
            Err(ClientError::Connect { source, .. }) => Err(NoDaemon(format!(
                "no llm-sidecar daemon is running at {} ({source}); start one with `llm-sidecar serve`",
                path.display()
            ))
            .into()),
            Err(e) => Err(e.into()),
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service manager's socket hand-over edits the environment: do it before threads exist.
    let activation = match cli.command {
        Command::Serve { .. } => match llm_sidecar::daemon::Activation::take() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => llm_sidecar::daemon::Activation::None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, activation));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<NoDaemon>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli, activation: llm_sidecar::daemon::Activation) -> Result<ExitCode> {
    match &cli.command {
        Command::Serve { data_dir } => serve::run(&cli, data_dir.clone(), activation).await,
        Command::Status { json } => status::run(&cli, *json).await,
        Command::Keys { command } => keys::run(&cli, command).await,
        Command::Vault { command } => vault::run(&cli, command).await,
        Command::Chat(args) => chat::run(&cli, args).await,
        Command::Config { command } => config_cmd(&cli, command),
        Command::Service { command } => service::run(&cli, command).await,
        Command::Usage(args) => usage::run(&cli, args).await,
        Command::Sync { command } => sync::run(&cli, command).await,
    }
}

fn config_cmd(cli: &Cli, command: &ConfigCommand) -> Result<ExitCode> {
    let (path, explicit) = cli.config_path();
    match command {
        ConfigCommand::Path => {
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Check => match Config::load(&path, explicit) {
            Ok(_) if !path.exists() => {
                println!("ok: {} does not exist; built-in defaults apply", path.display());
                Ok(ExitCode::SUCCESS)
            }
            Ok(_) => {
                println!("ok: {}", path.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
        ConfigCommand::Show => {
            let config = Config::load(&path, explicit)?;
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
