//! API keys: generated with 256 bits of randomness, shown once, stored as SHA-256 hashes.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::tenant::{Scope, Tenant};

/// Prefix that makes hookd keys recognisable to secret scanners and people.
const KEY_PREFIX: &str = "hk_";

/// A stored key: never holds the key itself.
#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: String,
    pub name: Option<String>,
    /// The first characters of the key, enough to tell keys apart in a listing.
    pub key_prefix: String,
    pub tenant: Tenant,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    /// A new key for `tenant`: the stored record and the key itself, which exists only in the
    /// answer to whoever asked for it. No scopes means all scopes.
    pub fn generate(
        tenant: Tenant,
        scopes: Vec<Scope>,
        name: Option<String>,
        now: i64,
    ) -> (ApiKey, String) {
        let secret = generate_key();
        let scopes = if scopes.is_empty() {
            Scope::ALL.to_vec()
        } else {
            scopes
        };
        let key = ApiKey {
            id: super::new_id(),
            name,
            key_prefix: display_prefix(&secret),
            tenant,
            scopes,
            created_at: now,
            revoked_at: None,
        };
        (key, secret)
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A freshly generated secret: 32 random bytes, URL-safe base64 with a recognisable prefix.
pub fn generate_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn generate_key() -> String {
    generate_secret(KEY_PREFIX)
}

/// Lowercase hex SHA-256: keys and tokens are looked up by this, so a lookup never compares
/// the secret itself and its timing reveals nothing useful.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The part of a key shown in listings.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_prefixed_and_long() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with("hk_"));
        assert_eq!(a.len(), 3 + 43);
        assert_eq!(hash_secret(&a).len(), 64);
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }
}
