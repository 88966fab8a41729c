//! `daemon.*`: handshake, status and discovery.

use super::{ok, Call, Method, METHODS};
use crate::rpc::{Encoded, ErrorCode, RpcError, PROTOCOL};
use serde::{Deserialize, Serialize};
use std::time::{Duration, UNIX_EPOCH};

use crate::VERSION;
const MAX_PING_DELAY_MS: u64 = 60_000;

pub(super) fn methods() -> Vec<Method> {
    vec![
        Method {
            name: "daemon.hello",
            params: "{app: str, version?: str, errors?: \"map\" | \"string\"}",
            result: "{server, version, protocol, app, connection_id, errors}",
            summary: "Name the calling app (1-64 printable chars); later calls of this connection are metered under it. errors: \"string\" makes every later error response of this connection the string \"<code>: <message>\" (what Neovim's rpcrequest can show; the full error is then in daemon.last_error)",
            kind: "request",
            handler: Some(|c| Box::pin(hello(c))),
        },
        Method {
            name: "daemon.last_error",
            params: "{}",
            result: "{code, message, data} | nil",
            summary: "The full error of this connection's last failed request (nil if none failed), for connections that get string errors",
            kind: "request",
            handler: Some(|c| Box::pin(last_error(c))),
        },
        Method {
            name: "daemon.info",
            params: "{}",
            result: "{server, version, protocol, pid, started_at, uptime_ms, socket, http: \"127.0.0.1:8931\" | nil, config_file, data_dir, connections, app, vault: {mode, state, locked, keys, ...}, providers: [{target, consecutive_failures, cooldown_remaining_ms}], sync: {enabled, state, pending, ...}, ledger: {commits, writes, busy_us}}",
            summary: "Daemon version, protocol, uptime and state",
            kind: "request",
            handler: Some(|c| Box::pin(info(c))),
        },
        Method {
            name: "daemon.methods",
            params: "{}",
            result: "{version, protocol, methods: [{name, kind, params, result, summary}]}",
            summary: "Every method and notification the daemon understands, with param and result shapes",
            kind: "request",
            handler: Some(|c| Box::pin(list_methods(c))),
        },
        Method {
            name: "daemon.reload",
            params: "{}",
            result: "{applied: [str], restart_required: [str], not_reloadable: [str], config_file}",
            summary: "Re-read config.toml (as SIGHUP does): a valid file replaces providers, routes, router settings, prices, tiers, limits and account settings for new calls (running calls finish on the old ones). Errors: config_invalid (data: {config_file, errors: [{key, line, column, message}]}; the old config stays in force)",
            kind: "request",
            handler: Some(|c| Box::pin(reload(c))),
        },
        Method {
            name: "daemon.ping",
            params: "{delay_ms?: u64 (<= 60000)}",
            result: "{pong: true, delay_ms}",
            summary: "Answer after an optional delay; cancellable with $/cancel (latency and cancel checks)",
            kind: "request",
            handler: Some(|c| Box::pin(ping(c))),
        },
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HelloParams {
    app: String,
    version: Option<String>,
    #[serde(default)]
    errors: ErrorStyle,
}

/// How this connection's error responses are shaped.
#[derive(Deserialize, Serialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ErrorStyle {
    /// `{code, message, data}` (the default).
    #[default]
    Map,
    /// `"<code>: <message>"`.
    String,
}

#[derive(Serialize)]
struct HelloResult<'a> {
    server: &'static str,
    version: &'static str,
    protocol: u32,
    app: &'a str,
    connection_id: u64,
    errors: ErrorStyle,
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.chars().count()) && s.chars().all(|c| !c.is_control())
}

