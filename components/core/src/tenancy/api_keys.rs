//! An organization's API keys. A key is `tte_{org}_{key_id}_{secret}`; only the SHA-256
//! digest of the whole key is stored, under the organization it belongs to, and it is
//! shown once, when it is issued.

use crate::ApiError;
use crate::platform::crypto::{constant_time_eq, random_token, sha256_hex};
use crate::platform::env::Env;
use crate::platform::kv::{IdIndex, get_json, set_json};
use crate::tenancy::org_id::OrgId;
use crate::tenancy::organizations::{check_name, get_org};
use serde::{Deserialize, Serialize};

const KEY_PREFIX: &str = "tte";

/// An API key as listed: never the key itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKey {
    pub key_id: String,
    /// The non-secret start of the key, to recognise it: `tte_{org}_{key_id}`.
    pub prefix: String,
    pub name: String,
    pub created_at: i64,
    /// SHA-256 of the whole key, hex.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    digest: String,
}

fn api_key_key(org: &OrgId, key_id: &str) -> String {
    format!("{}apikeys/{key_id}", org.key_prefix())
}

fn api_key_index(org: &OrgId) -> String {
    format!("{}apikeys", org.key_prefix())
}

/// A new API key: the only time the whole key is available.
#[derive(Debug, Serialize)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub listed: ApiKey,
    pub key: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    pub name: Option<String>,
}

pub fn create_key(env: &Env, org: &OrgId, new: NewKey) -> Result<IssuedKey, ApiError> {
    get_org(env, org)?;
    let name = check_name(new.name.as_deref().unwrap_or("default"))?;
    let key_id = hex::encode(crate::platform::crypto::random_bytes::<8>()?);
    let prefix = format!("{KEY_PREFIX}_{org}_{key_id}");
    let key = format!("{prefix}_{}", random_token::<32>()?);
    let record = ApiKey {
        key_id: key_id.clone(),
        prefix,
        name,
        created_at: env.now,
        digest: sha256_hex(key.as_bytes()),
    };
    set_json(env.kv, &api_key_key(org, &key_id), &record)?;
    IdIndex::new(env.kv, api_key_index(org)).insert(&key_id)?;
    let mut listed = record;
    listed.digest.clear();
    Ok(IssuedKey { listed, key })
}

pub fn list_keys(env: &Env, org: &OrgId) -> Result<Vec<ApiKey>, ApiError> {
    let mut keys = Vec::new();
    for key_id in IdIndex::new(env.kv, api_key_index(org)).list()? {
        if let Some(mut key) = get_json::<ApiKey>(env.kv, &api_key_key(org, &key_id))? {
            key.digest.clear();
            keys.push(key);
        }
    }
    Ok(keys)
}

pub fn revoke_key(env: &Env, org: &OrgId, key_id: &str) -> Result<(), ApiError> {
    let key = api_key_key(org, key_id);
    if !key_id.bytes().all(|b| b.is_ascii_hexdigit()) || env.kv.get(&key)?.is_none() {
        return Err(ApiError::NotFound(format!(
            "API key {key_id} does not exist in {org}"
        )));
    }
    env.kv.delete(&key)?;
    IdIndex::new(env.kv, api_key_index(org)).remove(key_id)
}

/// The organization and key id of a valid key; `None` for anything else (malformed,
/// unknown, revoked or with the wrong secret), compared in constant time.
pub(super) fn verify(env: &Env, token: &str) -> Result<Option<(OrgId, String)>, ApiError> {
    let mut parts = token.splitn(4, '_');
    let (Some(KEY_PREFIX), Some(org), Some(key_id), Some(_secret)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let Ok(org) = OrgId::parse(org) else {
        return Ok(None);
    };
    if key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let Some(record) = get_json::<ApiKey>(env.kv, &api_key_key(&org, key_id))? else {
        return Ok(None);
    };
    let matches = constant_time_eq(
        record.digest.as_bytes(),
        sha256_hex(token.as_bytes()).as_bytes(),
    );
    Ok(matches.then(|| (org, key_id.to_string())))
}
