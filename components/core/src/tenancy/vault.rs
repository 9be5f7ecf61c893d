//! The token vault: secrets (TikTok access and refresh tokens, Events API tokens) are
//! stored only as XChaCha20-Poly1305 ciphertext.
//!
//! - Keys come from the secret variable `token_encryption_keys`:
//!   `id:base64key[,id:base64key...]`, 256-bit keys, the first one is used for new writes
//!   and every listed one still decrypts, so keys rotate without downtime.
//! - Each record has its own random 192-bit nonce and names its key id beside the
//!   ciphertext. The record's storage key is the associated data, so a ciphertext copied
//!   to another place (another organization's key) does not decrypt.
//! - Every sealed record's storage key is listed in a registry, so [`rotate`] can
//!   re-encrypt everything under the current key.

use crate::ApiError;
use crate::platform::crypto::{base64url, from_base64url, hmac_sha256, random_bytes};
use crate::platform::env::Env;
use crate::platform::kv::{IdIndex, KeyValue};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

/// The variable holding the vault keys.
pub const KEYS_VARIABLE: &str = "token_encryption_keys";

/// Where the storage keys of all sealed records are listed.
const REGISTRY_KEY: &str = "vault/records";

/// One configured key.
struct VaultKey {
    id: String,
    cipher: XChaCha20Poly1305,
    raw: [u8; 32],
}

/// The configured keys; the first encrypts, all decrypt.
pub struct Keyring {
    keys: Vec<VaultKey>,
}

impl std::fmt::Debug for Keyring {
    /// Key ids only: key material never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    v: u8,
    kid: String,
    nonce: String,
    ct: String,
}

