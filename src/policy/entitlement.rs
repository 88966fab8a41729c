//! Entitlement tokens: JWTs signed by the backend (EdDSA or RS256) that name the user's tier and
//! billing period, verified with the public key(s) from `[account]` (PEM, JWKS text or file).
//!
//! Invariants: a token is accepted only if it is at most [`MAX_TOKEN_BYTES`], with a valid
//! signature by a configured key, an algorithm listed in `account.algorithms`, every required
//! claim (`sub`, `tier`, `period_start`, `period_end`, `exp`), `iss`/`aud` equal to
//! `account.issuer`/`account.audience` when those are set, and signed `limits` within sane ranges
//! (non-negative, at most [`MAX_LIMIT_TOKENS`], [`MAX_LIMIT_REQUESTS`], [`MAX_LIMIT_COST_USD`]).
//! Times are checked against the policy clock by the caller ([`Entitlement::check_times`]): `exp`
//! strictly (a token that verified once stays usable offline until `exp`), `nbf` and `iat` with
//! [`CLOCK_LEEWAY_SECS`] of clock skew. Token text (and any claim value) never appears in errors
//! or logs.

use super::config::AccountConfig;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Longest entitlement token accepted (and stored).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew tolerated for `nbf` and `iat`.
pub const CLOCK_LEEWAY_SECS: i64 = 60;
/// Largest signed `limits.monthly_tokens`.
pub const MAX_LIMIT_TOKENS: u64 = 1_000_000_000_000;
/// Largest signed `limits.monthly_requests`.
pub const MAX_LIMIT_REQUESTS: u64 = 1_000_000_000;
/// Largest signed `limits.monthly_cost_usd`.
pub const MAX_LIMIT_COST_USD: f64 = 1_000_000.0;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntitlementError {
    #[error(
        "no key to verify entitlement tokens is configured (account.public_key_pem, account.jwks or account.jwks_file)"
    )]
    NoKey,
    #[error("the entitlement token is malformed: {0}")]
    Malformed(String),
    #[error("the entitlement token uses algorithm {0}, which is not accepted (account.algorithms)")]
    WrongAlgorithm(String),
    #[error("the entitlement token's signature is not valid for any configured key")]
    BadSignature,
    #[error("the entitlement token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    #[error("the entitlement token expired")]
    Expired,
    #[error("the entitlement token names tier `{0}`, which is not configured")]
    UnknownTier(String),
    #[error("the entitlement token is {0} bytes long; at most {MAX_TOKEN_BYTES} are accepted")]
    TooLarge(usize),
    #[error("the entitlement token is not valid yet (its `nbf` is in the future)")]
    NotYetValid,
    #[error("the entitlement token was issued in the future (its `iat`); check this machine's clock")]
    IssuedInFuture,
    #[error("the entitlement token's issuer (`iss`) is not account.issuer")]
    WrongIssuer,
    #[error("the entitlement token's audience (`aud`) does not include account.audience")]
    WrongAudience,
    #[error("the entitlement token's `limits.{0}` must be {1}")]
    BadLimit(&'static str, String),
    #[error("the entitlement's `credits.balance` must be a whole number from 0 to {}", super::credits::MAX_BALANCE)]
    BadCredits,
}

/// Per-token overrides of the tier's limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitOverrides {
    pub monthly_tokens: Option<u64>,
    pub monthly_requests: Option<u64>,
    pub monthly_cost_usd: Option<f64>,
}

/// The verified claims of an entitlement token. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entitlement {
    pub sub: String,
    pub tier: String,
    pub period_start: i64,
    pub period_end: i64,
    pub exp: i64,
    /// Not valid before (optional).
    pub nbf: Option<i64>,
    /// Issued at (optional).
    pub iat: Option<i64>,
    pub limits: LimitOverrides,
    /// The prepaid credit balance the backend reports (`credits: {balance, as_of}`).
    pub credits: Option<ClaimedCredits>,
}

