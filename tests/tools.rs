//! Tools, images, structured output and reasoning through the real daemon, per adapter: a
//! multi-turn tool loop (call → tool_calls → tool_result → answer) against the mock provider,
//! checking both what the app gets and what the provider was sent on each turn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mock_provider;

#[path = "tools/anthropic.rs"]
mod anthropic;
#[path = "tools/gemini.rs"]
mod gemini;
#[path = "tools/ollama.rs"]
mod ollama;
#[path = "tools/openai.rs"]
mod openai;
#[path = "tools/responses.rs"]
mod responses;

use common::Daemon;
use llm_sidecar::rpc::{Client, RpcError};
use mock_provider::Mock;

pub const KEY: &str = "sk-test-Zq8vX1y2SECRETkey0042";

/// The openai/anthropic/gemini presets at `mock`, an ollama-native `local` provider, and `extra`.
pub fn config(mock: &Mock, extra: &str) -> String {
    let u = mock.url();
    format!(
        r#"
[providers.openai]
base_url = "{u}/v1"
key_env = "MOCK_KEY"
[providers.anthropic]
base_url = "{u}/v1"
key_env = "MOCK_KEY"
[providers.gemini]
base_url = "{u}/v1beta"
key_env = "MOCK_KEY"
[providers.local]
adapter = "ollama"
base_url = "{u}"
[router]
backoff_base_ms = 20
backoff_max_ms = 100
max_retries = 0
{extra}
"#
    )
}

pub fn start(config: &str) -> Daemon {
    Daemon::start_with(config, &[("MOCK_KEY", KEY)])
}

/// `chat` with JSON params; the result (or the error) as JSON.
pub async fn chat(client: &Client, params: serde_json::Value) -> Result<serde_json::Value, RpcError> {
    let p = rmpv::ext::to_value(&params).unwrap();
    match client.call("chat", vec![p]).await {
        Ok(v) => Ok(serde_json::to_value(&v).unwrap()),
        Err(e) => Err(common::rpc_err(Err(e))),
    }
}

/// `chat` with `stream: true` on a fresh connection: the result and every `chat.chunk` body (as
/// JSON), in order (all chunks arrive before the response).
pub async fn chat_stream(
    daemon: &Daemon,
    mut params: serde_json::Value,
) -> (Result<serde_json::Value, RpcError>, Vec<serde_json::Value>) {
    params["stream"] = serde_json::Value::Bool(true);
    let client = daemon.client().await;
    let mut notes = client.take_notifications().unwrap();
    let result = chat(&client, params).await;
    let mut chunks = Vec::new();
    while let Ok((method, p)) = notes.try_recv() {
        if method == "chat.chunk" {
            if let Some(body) = p.get(1) {
                chunks.push(serde_json::to_value(body).unwrap());
            }
        }
    }
    (result, chunks)
}
