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

pub async fn run(
    cli: &Cli,
    data_dir: Option<PathBuf>,
    http: Option<String>,
    activation: Activation,
) -> Result<ExitCode> {
    let (mut config, config_file) = cli.load_config()?;
    if http.is_some() {
        config.http.listen = http;
    }
    let config_explicit = cli.config_path().1;
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
    let http = match &config.http.listen {
        Some(listen) => Some(llm_sidecar::http::bind(listen).await?),
        None => None,
    };
    let socket = bound.path.clone();
    let data_dir = data_dir.or_else(|| config.daemon.data_dir.clone()).unwrap_or_else(config::default_data_dir);
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;
    let paths = Paths { config_file, config_explicit, data_dir, socket };
    let state = Arc::new(State::open(config, paths, shutdown)?);
    spawn_reload_on_hangup(state.clone())?;
    if let Some(listener) = http {
        if let Ok(addr) = listener.local_addr() {
            let _ = state.http_addr.set(addr);
        }
        tokio::spawn(llm_sidecar::http::serve(state.clone(), listener));
    }
    llm_sidecar::daemon::run(state, bound).await;
    Ok(ExitCode::SUCCESS)
}

/// `SIGHUP` re-reads the config file (like `daemon.reload`); a bad file is logged and changes
/// nothing.
fn spawn_reload_on_hangup(state: Arc<State>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received; reloading {}", state.paths.config_file.display());
            let s = state.clone();
            match tokio::task::spawn_blocking(move || s.reload()).await {
                Ok(Ok(r)) if !r.restart_required.is_empty() => tracing::warn!(
                    "changed settings that need a restart to take effect: {}",
                    r.restart_required.join(", ")
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("config reload refused; the previous config stays in force: {e}"),
                Err(e) => tracing::error!("config reload task failed: {e}"),
            }
        }
    });
    Ok(())
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
