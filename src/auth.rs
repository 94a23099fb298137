//! Who is calling, and what they may see.
//!
//! - **API keys** (`lk_` + 43 base64url characters, 256 random bits) are shown once when a tenant
//!   is created and stored only as their SHA-256: a leaked database does not leak keys. A key that
//!   is that long needs no slow hash (there is nothing to brute-force).
//! - **The operator key** (`LECTERN_ADMIN_KEY`) manages tenants and queues and sees every tenant.
//! - **Open mode**: while there is no operator key and no tenant key, a loopback-only server lets
//!   every caller act as the operator on the `default` tenant (a fresh single-user install works
//!   without setup). `lectern serve` refuses a non-loopback address in open mode.
//! - **Playback tokens** sign HLS URLs of `signed` media: `s-<expiry>-<hmac>` as a path segment, so
//!   the relative URIs inside playlists carry it to every rendition and segment without rewriting.

use std::path::Path;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::clock::Millis;
use crate::journal::DEFAULT_TENANT;

/// A new API key (shown once) and the hash stored in its place.
pub fn new_api_key() -> (String, String) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let key = format!("lk_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    let hash = hash_key(&key);
    (key, hash)
}

/// A Standard Webhooks signing secret: `whsec_` + base64 of 24 random bytes.
pub fn new_webhook_secret() -> String {
    let mut raw = [0u8; 24];
    rand::rng().fill_bytes(&mut raw);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(raw))
}

/// The stored form of a key: SHA-256, hex.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Equality in time independent of where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant it acts for (its own; for the operator, the one it names or `default`).
    pub tenant: String,
    /// The operator: sees and manages every tenant.
    pub admin: bool,
}

impl Caller {
    pub fn tenant(id: impl Into<String>) -> Self {
        Self { tenant: id.into(), admin: false }
    }

    pub fn operator(acting_for: Option<String>) -> Self {
        Self { tenant: acting_for.unwrap_or_else(|| DEFAULT_TENANT.to_string()), admin: true }
    }

    /// Whether a resource of `tenant` exists for this caller (others' resources answer 404).
    pub fn sees(&self, tenant: &str) -> bool {
        self.admin || self.tenant == tenant
    }

    /// The tenant filter of a listing: the operator may ask for any tenant or all (`None`).
    pub fn scope<'a>(&'a self, asked: Option<&'a str>) -> Option<&'a str> {
        if self.admin { asked } else { Some(&self.tenant) }
    }
}

/// The key that signs playback tokens: 32 random bytes in `<data>/secrets/playback.key`, made on
/// first use (mode 0600), shared by every process on the data dir.
pub fn load_playback_key(data_dir: &Path) -> std::io::Result<[u8; 32]> {
    let dir = data_dir.join("secrets");
    let path = dir.join("playback.key");
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
    {
        return Ok(key);
    }
    std::fs::create_dir_all(&dir)?;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let tmp = dir.join(format!("playback.key.{}", std::process::id()));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
    }
    // Two processes racing: the first link wins and both read it back.
    match std::fs::hard_link(&tmp, &path) {
        Ok(()) | Err(_) => {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    let bytes = std::fs::read(&path)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{} is not 32 bytes", path.display()))
    })
}

fn playback_mac(key: &[u8; 32], media_id: &str, expires_s: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(format!("{media_id}:{expires_s}").as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// The path segment that opens `media_id` until `expires_s` (Unix seconds).
pub fn playback_token(key: &[u8; 32], media_id: &str, expires_s: i64) -> String {
    format!("s-{expires_s}-{}", playback_mac(key, media_id, expires_s))
}

/// Why a playback token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Expired,
    BadSignature,
}

/// Checks a token segment for `media_id` at `now`.
pub fn verify_playback_token(key: &[u8; 32], media_id: &str, token: &str, now: Millis) -> Result<(), TokenError> {
    let rest = token.strip_prefix("s-").ok_or(TokenError::Malformed)?;
    let (exp, mac) = rest.split_once('-').ok_or(TokenError::Malformed)?;
    if exp.is_empty() || exp.len() > 12 || !exp.bytes().all(|b| b.is_ascii_digit()) || mac.len() != 32 {
        return Err(TokenError::Malformed);
    }
    let exp: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    if !constant_time_eq(playback_mac(key, media_id, exp).as_bytes(), mac.as_bytes()) {
        return Err(TokenError::BadSignature);
    }
    if exp * 1000 < now {
        return Err(TokenError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_stored_hashed() {
        let (k1, h1) = new_api_key();
        let (k2, _) = new_api_key();
        assert_ne!(k1, k2);
        assert!(k1.starts_with("lk_") && k1.len() == 46, "{k1}");
        assert_eq!(h1, hash_key(&k1));
        assert!(!h1.contains(&k1[3..]));
        let s = new_webhook_secret();
        let raw = base64::engine::general_purpose::STANDARD.decode(s.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 24);
    }

    #[test]
    fn playback_tokens_bind_media_and_expiry() {
        let key = [7u8; 32];
        let t = playback_token(&key, "med_a", 2_000);
        assert_eq!(verify_playback_token(&key, "med_a", &t, 1_000_000), Ok(()));
        assert_eq!(verify_playback_token(&key, "med_a", &t, 2_000_001), Err(TokenError::Expired));
        assert_eq!(verify_playback_token(&key, "med_b", &t, 0), Err(TokenError::BadSignature));
        assert_eq!(verify_playback_token(&[8u8; 32], "med_a", &t, 0), Err(TokenError::BadSignature));
        let forged = t.replace("s-2000-", "s-9999-");
        assert_eq!(verify_playback_token(&key, "med_a", &forged, 0), Err(TokenError::BadSignature));
        for bad in
            ["", "s-", "s-12", "x-2000-00", "s--abc", "s-2000-zz", "s-99999999999999-00000000000000000000000000000000"]
        {
            assert_eq!(verify_playback_token(&key, "med_a", bad, 0), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_tenant_sees_only_its_own() {
        let c = Caller::tenant("ten_a");
        assert!(c.sees("ten_a") && !c.sees("ten_b"));
        assert_eq!(c.scope(Some("ten_b")), Some("ten_a"));
        let op = Caller::operator(None);
        assert!(op.sees("ten_b"));
        assert_eq!(op.scope(None), None);
        assert_eq!(op.tenant, DEFAULT_TENANT);
    }
}