/// `credits` of an entitlement token: the balance when the token was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClaimedCredits {
    pub balance: i64,
    /// Unix seconds (the token's `iat` when absent, else 0).
    pub as_of: i64,
}

impl Entitlement {
    /// Checks `exp` (strictly), `nbf` and `iat` (with [`CLOCK_LEEWAY_SECS`]) at `now_s`.
    pub fn check_times(&self, now_s: i64) -> Result<(), EntitlementError> {
        if self.exp <= now_s {
            return Err(EntitlementError::Expired);
        }
        if self.nbf.is_some_and(|nbf| nbf > now_s.saturating_add(CLOCK_LEEWAY_SECS)) {
            return Err(EntitlementError::NotYetValid);
        }
        if self.iat.is_some_and(|iat| iat > now_s.saturating_add(CLOCK_LEEWAY_SECS)) {
            return Err(EntitlementError::IssuedInFuture);
        }
        Ok(())
    }
}

/// `aud`: one string or a list of them (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    tier: Option<String>,
    period_start: Option<i64>,
    period_end: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    iss: Option<String>,
    aud: Option<Audience>,
    /// Read as numbers first, so a negative or huge value gets a clear refusal.
    #[serde(default)]
    limits: Option<RawLimits>,
    #[serde(default)]
    credits: Option<RawCredits>,
}

/// `credits` read as numbers first, so a negative or fractional balance gets a clear refusal.
#[derive(Deserialize)]
pub struct RawCredits {
    pub balance: f64,
    pub as_of: Option<i64>,
}

impl RawCredits {
    /// The balance as a whole number of credits in `0..=MAX_BALANCE`.
    pub fn balance(&self) -> Result<i64, EntitlementError> {
        let max = super::credits::MAX_BALANCE.unsigned_abs();
        count_limit("credits.balance", Some(self.balance), max)
            .ok()
            .flatten()
            .and_then(|b| i64::try_from(b).ok())
            .ok_or(EntitlementError::BadCredits)
    }
}

#[derive(Deserialize)]
struct RawLimits {
    monthly_tokens: Option<f64>,
    monthly_requests: Option<f64>,
    monthly_cost_usd: Option<f64>,
}

/// A signed count limit: a whole number in `0..=max`.
fn count_limit(name: &'static str, v: Option<f64>, max: u64) -> Result<Option<u64>, EntitlementError> {
    let Some(v) = v else { return Ok(None) };
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= max as f64 {
        return Ok(Some(v as u64));
    }
    Err(EntitlementError::BadLimit(name, format!("a whole number from 0 to {max}")))
}

fn limits(raw: Option<RawLimits>) -> Result<LimitOverrides, EntitlementError> {
    let Some(raw) = raw else { return Ok(LimitOverrides::default()) };
    let cost = match raw.monthly_cost_usd {
        None => None,
        Some(c) if c.is_finite() && (0.0..=MAX_LIMIT_COST_USD).contains(&c) => Some(c),
        Some(_) => {
            return Err(EntitlementError::BadLimit("monthly_cost_usd", format!("from 0 to {MAX_LIMIT_COST_USD}")))
        }
    };
    Ok(LimitOverrides {
        monthly_tokens: count_limit("monthly_tokens", raw.monthly_tokens, MAX_LIMIT_TOKENS)?,
        monthly_requests: count_limit("monthly_requests", raw.monthly_requests, MAX_LIMIT_REQUESTS)?,
        monthly_cost_usd: cost,
    })
}

/// The configured verification keys.
#[derive(Clone, Default)]
pub struct Verifier {
    keys: Vec<(Option<String>, &'static str, DecodingKey)>,
    algorithms: Vec<Algorithm>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("keys", &self.keys.len()).field("algorithms", &self.algorithms).finish()
    }
}

fn family(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "ed",
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => "rsa",
        _ => "other",
    }
}