fn config_error(reason: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!(
        "variable {KEYS_VARIABLE} is misconfigured: {reason}"
    ))
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
        .and_then(|bytes| bytes.try_into().ok())
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key...]`. Errors name the problem, never the key.
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut keys: Vec<VaultKey> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((id, material)) = entry.split_once(':') else {
                return Err(config_error("each entry must be id:base64key"));
            };
            let id = id.trim();
            if id.is_empty()
                || id.len() > 32
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(config_error("key ids are 1-32 letters, digits, '-' or '_'"));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(config_error(format!("key id {id} is listed twice")));
            }
            let raw = decode_key(material.trim())
                .ok_or_else(|| config_error(format!("key {id} is not 32 bytes of base64")))?;
            keys.push(VaultKey {
                id: id.to_string(),
                cipher: XChaCha20Poly1305::new((&raw).into()),
                raw,
            });
        }
        if keys.is_empty() {
            return Err(config_error("no keys are set"));
        }
        Ok(Keyring { keys })
    }

    /// A fresh keyring entry for `id`, in the format [`Keyring::parse`] reads.
    pub fn generate_entry(id: &str) -> Result<String, ApiError> {
        let key = random_bytes::<32>()?;
        Ok(format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ))
    }

    /// The id of the key new records are sealed with.
    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Keys derived for another purpose (e.g. signing OAuth `state`), one per vault key,
    /// the active one first, so rotating the vault rotates them too.
    pub fn derived_keys(&self, purpose: &str) -> Vec<[u8; 32]> {
        self.keys
            .iter()
            .map(|k| hmac_sha256(&k.raw, purpose.as_bytes()))
            .collect()
    }

    /// Encrypts `plaintext` for storage at `storage_key`.
    pub fn seal(&self, storage_key: &str, plaintext: &[u8]) -> Result<Vec<u8>, ApiError> {
        let key = &self.keys[0];
        let nonce = random_bytes::<24>()?;
        let ct = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: storage_key.as_bytes(),
                },
            )
            .map_err(|_| ApiError::Internal("encryption failed".into()))?;
        let sealed = Sealed {
            v: 1,
            kid: key.id.clone(),
            nonce: base64url(&nonce),
            ct: base64url(&ct),
        };
        Ok(serde_json::to_vec(&sealed).expect("sealed records serialize"))
    }

    /// Decrypts a record stored at `storage_key`.
    pub fn open(&self, storage_key: &str, record: &[u8]) -> Result<Vec<u8>, ApiError> {
        let sealed: Sealed = serde_json::from_slice(record)
            .map_err(|_| ApiError::Storage(format!("{storage_key} is not a sealed record")))?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.kid)
            .ok_or_else(|| {
                config_error(format!(
                    "{storage_key} is encrypted with key {}, which is not configured",
                    sealed.kid
                ))
            })?;
        let nonce = from_base64url(&sealed.nonce)
            .filter(|n| n.len() == 24)
            .ok_or_else(|| ApiError::Storage(format!("{storage_key} has a bad nonce")))?;
        let ct = from_base64url(&sealed.ct)
            .ok_or_else(|| ApiError::Storage(format!("{storage_key} has bad ciphertext")))?;
        key.cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: storage_key.as_bytes(),
                },
            )
            .map_err(|_| {
                ApiError::Storage(format!(
                    "{storage_key} does not decrypt (tampered, moved, or a different key {})",
                    sealed.kid
                ))
            })
    }

    fn sealed_with(record: &[u8]) -> Option<String> {
        serde_json::from_slice::<Sealed>(record).ok().map(|s| s.kid)
    }
}

/// Seals `secret` and stores it at `storage_key`, listing it for rotation.
pub fn put_secret(
    kv: &dyn KeyValue,
    keyring: &Keyring,
    storage_key: &str,
    secret: &[u8],
) -> Result<(), ApiError> {
    IdIndex::new(kv, REGISTRY_KEY).insert(storage_key)?;
    kv.set(storage_key, &keyring.seal(storage_key, secret)?)
}

/// The secret stored at `storage_key`, decrypted; `None` when nothing is stored.
pub fn get_secret(
    kv: &dyn KeyValue,
    keyring: &Keyring,
    storage_key: &str,
) -> Result<Option<Vec<u8>>, ApiError> {
    kv.get(storage_key)?
        .map(|record| keyring.open(storage_key, &record))
        .transpose()
}

/// Deletes the secret at `storage_key` and its registry entry.
pub fn delete_secret(kv: &dyn KeyValue, storage_key: &str) -> Result<(), ApiError> {
    kv.delete(storage_key)?;
    IdIndex::new(kv, REGISTRY_KEY).remove(storage_key)
}

/// What [`rotate`] did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct RotateReport {
    pub active_key: String,
    /// Records listed in the registry.
    pub records: usize,
    /// Records re-encrypted under the active key.
    pub reencrypted: usize,
    /// Records already under the active key.
    pub current: usize,
    /// Registry entries whose record was gone (removed from the registry).
    pub missing: usize,
}

/// Re-encrypts every sealed record under the active key.
pub fn rotate(kv: &dyn KeyValue, keyring: &Keyring) -> Result<RotateReport, ApiError> {
    let registry = IdIndex::new(kv, REGISTRY_KEY);
    let mut report = RotateReport {
        active_key: keyring.active_id().to_string(),
        ..Default::default()
    };
    for storage_key in registry.list()? {
        report.records += 1;
        let Some(record) = kv.get(&storage_key)? else {
            registry.remove(&storage_key)?;
            report.missing += 1;
            continue;
        };
        if Keyring::sealed_with(&record).as_deref() == Some(keyring.active_id()) {
            report.current += 1;
            continue;
        }
        let secret = keyring.open(&storage_key, &record)?;
        let resealed = keyring.seal(&storage_key, &secret)?;
        // Only replace what we read: a concurrent write already used the active key.
        if kv.compare_and_swap(&storage_key, Some(&record), &resealed)? {
            report.reencrypted += 1;
        } else {
            report.current += 1;
        }
    }
    Ok(report)
}

impl Env<'_> {
    /// The vault keys from `token_encryption_keys`.
    pub fn keyring(&self) -> Result<Keyring, ApiError> {
        Keyring::parse(&self.require(KEYS_VARIABLE)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kv::MemoryKv;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    #[test]
    fn sealed_records_hold_no_plaintext_and_open_again() {
        let ring = Keyring::parse(K1).unwrap();
        let sealed = ring.seal("org/a/tokens/1", b"act.secret-token").unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("secret-token"));
        assert_eq!(
            ring.open("org/a/tokens/1", &sealed).unwrap(),
            b"act.secret-token"
        );
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let ring = Keyring::parse(K1).unwrap();
        assert_ne!(ring.seal("k", b"x").unwrap(), ring.seal("k", b"x").unwrap());
    }

    #[test]
    fn a_record_moved_to_another_key_does_not_open() {
        let ring = Keyring::parse(K1).unwrap();
        let sealed = ring.seal("org/a/tokens/1", b"t").unwrap();
        let e = ring.open("org/b/tokens/1", &sealed).unwrap_err();
        assert_eq!(e.status(), 503);
    }

    #[test]
    fn tampered_ciphertext_does_not_open() {
        let ring = Keyring::parse(K1).unwrap();
        let mut sealed: serde_json::Value =
            serde_json::from_slice(&ring.seal("k", b"token").unwrap()).unwrap();
        let mut ct = from_base64url(sealed["ct"].as_str().unwrap()).unwrap();
        ct[0] ^= 1;
        sealed["ct"] = base64url(&ct).into();
        assert!(
            ring.open("k", &serde_json::to_vec(&sealed).unwrap())
                .is_err()
        );
    }

    #[test]
    fn old_keys_still_open_and_new_writes_use_the_first_key() {
        let old = Keyring::parse(K1).unwrap();
        let sealed = old.seal("k", b"t").unwrap();
        let both = Keyring::parse(&format!("{K2},{K1}")).unwrap();
        assert_eq!(both.open("k", &sealed).unwrap(), b"t");
        assert_eq!(
            Keyring::sealed_with(&both.seal("k", b"t").unwrap()).unwrap(),
            "k2"
        );
        let only_new = Keyring::parse(K2).unwrap();
        let e = only_new.open("k", &sealed).unwrap_err();
        assert!(e.to_string().contains("key k1"), "{e}");
    }

    #[test]
    fn rotate_reencrypts_every_record_under_the_active_key() {
        let kv = MemoryKv::new();
        let old = Keyring::parse(K1).unwrap();
        put_secret(&kv, &old, "org/a/tokens/1", b"one").unwrap();
        put_secret(&kv, &old, "org/b/tokens/2", b"two").unwrap();
        put_secret(&kv, &old, "org/b/tokens/3", b"three").unwrap();
        kv.delete("org/b/tokens/3").unwrap();
        let new = Keyring::parse(&format!("{K2},{K1}")).unwrap();
        let report = rotate(&kv, &new).unwrap();
        assert_eq!(
            report,
            RotateReport {
                active_key: "k2".into(),
                records: 3,
                reencrypted: 2,
                current: 0,
                missing: 1
            }
        );
        let only_new = Keyring::parse(K2).unwrap();
        assert_eq!(
            get_secret(&kv, &only_new, "org/b/tokens/2")
                .unwrap()
                .unwrap(),
            b"two"
        );
        assert_eq!(rotate(&kv, &new).unwrap().current, 2);
    }

    #[test]
    fn misconfigured_keys_are_refused_without_echoing_them() {
        for bad in [
            "",
            "nokey",
            "k1:c2hvcnQ=",
            "k 1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            &format!("{K1},{K1}"),
        ] {
            let e = Keyring::parse(bad).unwrap_err();
            assert!(e.to_string().contains(KEYS_VARIABLE), "{e}");
            assert!(!e.to_string().contains("AAECAw"), "{e}");
        }
    }

    #[test]
    fn generated_entries_parse() {
        let entry = Keyring::generate_entry("k9").unwrap();
        assert_eq!(Keyring::parse(&entry).unwrap().active_id(), "k9");
        assert!(!format!("{:?}", Keyring::parse(&entry).unwrap()).contains(&entry[3..]));
    }
}
