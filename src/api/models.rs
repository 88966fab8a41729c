//! `models.list`: the providers the daemon knows, their models with prices, whether a key is
//! present (never the key), and the configured routes.

use super::{ok, Call, Method};
use crate::pricing::Price;
use crate::rpc::{Encoded, RpcError};
use serde::{Deserialize, Serialize};

pub(super) fn methods() -> Vec<Method> {
    vec![Method {
        name: "models.list",
        params: "{provider?: str}",
        result: "{providers: [{name, adapter, base_url, keyless, key_present, models: [{id, price: {input, output, cached, cache_write} | nil, allowed}]}], routes: [{name, targets: [str]}]}",
        summary: "Providers with their models, prices (micro-dollars per million tokens) and whether a key is available; configured routes",
        kind: "request",
        handler: Some(|c| Box::pin(list(c))),
    }]
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListParams {
    provider: Option<String>,
}

#[derive(Serialize)]
struct ModelInfo<'a> {
    id: &'a str,
    /// Micro-dollars per million tokens; nil when unknown (cost is then 0).
    price: Option<Price>,
    /// Whether the active tier may use it.
    allowed: bool,
}

#[derive(Serialize)]
struct ProviderInfo<'a> {
    name: &'a str,
    adapter: &'static str,
    base_url: &'a str,
    keyless: bool,
    key_present: bool,
    models: Vec<ModelInfo<'a>>,
}

#[derive(Serialize)]
struct RouteInfo<'a> {
    name: &'a str,
    targets: Vec<String>,
}

#[derive(Serialize)]
struct ListResult<'a> {
    providers: Vec<ProviderInfo<'a>>,
    routes: Vec<RouteInfo<'a>>,
}

async fn list(mut c: Call) -> Result<Encoded, RpcError> {
    let p: ListParams = c.params()?;
    let state = &c.state;
    let router = state.router();
    let prices = state.prices();
    if let Some(name) = &p.provider {
        if !router.providers().contains_key(name) {
            return Err(RpcError::invalid_params(format!(
                "unknown provider `{}`",
                name.chars().take(64).collect::<String>()
            )));
        }
    }
    let providers = router
        .providers()
        .values()
        .filter(|spec| p.provider.as_ref().is_none_or(|n| *n == spec.name))
        .map(|spec| ProviderInfo {
            name: &spec.name,
            adapter: spec.adapter.as_str(),
            base_url: &spec.base_url,
            keyless: spec.keyless,
            key_present: router.key_present(&spec.name, state.keys.as_ref()),
            models: spec
                .models
                .iter()
                .map(|m| ModelInfo {
                    id: m,
                    price: prices.lookup(&spec.name, m),
                    allowed: state.policy.model_allowed(&spec.name, m),
                })
                .collect(),
        })
        .collect();
    let routes = router
        .routes()
        .iter()
        .map(|(name, targets)| RouteInfo { name, targets: targets.iter().map(ToString::to_string).collect() })
        .collect();
    ok(&ListResult { providers, routes })
}