impl Verifier {
    /// Loads the keys named in `[account]`; `config_dir` resolves a relative `jwks_file`.
    pub fn from_config(c: &AccountConfig, config_dir: &Path) -> Result<Verifier, (String, String)> {
        let mut keys = Vec::new();
        if let Some(pem) = &c.public_key_pem {
            let k = DecodingKey::from_ed_pem(pem.as_bytes())
                .map(|k| (None, "ed", k))
                .or_else(|_| DecodingKey::from_rsa_pem(pem.as_bytes()).map(|k| (None, "rsa", k)))
                .map_err(|e| {
                    ("account.public_key_pem".to_string(), format!("not an Ed25519 or RSA public key: {e}"))
                })?;
            keys.push(k);
        }
        let mut jwks = Vec::new();
        if let Some(text) = &c.jwks {
            jwks.push(("account.jwks", text.clone()));
        }
        if let Some(file) = &c.jwks_file {
            let path = config_dir.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ("account.jwks_file".to_string(), format!("cannot read {}: {e}", path.display())))?;
            jwks.push(("account.jwks_file", text));
        }
        for (key, text) in jwks {
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| (key.to_string(), format!("not a JWKS: {e}")))?;
            for jwk in &set.keys {
                let dk = DecodingKey::from_jwk(jwk).map_err(|e| (key.to_string(), format!("unusable key: {e}")))?;
                let fam = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => "rsa",
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => "ed",
                    _ => return Err((key.to_string(), "only Ed25519 (OKP) and RSA keys are supported".into())),
                };
                keys.push((jwk.common.key_id.clone(), fam, dk));
            }
        }
        let algorithms = c
            .algorithms
            .iter()
            .filter_map(|a| match a.as_str() {
                "EdDSA" => Some(Algorithm::EdDSA),
                "RS256" => Some(Algorithm::RS256),
                _ => None,
            })
            .collect();
        Ok(Verifier { keys, algorithms, issuer: c.issuer.clone(), audience: c.audience.clone() })
    }

    pub fn configured(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies `token`'s signature, algorithm and claims (not its expiry: see module docs).
    pub fn verify(&self, token: &str) -> Result<Entitlement, EntitlementError> {
        if self.keys.is_empty() {
            return Err(EntitlementError::NoKey);
        }
        let token = token.trim();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(EntitlementError::TooLarge(token.len()));
        }
        // Fixed messages: the decoder's own would quote parts of the header back.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| EntitlementError::Malformed("the header is not a base64url-encoded JWT header".into()))?;
        if !self.algorithms.contains(&header.alg) {
            return Err(EntitlementError::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let candidates = self.keys.iter().filter(|(kid, fam, _)| {
            *fam == family(header.alg) && (header.kid.is_none() || kid.is_none() || *kid == header.kid)
        });
        let mut last = EntitlementError::BadSignature;
        for (_, _, key) in candidates {
            match jsonwebtoken::decode::<RawClaims>(token, key, &validation) {
                Ok(data) => return self.claims(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::InvalidSignature => EntitlementError::BadSignature,
                        jsonwebtoken::errors::ErrorKind::Json(_) => {
                            EntitlementError::Malformed("claims are not valid JSON of the expected shape".into())
                        }
                        _ => EntitlementError::Malformed("the token is not a well-formed signed JWT".into()),
                    }
                }
            }
        }
        Err(last)
    }
}

impl Verifier {
    fn claims(&self, c: RawClaims) -> Result<Entitlement, EntitlementError> {
        if let Some(want) = &self.issuer {
            if c.iss.as_ref() != Some(want) {
                return Err(EntitlementError::WrongIssuer);
            }
        }
        if let Some(want) = &self.audience {
            let ok = match &c.aud {
                Some(Audience::One(a)) => a == want,
                Some(Audience::Many(list)) => list.contains(want),
                None => false,
            };
            if !ok {
                return Err(EntitlementError::WrongAudience);
            }
        }
        claims(c)
    }
}

