//! Command line: `serve` runs the daemon; every other subcommand is an RPC client of it.
//!
//! Exit codes: 0 success, 1 error, 2 usage error (clap), 3 no daemon running.
//!
//! Standard output is written with [`outln!`]/[`out!`], which return the write error instead of
//! panicking: a reader that went away (`llm-sidecar usage | head -1`) ends the command quietly
//! with status 0, like any Unix tool.

/// `println!` that returns an I/O error from the enclosing function instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?;
    }};
}

/// `print!` that returns an I/O error from the enclosing function instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout(), $($arg)*)?;
    }};
}

mod account;
mod apps;
mod chat;
mod config;
mod credits;
mod keys;
mod models;
mod quota;
mod serve;
mod service;
mod status;
mod sync;
mod usage;
mod vault;

use anyhow::Result;
use clap::{Parser, Subcommand};
use llm_sidecar::config::{Config, LogFormat};
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
        /// Also serve the OpenAI-/Anthropic-compatible HTTP face on this loopback address
        /// (default 127.0.0.1:8931; overrides `[http] listen`)
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = llm_sidecar::http::DEFAULT_LISTEN)]
        http: Option<String>,
        /// Threads that run the daemon's async work: 1 (the default) runs it all on one thread,
        /// with no wake-ups between threads; the ledger's commits, vault unlocks and large
        /// decodes have threads of their own either way
        #[arg(long, value_name = "N", env = "LLM_SIDECAR_WORKER_THREADS", default_value_t = 1,
              value_parser = clap::value_parser!(u16).range(1..=256))]
        worker_threads: u16,
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
    /// Apps that call over HTTP with an app token: add (prints the token once), list, rm
    Apps {
        #[command(subcommand)]
        command: apps::AppsCommand,
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
    /// Show the active tier, each limit with a usage bar, and when the period ends
    Quota(quota::QuotaArgs),
    /// Show the prepaid credit balance, the last transactions and the days left at this rate
    Credits(credits::CreditsArgs),
    /// Log in with an entitlement token, log out, or show the account
    Account {
        #[command(subcommand)]
        command: account::AccountCommand,
    },
    /// Configuration file tools: check, show, path, reload
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// Providers and their models, with prices per million tokens and whether a key is present
    Models(models::ModelsArgs),
}

/// An error that maps to a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NoDaemon(String);

impl Cli {
    pub(crate) fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => (llm_sidecar::config::default_config_file(), false),
        }
    }

    fn load_config(&self) -> Result<(Config, PathBuf)> {
        let (path, explicit) = self.config_path();
        Ok((Config::load(&path, explicit)?, path))
    }

    /// Socket path for clients: `--socket`, env, then the config's `daemon.socket`, then defaults.
    pub(crate) fn socket_path(&self, config: Option<&Config>) -> PathBuf {
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
    // The daemon's async work runs on `serve --worker-threads` threads: on one (the default) no
    // task ever wakes another thread's. Client commands keep tokio's default pool.
    let mut builder = match cli.command {
        Command::Serve { worker_threads: 1, .. } => tokio::runtime::Builder::new_current_thread(),
        Command::Serve { worker_threads, .. } => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(worker_threads));
            b
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, activation));
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
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

/// Prints `rows` under `header` as left-aligned columns two spaces apart (trailing spaces cut).
fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> Result<()> {
        let parts: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", parts.join("  ").trim_end());
        Ok(())
    };
    line(&header.map(String::from))?;
    for row in rows {
        line(row)?;
    }
    Ok(())
}

/// Whether `e` comes from writing to a standard output whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

async fn run(cli: Cli, activation: llm_sidecar::daemon::Activation) -> Result<ExitCode> {
    match &cli.command {
        Command::Serve { data_dir, http, .. } => serve::run(&cli, data_dir.clone(), http.clone(), activation).await,
        Command::Status { json } => status::run(&cli, *json).await,
        Command::Keys { command } => keys::run(&cli, command).await,
        Command::Vault { command } => vault::run(&cli, command).await,
        Command::Apps { command } => apps::run(&cli, command).await,
        Command::Chat(args) => chat::run(&cli, args).await,
        Command::Config { command } => config::run(&cli, command).await,
        Command::Models(args) => models::run(&cli, args).await,
        Command::Service { command } => service::run(&cli, command).await,
        Command::Usage(args) => usage::run(&cli, args).await,
        Command::Sync { command } => sync::run(&cli, command).await,
        Command::Quota(args) => quota::run(&cli, args).await,
        Command::Credits(args) => credits::run(&cli, args).await,
        Command::Account { command } => account::run(&cli, command).await,
    }
}
