//! Random identifiers, secret hashing and the wall clock.
//!
//! Owns how ids, tokens and keys look (URL-safe base64 without padding of
//! `ring::rand::SystemRandom` bytes) and how secrets are hashed (SHA-256), so the
//! rest of the crate never touches raw randomness or digests. A leaf.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// SHA-256 digest of a secret (device secret, app key). Secrets are never stored.
pub type SecretHash = [u8; 32];

/// Bytes of randomness in a message id, device id or session id (128 bits).
pub const ID_BYTES: usize = 16;
/// Bytes of randomness in a secret, token or API key (256 bits).
pub const SECRET_BYTES: usize = 32;

/// Errors drawing randomness (the OS RNG failed: nothing sensible can continue).
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `n` random bytes as URL-safe unpadded base64.
pub fn random_text(n: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| RandomError)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// A new 128-bit id (message id, device id, session id).
pub fn new_id() -> Result<String, RandomError> {
    random_text(ID_BYTES)
}

/// A new 256-bit secret (device secret, token, API key).
pub fn new_secret() -> Result<String, RandomError> {
    random_text(SECRET_BYTES)
}

/// SHA-256 of a secret as presented by a client.
pub fn hash_secret(secret: &str) -> SecretHash {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of several byte strings, each length-prefixed so no two different
/// lists hash alike (what an idempotency key's request is recognised by).
pub fn fingerprint(parts: &[&[u8]]) -> SecretHash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Compares two hashes without an early exit, so timing does not reveal how
/// many leading bytes matched.
pub fn hashes_equal(a: &SecretHash, b: &SecretHash) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_url_safe_and_sized() {
        let id = new_id().expect("rng");
        assert_eq!(id.len(), 22);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(new_secret().expect("rng").len(), 43);
        assert_ne!(new_id().expect("rng"), id);
    }

    #[test]
    fn hash_compare() {
        assert!(hashes_equal(&hash_secret("a"), &hash_secret("a")));
        assert!(!hashes_equal(&hash_secret("a"), &hash_secret("b")));
    }
}
