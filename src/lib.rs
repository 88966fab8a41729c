//! llm-sidecar: a local daemon that keeps LLM provider keys, routes and meters chat calls, and
//! answers apps over MessagePack-RPC on a Unix socket. See `docs/ARCHITECTURE.md`.

pub mod api;
pub mod chat;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod events;
pub mod http;
pub mod keystore;
pub mod ledger;
pub mod logging;
pub mod memory;
pub mod policy;
pub mod pricing;
pub mod providers;
pub mod retry;
pub mod router;
pub mod rpc;
pub mod service_units;
pub mod state;
pub mod sync;
pub mod usage_record;
pub mod vault;

/// The daemon's version, as reported by `daemon.hello`/`daemon.info` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
