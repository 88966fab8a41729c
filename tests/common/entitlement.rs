//! Entitlement tokens for tests: an Ed25519 key pair made here and JWTs signed with it (EdDSA),
//! as the account backend would issue them.
#![allow(dead_code, clippy::unwrap_used)]

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub struct Keys {
    pub private_pem: String,
    /// For `[account] public_key_pem`.
    pub public_pem: String,
}

pub fn keypair() -> Keys {
    let sk = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    Keys {
        private_pem: sk.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
        public_pem: sk.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
    }
}

/// A JWT of `claims` signed with `keys` (EdDSA).
pub fn sign(keys: &Keys, claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        claims,
        &EncodingKey::from_ed_pem(keys.private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub fn now_s() -> i64 {
    llm_sidecar::clock::now_ms() / 1000
}
