//! Routing of chat calls: which provider and model, with which key, and what to do when it fails.
//!
//! A route (`[routes.<name>] targets = ["provider/model", ...]`) is an ordered list of targets;
//! a request may also name `provider/model` directly. For each target the router tries the
//! provider's keys in order (vault keys, then the platform key from `key_env`; keyless providers
//! need none), retrying retryable failures with full-jitter exponential backoff, honouring the
//! provider's `Retry-After`, within the call's deadline; then it falls back to the next target.
//!
//! Invariants:
//! - a request error (400-class other than 401/403/408/429) never falls back: it would fail
//!   everywhere;
//! - 401/403 reports the key as invalid to the key store and moves on to the next key/target;
//! - once a chunk of a stream reached the app, nothing is retried or replaced: the call ends with
//!   the usage so far;
//! - a failed attempt is billed only when its provider reported usage for it (never estimated);
//!   the attempt that ends the call is billed once, in the outcome's `usage`;
//! - a target with `cooldown_failures` consecutive failed attempts is skipped for
//!   `cooldown_secs` (unless every target of the call is cooling down, then all are tried);
//! - cancellation drops the in-flight HTTP request at once (closing its connection);
//! - key material never appears in an outcome: provider messages are redacted.

pub mod call;
#[cfg(test)]
mod call_tests;
pub mod config;

pub use call::{Attempt, AttemptOutcome, BilledAttempt, ChatCall, ChatFailure, ChatOutcome};
pub use config::{RouteConfig, RouterConfig, RoutesConfig};

use crate::keystore::{KeyError, KeyStore};
use crate::providers::transport::{self, Transport};
use crate::providers::{presets, ProviderError, ProviderSpec, ProvidersConfig};
use crate::usage_record::KeySource;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
// The tokio clock (the std clock in production; virtual when a test pauses it).
use tokio::time::Instant;

pub use crate::chat::Target;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("`{key}`: {message}")]
    Config { key: String, message: String },
    #[error(transparent)]
    Http(#[from] ProviderError),
}

/// A key chosen for one attempt.
pub(crate) struct KeyChoice {
    pub id: String,
    pub source: KeySource,
    pub secret: Option<SecretString>,
}

