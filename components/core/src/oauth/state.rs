//! The OAuth `state` parameter: signed, expiring, single-use, bound to an organization,
//! the kind of authorization and the return URL.
//!
//! `state = base64url(json payload) "." base64url(HMAC-SHA256(key, payload part))`.
//! The key is derived from the vault keys (so no extra secret to configure, and rotating
//! the vault rotates it); any configured key verifies, the active one signs. Single use is
//! an atomic counter per nonce: only the first callback to increment it gets 1.

use crate::ApiError;
use crate::platform::crypto::{
    base64url, constant_time_eq, from_base64url, hmac_sha256, random_token,
};
use crate::platform::kv::KeyValue;
use crate::tenancy::connections::Kind;
use crate::tenancy::org_id::OrgId;
use crate::tenancy::vault::Keyring;
use serde::{Deserialize, Serialize};

/// How long an authorization may take, start to callback.
pub const STATE_TTL_SECS: i64 = 600;
const PURPOSE: &str = "tiktok-edge oauth state v1";
/// Longest `state` accepted (the payload holds a return URL of at most 2 KiB).
const MAX_STATE_LEN: usize = 4096;

/// The signed contents of `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    #[serde(rename = "n")]
    pub nonce: String,
    #[serde(rename = "o")]
    pub org: String,
    #[serde(rename = "k")]
    pub kind: Kind,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

/// Why a `state` was refused. Each gets its own message; none reveals the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the authorization link has no state parameter")]
    Missing,
    #[error("the state parameter is not one this server issued")]
    Forged,
    #[error("the authorization took longer than 10 minutes; start again")]
    Expired,
    #[error("this authorization was already completed; start again")]
    Reused,
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        ApiError::invalid("state", e.to_string())
    }
}

/// Issues a state for `org` and `kind`, valid from `now` for [`STATE_TTL_SECS`].
pub fn issue(
    keyring: &Keyring,
    org: &OrgId,
    kind: Kind,
    return_url: Option<String>,
    now: i64,
) -> Result<(String, StateClaims), ApiError> {
    let claims = StateClaims {
        nonce: random_token::<16>()?,
        org: org.to_string(),
        kind,
        return_url,
        expires_at: now + STATE_TTL_SECS,
    };
    let payload = base64url(&serde_json::to_vec(&claims).expect("claims serialize"));
    let keys = keyring.derived_keys(PURPOSE);
    let mac = hmac_sha256(&keys[0], payload.as_bytes());
    Ok((format!("{payload}.{}", base64url(&mac)), claims))
}

/// Checks signature and expiry without using the state up (for `/oauth/start`).
pub fn verify(keyring: &Keyring, state: Option<&str>, now: i64) -> Result<StateClaims, StateError> {
    let state = state.filter(|s| !s.is_empty()).ok_or(StateError::Missing)?;
    if state.len() > MAX_STATE_LEN {
        return Err(StateError::Forged);
    }
    let (payload, mac) = state.split_once('.').ok_or(StateError::Forged)?;
    let mac = from_base64url(mac).ok_or(StateError::Forged)?;
    let signed = keyring
        .derived_keys(PURPOSE)
        .iter()
        .any(|key| constant_time_eq(&hmac_sha256(key, payload.as_bytes()), &mac));
    if !signed {
        return Err(StateError::Forged);
    }
    let claims: StateClaims = from_base64url(payload)
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or(StateError::Forged)?;
    if now > claims.expires_at {
        return Err(StateError::Expired);
    }
    Ok(claims)
}

/// Verifies and uses up the state: a second callback with it gets [`StateError::Reused`].
pub fn consume(
    kv: &dyn KeyValue,
    keyring: &Keyring,
    state: Option<&str>,
    now: i64,
) -> Result<StateClaims, ConsumeError> {
    let claims = verify(keyring, state, now)?;
    let uses = kv
        .increment(&format!("oauth/state-used/{}", claims.nonce), 1)
        .map_err(ConsumeError::Storage)?;
    if uses != 1 {
        return Err(StateError::Reused.into());
    }
    Ok(claims)
}

/// A refused state, or the store failing while using it up.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Storage(ApiError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kv::MemoryKv;

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn org() -> OrgId {
        OrgId::parse("acme").unwrap()
    }

    #[test]
    fn a_state_verifies_once_within_ten_minutes() {
        let ring = Keyring::parse(K1).unwrap();
        let kv = MemoryKv::new();
        let (state, claims) = issue(&ring, &org(), Kind::Advertiser, None, 1000).unwrap();
        assert_eq!(verify(&ring, Some(&state), 1600).unwrap(), claims);
        assert_eq!(verify(&ring, Some(&state), 1601), Err(StateError::Expired));
        assert_eq!(consume(&kv, &ring, Some(&state), 1500).unwrap().org, "acme");
        assert!(matches!(
            consume(&kv, &ring, Some(&state), 1500),
            Err(ConsumeError::State(StateError::Reused))
        ));
    }

    #[test]
    fn edited_or_foreign_states_are_forged() {
        let ring = Keyring::parse(K1).unwrap();
        let (state, _) = issue(&ring, &org(), Kind::Advertiser, None, 0).unwrap();
        let (payload, mac) = state.split_once('.').unwrap();
        // Another org in the payload, with the original signature.
        let mut claims: StateClaims =
            serde_json::from_slice(&from_base64url(payload).unwrap()).unwrap();
        claims.org = "evil".into();
        let edited = format!("{}.{mac}", base64url(&serde_json::to_vec(&claims).unwrap()));
        assert_eq!(verify(&ring, Some(&edited), 1), Err(StateError::Forged));
        // Signed with a key this server does not have.
        let other = Keyring::parse(K2).unwrap();
        let (foreign, _) = issue(&other, &org(), Kind::Advertiser, None, 0).unwrap();
        assert_eq!(verify(&ring, Some(&foreign), 1), Err(StateError::Forged));
        for junk in ["x", "x.y", ".", &"a".repeat(5000), &format!("{payload}.")] {
            assert_eq!(
                verify(&ring, Some(junk), 1),
                Err(StateError::Forged),
                "{junk:.20}"
            );
        }
        assert_eq!(verify(&ring, None, 1), Err(StateError::Missing));
    }

    #[test]
    fn states_survive_a_vault_key_rotation() {
        let old = Keyring::parse(K1).unwrap();
        let (state, _) = issue(&old, &org(), Kind::Creator, Some("https://a/".into()), 0).unwrap();
        let rotated = Keyring::parse(&format!("{K2},{K1}")).unwrap();
        let claims = verify(&rotated, Some(&state), 1).unwrap();
        assert_eq!(
            (claims.kind, claims.return_url.as_deref()),
            (Kind::Creator, Some("https://a/"))
        );
    }
}