async fn hello(mut c: Call) -> Result<Encoded, RpcError> {
    let p: HelloParams = c.params()?;
    if !valid_name(&p.app) {
        return Err(RpcError::invalid_params("`app` must be 1-64 printable characters"));
    }
    if let Some(v) = &p.version {
        if !valid_name(v) {
            return Err(RpcError::invalid_params("`version` must be 1-64 printable characters"));
        }
    }
    if let Ok(mut app) = c.conn.app.lock() {
        app.clone_from(&p.app);
    }
    if let Ok(mut v) = c.conn.app_version.lock() {
        *v = p.version;
    }
    c.conn.string_errors.store(p.errors == ErrorStyle::String, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(conn = c.conn.id, app = %p.app, "hello");
    ok(&HelloResult {
        server: "llm-sidecar",
        version: VERSION,
        protocol: PROTOCOL,
        app: &p.app,
        connection_id: c.conn.id,
        errors: p.errors,
    })
}

async fn last_error(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    let last = c.conn.last_error.lock().ok().and_then(|e| e.clone());
    Ok(Encoded::value(&last.map_or(rmpv::Value::Nil, |e| e.to_value())))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoParams {}

#[derive(Serialize)]
struct InfoResult<'a> {
    server: &'static str,
    version: &'static str,
    protocol: u32,
    pid: u32,
    started_at: u64,
    uptime_ms: u64,
    socket: &'a str,
    /// Where the HTTP face listens (nil when it is off).
    http: Option<String>,
    config_file: &'a str,
    data_dir: &'a str,
    connections: usize,
    app: String,
    vault: crate::vault::VaultStatus,
    /// Route targets that failed recently (empty when all are healthy).
    providers: Vec<crate::router::TargetHealth>,
    sync: crate::sync::SyncStatus,
    /// The ledger's durable commits, the writes they carried and the time they took, since start.
    ledger: crate::ledger::CommitStats,
}

async fn info(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    let s = &c.state;
    ok(&InfoResult {
        server: "llm-sidecar",
        version: VERSION,
        protocol: PROTOCOL,
        pid: std::process::id(),
        started_at: s.started_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        uptime_ms: crate::clock::millis(s.started.elapsed()),
        socket: &s.paths.socket.to_string_lossy(),
        http: s.http_addr.get().map(ToString::to_string),
        config_file: &s.paths.config_file.to_string_lossy(),
        data_dir: &s.paths.data_dir.to_string_lossy(),
        connections: s.connections(),
        app: c.conn.app(),
        vault: s.vault.status(),
        providers: s.router().health_report(),
        sync: s.sync.status(),
        ledger: s.ledger.commit_stats(),
    })
}

#[derive(Serialize)]
struct MethodInfo {
    name: &'static str,
    kind: &'static str,
    params: &'static str,
    result: &'static str,
    summary: &'static str,
}

#[derive(Serialize)]
struct MethodsResult {
    version: &'static str,
    protocol: u32,
    methods: Vec<MethodInfo>,
}

async fn list_methods(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    let methods = METHODS
        .iter()
        .map(|m| MethodInfo { name: m.name, kind: m.kind, params: m.params, result: m.result, summary: m.summary })
        .collect();
    ok(&MethodsResult { version: VERSION, protocol: PROTOCOL, methods })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PingParams {
    delay_ms: Option<u64>,
}

#[derive(Serialize)]
struct PingResult {
    pong: bool,
    delay_ms: u64,
}

async fn ping(mut c: Call) -> Result<Encoded, RpcError> {
    let p: PingParams = c.params()?;
    let delay_ms = p.delay_ms.unwrap_or(0);
    if delay_ms > MAX_PING_DELAY_MS {
        return Err(RpcError::invalid_params(format!("`delay_ms` must be at most {MAX_PING_DELAY_MS}")));
    }
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    ok(&PingResult { pong: true, delay_ms })
}

async fn reload(mut c: Call) -> Result<Encoded, RpcError> {
    let _: NoParams = c.params()?;
    let state = c.state.clone();
    let result = tokio::task::spawn_blocking(move || state.reload())
        .await
        .map_err(|e| RpcError::internal(format!("reload task failed: {e}")))?;
    let config_file = c.state.paths.config_file.display().to_string();
    match result {
        Ok(r) => {
            #[derive(Serialize)]
            struct R<'a> {
                #[serde(flatten)]
                reloaded: &'a crate::state::Reloaded,
                config_file: &'a str,
            }
            ok(&R { reloaded: &r, config_file: &config_file })
        }
        Err(e) => {
            #[derive(Serialize)]
            struct D<'a> {
                config_file: &'a str,
                errors: Vec<crate::config::Issue>,
            }
            let errors = match &e {
                crate::state::StateError::Config(ce) => ce.issues().to_vec(),
                other => vec![crate::config::Issue { key: None, line: None, column: None, message: other.to_string() }],
            };
            Err(RpcError::new(
                ErrorCode::ConfigInvalid,
                format!("config not reloaded; the previous one stays in force: {e}"),
            )
            .with_data(&D { config_file: &config_file, errors }))
        }
    }
}