/// A target that failed recently, as `daemon.info` reports it (healthy targets are omitted).
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TargetHealth {
    pub target: String,
    pub consecutive_failures: u32,
    /// Set while the target is skipped.
    pub cooldown_remaining_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Health {
    failures: u32,
    cooled_until: Option<Instant>,
}

#[derive(Debug)]
pub struct Router {
    settings: RouterConfig,
    providers: BTreeMap<String, ProviderSpec>,
    routes: BTreeMap<String, Vec<Target>>,
    transport: Arc<dyn Transport>,
    health: Mutex<HashMap<Target, Health>>,
}

impl Router {
    /// Resolves providers (presets + config) and routes, and builds the pooled HTTP client.
    pub fn new(
        providers: &ProvidersConfig,
        routes: &RoutesConfig,
        settings: &RouterConfig,
    ) -> Result<Router, RouterError> {
        let client = transport::client(
            RouterConfig::ms(settings.connect_timeout_ms),
            Duration::from_secs(settings.pool_idle_secs),
        )?;
        Router::with_transport(providers, routes, settings, Arc::new(transport::Http(client)))
    }

    /// Like [`Router::new`], sending every request through `transport` (tests script it).
    pub fn with_transport(
        providers: &ProvidersConfig,
        routes: &RoutesConfig,
        settings: &RouterConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<Router, RouterError> {
        let (providers, routes) =
            plan(providers, routes, settings).map_err(|(key, message)| RouterError::Config { key, message })?;
        Ok(Router { settings: settings.clone(), providers, routes, transport, health: Mutex::default() })
    }

    /// Checks providers, routes and settings (config validation); errors carry the dotted key.
    pub fn check(
        providers: &ProvidersConfig,
        routes: &RoutesConfig,
        settings: &RouterConfig,
    ) -> Result<(), (String, String)> {
        plan(providers, routes, settings).map(|_| ())
    }

    pub fn providers(&self) -> &BTreeMap<String, ProviderSpec> {
        &self.providers
    }

    pub fn routes(&self) -> &BTreeMap<String, Vec<Target>> {
        &self.routes
    }

    /// The targets for `name`: a route, else `provider/model` with a known provider, else a bare
    /// model listed by exactly one provider.
    pub fn resolve(&self, name: &str) -> Option<Vec<Target>> {
        if let Some(t) = self.routes.get(name) {
            return Some(t.clone());
        }
        if let Some(t) = Target::parse(name).filter(|t| self.providers.contains_key(&t.provider)) {
            return Some(vec![t]);
        }
        let mut owners = self.providers.values().filter(|p| p.models.iter().any(|m| m == name));
        match (owners.next(), owners.next()) {
            (Some(p), None) => Some(vec![Target { provider: p.name.clone(), model: name.to_string() }]),
            _ => None,
        }
    }

    /// Whether any key is available for `provider` (for `models.list`; no secret leaves here).
    pub fn key_present(&self, provider: &str, store: &dyn KeyStore) -> bool {
        self.providers.get(provider).is_some_and(|spec| !self.keys_for(spec, store).0.is_empty())
    }

    /// The input tokens of `req` as the first of `targets` whose wire format can count them
    /// says (with the first key available for it), and that target; `None` when none can, or
    /// every count failed (logged). Nothing is generated or billed.
    pub async fn count_tokens(
        &self,
        targets: &[Target],
        req: &crate::chat::ChatRequest,
        store: &dyn KeyStore,
    ) -> Option<(Target, u64)> {
        let first_byte = RouterConfig::ms(self.settings.first_byte_timeout_ms).min(Duration::from_secs(30));
        let idle = RouterConfig::ms(self.settings.idle_timeout_ms);
        for t in targets {
            let Some(spec) = self.providers.get(&t.provider) else { continue };
            let adapter = crate::providers::for_spec(spec);
            let Some(key) = self.keys_for(spec, store).0.into_iter().next() else { continue };
            let Some(request) = adapter.count_request(spec, &t.model, req, key.secret.as_ref()) else { continue };
            let counted = async {
                let mut body = self.transport.send(adapter, request?, first_byte, idle).await?;
                let bytes = body.read_all(transport::MAX_BODY).await?;
                adapter
                    .parse_count(&bytes)
                    .ok_or_else(|| ProviderError::Malformed("no `input_tokens` in the count".into()))
            };
            match counted.await {
                Ok(n) => return Some((t.clone(), n)),
                Err(e) => tracing::info!(target = %t, "token count failed, trying the next target: {e}"),
            }
        }
        None
    }

    /// Keys to try for `spec`, in order, and whether the vault was locked.
    pub(crate) fn keys_for(&self, spec: &ProviderSpec, store: &dyn KeyStore) -> (Vec<KeyChoice>, bool) {
        let mut out = Vec::new();
        let mut locked = false;
        match store.keys_for(&spec.name) {
            Ok(keys) => {
                out.extend(keys.into_iter().map(|k| KeyChoice { id: k.id, source: k.source, secret: Some(k.secret) }))
            }
            Err(KeyError::Locked) => locked = true,
            Err(KeyError::Store(e)) => tracing::warn!(provider = %spec.name, "key store failure: {e}"),
        }
        if let Some(var) = &spec.key_env {
            if let Some(value) = std::env::var_os(var).and_then(|v| v.into_string().ok()).filter(|v| !v.is_empty()) {
                out.push(KeyChoice {
                    id: format!("env:{var}"),
                    source: KeySource::Platform,
                    secret: Some(SecretString::from(value)),
                });
            }
        }
        if spec.keyless && out.is_empty() {
            out.push(KeyChoice { id: "local".into(), source: KeySource::Local, secret: None });
        }
        (out, locked)
    }

    fn cooling(&self, target: &Target, now: Instant) -> bool {
        self.health
            .lock()
            .ok()
            .and_then(|h| h.get(target).and_then(|h| h.cooled_until))
            .is_some_and(|until| until > now)
    }

    fn note_success(&self, target: &Target) {
        if let Ok(mut h) = self.health.lock() {
            h.remove(target);
        }
    }

    fn note_failure(&self, target: &Target) {
        if let Ok(mut h) = self.health.lock() {
            let entry = h.entry(target.clone()).or_default();
            entry.failures += 1;
            if entry.failures >= self.settings.cooldown_failures {
                entry.cooled_until = Some(Instant::now() + Duration::from_secs(self.settings.cooldown_secs));
                entry.failures = 0;
                tracing::info!(target = %target, secs = self.settings.cooldown_secs, "cooling down a failing target");
            }
        }
    }

    /// Targets that failed recently: consecutive failures and remaining cooldown (for `daemon.info`).
    pub fn health_report(&self) -> Vec<TargetHealth> {
        let now = Instant::now();
        let mut out: Vec<TargetHealth> = self
            .health
            .lock()
            .map(|h| {
                h.iter()
                    .map(|(t, h)| TargetHealth {
                        target: t.to_string(),
                        consecutive_failures: h.failures,
                        // As `cooling`: a cooldown ending now is over.
                        cooldown_remaining_ms: h
                            .cooled_until
                            .filter(|u| *u > now)
                            .map(|u| crate::clock::millis(u - now)),
                    })
                    .filter(|t| t.consecutive_failures > 0 || t.cooldown_remaining_ms.is_some())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    /// Full-jitter backoff before retry number `n` (0-based): [`crate::retry::full_jitter`] with
    /// this router's base and cap.
    fn backoff(&self, n: u32) -> Duration {
        let ms = Duration::from_millis;
        crate::retry::full_jitter(
            ms(self.settings.backoff_base_ms),
            ms(self.settings.backoff_max_ms),
            n.saturating_add(1),
        )
    }
}

type Plan = (BTreeMap<String, ProviderSpec>, BTreeMap<String, Vec<Target>>);

fn plan(providers: &ProvidersConfig, routes: &RoutesConfig, settings: &RouterConfig) -> Result<Plan, (String, String)> {
    let providers = presets::resolve(providers).map_err(|e| (e.key, e.message))?;
    settings.validate()?;
    let mut resolved = BTreeMap::new();
    for (name, route) in routes {
        let key = format!("routes.{name}.targets");
        if route.targets.is_empty() {
            return Err((key, "a route needs at least one target".into()));
        }
        let mut targets = Vec::new();
        for t in &route.targets {
            let target = Target::parse(t).ok_or_else(|| (key.clone(), format!("`{t}` is not `provider/model`")))?;
            if !providers.contains_key(&target.provider) {
                return Err((key.clone(), format!("unknown provider `{}` in `{t}`", target.provider)));
            }
            targets.push(target);
        }
        resolved.insert(name.clone(), targets);
    }
    Ok((providers, resolved))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::keystore::{KeyOutcome, ResolvedKey};

    #[derive(Debug)]
    struct TwoKeys;
    impl KeyStore for TwoKeys {
        fn keys_for(&self, provider: &str) -> Result<Vec<ResolvedKey>, KeyError> {
            if provider == "locked" {
                return Err(KeyError::Locked);
            }
            Ok(["k1", "k2"]
                .iter()
                .map(|id| ResolvedKey {
                    id: id.to_string(),
                    source: KeySource::Byok,
                    secret: SecretString::from(format!("s-{id}")),
                })
                .collect())
        }
        fn report(&self, _id: &str, _outcome: KeyOutcome) {}
    }

    fn router(routes: &str, providers: &str) -> Router {
        Router::new(&toml::from_str(providers).unwrap(), &toml::from_str(routes).unwrap(), &RouterConfig::default())
            .unwrap()
    }

    #[test]
    fn resolves_routes_provider_model_and_bare_models() {
        let r = router("[fast]\ntargets = [\"groq/llama-3.1-8b-instant\", \"openai/gpt-4o-mini\"]\n", "");
        let fast = r.resolve("fast").unwrap();
        assert_eq!(
            fast.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["groq/llama-3.1-8b-instant", "openai/gpt-4o-mini"]
        );
        assert_eq!(
            r.resolve("openrouter/anthropic/claude-sonnet-4.5").unwrap()[0].model,
            "anthropic/claude-sonnet-4.5"
        );
        assert_eq!(r.resolve("gpt-4o-mini").unwrap()[0].provider, "openai");
        assert!(r.resolve("nope/x").is_none());
        assert!(r.resolve("unknown-model").is_none());
        let e = Router::new(
            &ProvidersConfig::new(),
            &toml::from_str("[x]\ntargets = [\"nope/m\"]").unwrap(),
            &RouterConfig::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("routes.x.targets"), "{e}");
    }

    #[test]
    fn key_order_vault_then_env_then_local() {
        let r = router("", "[custom]\nadapter = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\nkey_env = \"LLM_SIDECAR_TEST_NO_SUCH_VAR\"\n[locked]\nadapter = \"openai\"\nbase_url = \"http://127.0.0.1:1\"\n");
        let (keys, locked) = r.keys_for(&r.providers["custom"], &TwoKeys);
        assert_eq!(keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
        assert!(!locked);
        let (keys, locked) = r.keys_for(&r.providers["ollama"], &crate::keystore::NoKeys);
        assert_eq!((keys.len(), keys[0].source, locked), (1, KeySource::Local, false));
        let (keys, locked) = r.keys_for(&r.providers["locked"], &TwoKeys);
        assert!(locked);
        assert_eq!(keys[0].source, KeySource::Local, "keyless custom provider still usable");
        let (keys, _) = r.keys_for(&r.providers["openai"], &crate::keystore::NoKeys);
        assert!(keys.is_empty() || keys[0].id == "env:OPENAI_API_KEY");
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let r = router("", "");
        for n in 0..30 {
            let cap = (250u64 << n.min(20)).min(8_000);
            for _ in 0..20 {
                assert!(r.backoff(n) <= Duration::from_millis(cap));
            }
        }
    }

    #[test]
    fn cooldown_after_consecutive_failures() {
        let r = router("", "");
        let t = Target { provider: "openai".into(), model: "m".into() };
        r.note_failure(&t);
        r.note_failure(&t);
        assert!(!r.cooling(&t, Instant::now()));
        r.note_failure(&t);
        assert!(r.cooling(&t, Instant::now()));
        assert!(!r.cooling(&t, Instant::now() + Duration::from_secs(31)));
        r.note_success(&t);
        assert!(!r.cooling(&t, Instant::now()));
    }
}
