//! `llm-sidecar vault unlock|lock|status`, and reading secrets from the terminal without echo
//! (or from a pipe).

use super::Cli;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use llm_sidecar::vault::{LockState, VaultMode, VaultStatus, MIN_PASSPHRASE_CHARS};
use rmpv::Value;
use secrecy::{ExposeSecret, SecretString};
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Unlock the vault; prompts for the passphrase without echo (or reads one line from stdin).
    /// The first unlock of a passphrase vault sets its passphrase.
    Unlock,
    /// Lock the vault now: keys leave the daemon's memory until the next unlock
    Lock,
    /// Show whether the vault is locked, its mode, auto-lock and files
    Status {
        /// Print the raw result as JSON
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cli: &Cli, command: &VaultCommand) -> Result<ExitCode> {
    let client = cli.connect().await?;
    match command {
        VaultCommand::Status { json } => {
            let raw = client.call("vault.status", vec![]).await?;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&super::status::to_json(&raw))?);
            } else {
                print_status(&decode(raw)?)?;
            }
        }
        VaultCommand::Lock => {
            let s = decode(client.call("vault.lock", vec![]).await?)?;
            outln!("vault {}", state_word(&s));
        }
        VaultCommand::Unlock => {
            let status = decode(client.call("vault.status", vec![]).await?)?;
            let passphrase = match (status.mode, status.state) {
                (_, LockState::Unlocked) => {
                    outln!("vault already unlocked");
                    return Ok(ExitCode::SUCCESS);
                }
                (VaultMode::Identity, _) => None,
                (VaultMode::Passphrase, LockState::Uninitialized) => Some(new_passphrase()?),
                (VaultMode::Passphrase, LockState::Locked) => Some(read_secret("Vault passphrase: ", false)?),
            };
            let mut arg = Vec::new();
            if let Some(p) = &passphrase {
                arg.push((Value::from("passphrase"), Value::from(p.expose_secret())));
            }
            let s = decode(client.call("vault.unlock", vec![Value::Map(arg)]).await?)?;
            outln!("vault {}", state_word(&s));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decode(v: Value) -> Result<VaultStatus> {
    decode_as(v)
}

/// Decodes a result map with `rmp_serde`, which (unlike `rmpv`'s decoder) reads enums sent as
/// strings (`"locked"`, `"valid"`).
pub(super) fn decode_as<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    let bytes = llm_sidecar::rpc::message::encode_value(&v);
    rmp_serde::from_slice(&bytes).context("unexpected result shape from the daemon")
}

fn state_word(s: &VaultStatus) -> &'static str {
    match s.state {
        LockState::Unlocked => "unlocked",
        LockState::Locked => "locked",
        LockState::Uninitialized => "not set up (run `llm-sidecar vault unlock` to choose a passphrase)",
    }
}

fn print_status(s: &VaultStatus) -> Result<()> {
    let keys = s.keys.map(|n| format!("; {n} key{}", if n == 1 { "" } else { "s" })).unwrap_or_default();
    outln!("vault      {} ({} mode{keys})", state_word(s), s.mode.as_str());
    match (s.auto_lock_secs, s.lock_in_secs) {
        (0, _) => outln!("auto-lock  off"),
        (secs, Some(left)) => outln!("auto-lock  after {secs}s without key use (in {left}s)"),
        (secs, None) => outln!("auto-lock  after {secs}s without key use"),
    }
    outln!("file       {}", s.vault_file);
    outln!("identity   {}", s.identity_file);
    Ok(())
}

/// Asks twice for a new passphrase on a terminal (once from a pipe).
fn new_passphrase() -> Result<SecretString> {
    let first = read_secret(&format!("New vault passphrase (at least {MIN_PASSPHRASE_CHARS} characters): "), false)?;
    if std::io::stdin().is_terminal() {
        let again = read_secret("Repeat the passphrase: ", false)?;
        if again.expose_secret() != first.expose_secret() {
            bail!("the passphrases differ; nothing was changed");
        }
    }
    Ok(first)
}

/// Reads a secret: from the terminal without echo when stdin is one, else one line of stdin.
/// `trim` strips surrounding whitespace (keys); otherwise only the line ending goes.
pub(super) fn read_secret(prompt: &str, trim: bool) -> Result<SecretString> {
    let line = if std::io::stdin().is_terminal() {
        Zeroizing::new(rpassword::prompt_password(prompt).context("cannot read from the terminal")?)
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).context("cannot read stdin")?;
        line
    };
    let text = if trim { line.trim() } else { line.trim_end_matches(['\n', '\r']) };
    if text.is_empty() {
        bail!("nothing was entered");
    }
    Ok(SecretString::from(text))
}