fn claims(c: RawClaims) -> Result<Entitlement, EntitlementError> {
    let sub = c.sub.filter(|s| !s.is_empty()).ok_or(EntitlementError::MissingClaim("sub"))?;
    let tier = c.tier.filter(|s| !s.is_empty()).ok_or(EntitlementError::MissingClaim("tier"))?;
    let period_start = c.period_start.ok_or(EntitlementError::MissingClaim("period_start"))?;
    let period_end = c.period_end.ok_or(EntitlementError::MissingClaim("period_end"))?;
    let exp = c.exp.ok_or(EntitlementError::MissingClaim("exp"))?;
    if period_end <= period_start {
        return Err(EntitlementError::Malformed("period_end is not after period_start".into()));
    }
    let limits = limits(c.limits)?;
    let credits = match &c.credits {
        Some(raw) => Some(ClaimedCredits { balance: raw.balance()?, as_of: raw.as_of.or(c.iat).unwrap_or(0) }),
        None => None,
    };
    Ok(Entitlement { sub, tier, period_start, period_end, exp, nbf: c.nbf, iat: c.iat, limits, credits })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::Engine;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use jsonwebtoken::{EncodingKey, Header};

    fn token(sk: &ed25519_dalek::SigningKey, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let pem = sk.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF).unwrap();
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn jwks_keys_are_picked_by_kid() {
        let a = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let b = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let x = |k: &ed25519_dalek::SigningKey| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())
        };
        let jwks = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "a", "x": x(&a)},
            {"kty": "OKP", "crv": "Ed25519", "kid": "b", "x": x(&b)},
        ]});
        let config = AccountConfig { jwks: Some(jwks.to_string()), ..AccountConfig::default() };
        let v = Verifier::from_config(&config, Path::new(".")).unwrap();
        let claims = serde_json::json!({"sub": "u", "tier": "pro", "period_start": 1, "period_end": 2, "exp": 3,
            "limits": {"monthly_tokens": 5}});
        let e = v.verify(&token(&b, Some("b"), &claims)).unwrap();
        assert_eq!((e.tier.as_str(), e.limits.monthly_tokens), ("pro", Some(5)));
        assert_eq!(v.verify(&token(&b, Some("a"), &claims)), Err(EntitlementError::BadSignature));
        let only_rsa = AccountConfig { algorithms: vec!["RS256".into()], ..config };
        let v = Verifier::from_config(&only_rsa, Path::new(".")).unwrap();
        assert!(matches!(v.verify(&token(&a, Some("a"), &claims)), Err(EntitlementError::WrongAlgorithm(_))));
        let bad = serde_json::json!({"sub": "u", "tier": "pro", "period_start": 1, "exp": 3});
        let v = Verifier::from_config(
            &AccountConfig { jwks: Some(jwks.to_string()), ..AccountConfig::default() },
            Path::new("."),
        )
        .unwrap();
        assert_eq!(v.verify(&token(&a, Some("a"), &bad)), Err(EntitlementError::MissingClaim("period_end")));
        assert_eq!(Verifier::default().verify("x"), Err(EntitlementError::NoKey));
    }

    #[test]
    fn times_have_leeway_for_nbf_and_iat_but_not_exp() {
        let e = Entitlement {
            sub: "u".into(),
            tier: "t".into(),
            period_start: 0,
            period_end: 1,
            exp: 1000,
            nbf: Some(1059),
            iat: Some(1059),
            limits: LimitOverrides::default(),
            credits: None,
        };
        assert_eq!(e.check_times(1000), Err(EntitlementError::Expired), "exp is strict");
        assert_eq!(e.check_times(999), Ok(()), "nbf and iat 60 s ahead are within the leeway");
        let later = Entitlement { nbf: Some(1060), ..e.clone() };
        assert_eq!(later.check_times(999), Err(EntitlementError::NotYetValid));
        let issued = Entitlement { iat: Some(1060), ..e };
        assert_eq!(issued.check_times(999), Err(EntitlementError::IssuedInFuture));
    }

    #[test]
    fn signed_limits_are_range_checked_with_the_field_named() {
        let raw = |t: Option<f64>, r: Option<f64>, c: Option<f64>| {
            limits(Some(RawLimits { monthly_tokens: t, monthly_requests: r, monthly_cost_usd: c }))
        };
        assert_eq!(
            raw(Some(5.0), Some(0.0), Some(2.5)),
            Ok(LimitOverrides { monthly_tokens: Some(5), monthly_requests: Some(0), monthly_cost_usd: Some(2.5) })
        );
        for (bad, name) in [
            (raw(Some(-1.0), None, None), "monthly_tokens"),
            (raw(Some(1e13), None, None), "monthly_tokens"),
            (raw(None, Some(0.5), None), "monthly_requests"),
            (raw(None, None, Some(-5.0)), "monthly_cost_usd"),
            (raw(None, None, Some(f64::INFINITY)), "monthly_cost_usd"),
        ] {
            let e = bad.unwrap_err();
            assert!(matches!(e, EntitlementError::BadLimit(n, _) if n == name), "{e}");
            assert!(e.to_string().contains(name), "{e}");
        }
        assert_eq!(limits(None), Ok(LimitOverrides::default()));
    }

    #[test]
    fn oversized_and_malformed_tokens_are_refused_without_echo() {
        let a = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(a.verifying_key().as_bytes());
        let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]});
        let config = AccountConfig {
            jwks: Some(jwks.to_string()),
            issuer: Some("iss-1".into()),
            audience: Some("aud-1".into()),
            ..AccountConfig::default()
        };
        let v = Verifier::from_config(&config, Path::new(".")).unwrap();
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(v.verify(&big), Err(EntitlementError::TooLarge(MAX_TOKEN_BYTES + 1)));
        let e = v.verify("eyJTRUNSRVQiOjF9.e30.c2ln").unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let claims = serde_json::json!({"sub": "u", "tier": "pro", "period_start": 1, "period_end": 2, "exp": 3,
            "iss": "iss-1", "aud": ["x", "aud-1"]});
        assert!(v.verify(&token(&a, None, &claims)).is_ok());
        let wrong = serde_json::json!({"sub": "u", "tier": "pro", "period_start": 1, "period_end": 2, "exp": 3,
            "iss": "iss-2", "aud": "aud-1"});
        assert_eq!(v.verify(&token(&a, None, &wrong)), Err(EntitlementError::WrongIssuer));
        let wrong = serde_json::json!({"sub": "u", "tier": "pro", "period_start": 1, "period_end": 2, "exp": 3,
            "iss": "iss-1", "aud": "aud-2"});
        assert_eq!(v.verify(&token(&a, None, &wrong)), Err(EntitlementError::WrongAudience));
    }

    #[test]
    fn rs256_with_a_pem_public_key() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
        let private = std::fs::read(format!("{dir}/test-only-rsa-private.pem")).unwrap();
        let public = std::fs::read_to_string(format!("{dir}/test-only-rsa-public.pem")).unwrap();
        let config = AccountConfig { public_key_pem: Some(public), ..AccountConfig::default() };
        let v = Verifier::from_config(&config, Path::new(".")).unwrap();
        let claims = serde_json::json!({"sub": "u", "tier": "pro", "period_start": 1, "period_end": 2, "exp": 3});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(&private).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&t).unwrap().sub, "u");
        let mut forged = t.clone();
        forged.replace_range(forged.len() - 6.., "AAAAAA");
        assert_eq!(v.verify(&forged), Err(EntitlementError::BadSignature));
        let ed = token(&ed25519_dalek::SigningKey::from_bytes(&[7; 32]), None, &claims);
        assert_eq!(v.verify(&ed), Err(EntitlementError::BadSignature), "no Ed25519 key is configured");
    }
}
