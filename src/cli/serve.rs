//! `llm-sidecar serve`: load config, set up logging, bind the socket, run until a signal.

use super::Cli;
use anyhow::{Context, Result};
use llm_sidecar::config;
use llm_sidecar::daemon::Activation;
use llm_sidecar::state::{Paths, State};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn run(cli: &Cli, data_dir: Option<PathBuf>, activation: Activation) -> Result<ExitCode> {
    let (config, config_file) = cli.load_config()?;
    let format = cli.log_format.or(config.log.format).unwrap_or_default();
    llm_sidecar::logging::init(cli.log_level.as_deref(), config.log.level.as_deref(), format)?;
    let bound = match activation {
        Activation::Socket(listener) => llm_sidecar::daemon::adopt(listener)?,
        other => {
            if matches!(other, Activation::OtherProcess) {
                tracing::info!("ignoring LISTEN_FDS meant for another process");
            }
            llm_sidecar::daemon::bind(&cli.socket_path(Some(&config)))?
        }
    };
    let socket = bound.path.clone();
    let data_dir = data_dir.or_else(|| config.daemon.data_dir.clone()).unwrap_or_else(config::default_data_dir);
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let paths = Paths { config_file, data_dir, socket };
    let state = Arc::new(State::open(config, paths, shutdown)?);
    llm_sidecar::daemon::run(state, bound).await;
    Ok(ExitCode::SUCCESS)
}

fn spawn_signal_handler(token: CancellationToken) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("{name} received; shutting down");
        token.cancel();
        // A second signal means "now".
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting immediately");
        std::process::exit(130);
    });
    Ok(())
}
