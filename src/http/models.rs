//! `GET /v1/models`: the names an app may put in `model`, in the caller's dialect.
//!
//! The names are the configured routes and aliases, then `provider/model` for every listed
//! model of a provider that has a key (or needs none), all filtered by what the active tier
//! allows, and the app's own `[apps.NAME] tier`. A request with an `anthropic-version` header gets Anthropic's list shape
//! (`{data: [{type: "model", id, display_name, created_at}], has_more, first_id, last_id}`),
//! any other OpenAI's (`{object: "list", data: [{id, object: "model", created, owned_by}]}`).

use super::error::Dialect;
use super::Face;
use axum::extract::State as AxState;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;

/// `(id, owner)` of every model name the app may use.
fn names(face: &Face, app: &str) -> Vec<(String, String)> {
    let state = &face.state;
    let router = state.router();
    let mut out = Vec::new();
    for (name, targets) in router.routes() {
        if targets.iter().any(|t| state.policy.model_allowed_for(app, &t.provider, &t.model)) {
            out.push((name.clone(), "llm-sidecar".to_string()));
        }
    }
    for spec in router.providers().values() {
        if !router.key_present(&spec.name, state.keys.as_ref()) {
            continue;
        }
        for m in &spec.models {
            if state.policy.model_allowed_for(app, &spec.name, m) {
                out.push((format!("{}/{m}", spec.name), spec.name.clone()));
            }
        }
    }
    out
}

pub async fn list(AxState(face): AxState<Arc<Face>>, headers: HeaderMap) -> Response {
    let dialect = if headers.contains_key("anthropic-version") { Dialect::Anthropic } else { Dialect::OpenAi };
    let app = match face.authenticate(&headers) {
        Ok(app) => app,
        Err(e) => return e.response(dialect),
    };
    let created = face.state.started_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let names = names(&face, &app);
    let body = match dialect {
        Dialect::OpenAi => json!({
            "object": "list",
            "data": names.iter().map(|(id, owner)| json!({"id": id, "object": "model", "created": created, "owned_by": owner}))
                .collect::<Vec<_>>(),
        }),
        Dialect::Anthropic => {
            let at = time::OffsetDateTime::from_unix_timestamp(created as i64)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                .unwrap_or_default();
            let data: Vec<Value> = names
                .iter()
                .map(|(id, _)| json!({"type": "model", "id": id, "display_name": id, "created_at": at}))
                .collect();
            json!({
                "data": data, "has_more": false,
                "first_id": names.first().map(|n| &n.0), "last_id": names.last().map(|n| &n.0),
            })
        }
    };
    axum::Json(body).into_response()
}
