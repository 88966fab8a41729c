//! `llm-sidecar service install|uninstall|status`: per-user service-manager integration.
//!
//! Linux: systemd user units in `$XDG_CONFIG_HOME/systemd/user`. macOS: a LaunchAgent in
//! `~/Library/LaunchAgents`. The commands only write or remove files and print the exact
//! `systemctl`/`launchctl` command to run; they never start or stop anything themselves.

use super::Cli;
use anyhow::{Context, Result};
use clap::Subcommand;
use llm_sidecar::service_units::{self as service, ServiceFile};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Write the unit files for this user, pointing at this binary
    Install {
        /// Print the files instead of writing them
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the unit files
    Uninstall,
    /// Show whether the unit files are installed and the daemon answers
    Status,
}

fn files(cli: &Cli) -> Result<Vec<ServiceFile>> {
    let binary = std::env::current_exe().context("cannot find this program's path")?;
    let binary = binary.canonicalize().unwrap_or(binary);
    let (config, _) = cli.load_config()?;
    let data_dir = config.daemon.data_dir.clone().unwrap_or_else(llm_sidecar::config::default_data_dir);
    if cfg!(target_os = "macos") {
        let home = dirs::home_dir().context("cannot find the home directory")?;
        let socket = cli.socket_path(Some(&config));
        Ok(vec![service::launchd_plist(
            &home.join("Library/LaunchAgents"),
            &binary,
            &socket,
            &home.join("Library/Logs/llm-sidecar"),
        )])
    } else {
        let unit_dir = dirs::config_dir().context("cannot find the config directory")?.join("systemd/user");
        Ok(service::systemd_units(&unit_dir, &binary, &data_dir))
    }
}

fn enable_hint(files: &[ServiceFile]) -> String {
    if cfg!(target_os = "macos") {
        let plist = files.first().map(|f| f.path.display().to_string()).unwrap_or_default();
        let uid = rustix::process::getuid().as_raw();
        format!("launchctl bootstrap gui/{uid} {plist}")
    } else {
        format!("systemctl --user daemon-reload && systemctl --user enable --now {}", service::SOCKET_UNIT)
    }
}

fn disable_hint() -> String {
    if cfg!(target_os = "macos") {
        let uid = rustix::process::getuid().as_raw();
        format!("launchctl bootout gui/{uid}/{}", service::LAUNCHD_LABEL)
    } else {
        format!(
            "systemctl --user disable --now {} {} && systemctl --user daemon-reload",
            service::SOCKET_UNIT,
            service::SERVICE_UNIT
        )
    }
}

fn write_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

pub async fn run(cli: &Cli, command: &ServiceCommand) -> Result<ExitCode> {
    let files = files(cli)?;
    match command {
        ServiceCommand::Install { dry_run: true } => {
            for f in &files {
                outln!("# {}\n{}", f.path.display(), f.contents);
            }
        }
        ServiceCommand::Install { dry_run: false } => {
            for f in &files {
                let dir = f.path.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                std::fs::write(&f.path, &f.contents).with_context(|| format!("cannot write {}", f.path.display()))?;
                outln!("wrote {}", f.path.display());
            }
            // The service may only write its data dir; it must exist before systemd mounts it.
            let (config, _) = cli.load_config()?;
            let data_dir: PathBuf = config.daemon.data_dir.unwrap_or_else(llm_sidecar::config::default_data_dir);
            write_private_dir(&data_dir)?;
            if cfg!(target_os = "macos") {
                if let Some(dir) = cli.socket_path(None).parent() {
                    write_private_dir(dir)?;
                }
            }
            outln!("\nEnable and start it with:\n  {}", enable_hint(&files));
        }
        ServiceCommand::Uninstall => {
            outln!("Stop it first (if enabled):\n  {}\n", disable_hint());
            for f in &files {
                match std::fs::remove_file(&f.path) {
                    Ok(()) => outln!("removed {}", f.path.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        outln!("not installed: {}", f.path.display())
                    }
                    Err(e) => return Err(e).with_context(|| format!("cannot remove {}", f.path.display())),
                }
            }
        }
        ServiceCommand::Status => {
            let mut installed = true;
            for f in &files {
                let state = match std::fs::read_to_string(&f.path) {
                    Ok(text) if text == f.contents => "installed",
                    Ok(_) => "installed (differs from this binary's version: run `service install` to update)",
                    Err(_) => {
                        installed = false;
                        "not installed"
                    }
                };
                outln!("{:<60} {state}", f.path.display());
            }
            let running = cli.connect().await.is_ok();
            outln!("daemon {}", if running { "answers on its socket" } else { "is not running" });
            if !installed {
                outln!("\nInstall with: llm-sidecar service install");
            } else if !running {
                outln!("\nStart with: {}", enable_hint(&files));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
