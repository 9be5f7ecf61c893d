//! An organization's TikTok connections: the advertiser accounts (and TikTok accounts
//! for Spark Ads) it authorized, their encrypted tokens, and the helper every component
//! uses to call TikTok for one of the organization's advertisers.
//!
//! Storage, all under `org/{org}/`:
//! - `connections/{id}`: the connection record (never a token);
//! - `connections`: the list of connection ids;
//! - `tokens/{id}`: the sealed tokens (see [`crate::tenancy::vault`]);
//! - `advertisers/{advertiser_id}`: which connection acts for that advertiser.
//!
//! And one deployment-wide index, `openid/{sha256(open_id)}`: the `{org}/{connection}`
//! pairs holding a TikTok account, so a webhook naming the account finds them.
//!
//! A failure while storing a connection undoes what was written (see [`store`]); readers
//! that find an advertiser mapping without its record treat the advertiser as not connected.

use crate::ApiError;
use crate::platform::crypto::random_bytes;
use crate::platform::env::Env;
use crate::platform::kv::{IdIndex, get_json, set_json, update_json};
use crate::tenancy::org_id::OrgId;
use crate::tenancy::vault;
use crate::tiktok::client::Call;
use crate::tiktok::codes::{CodeClass, TikTokError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What a connection authorizes (and an OAuth flow asks for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An advertiser account (Marketing API, tiktok-api.md §2).
    Advertiser,
    /// A TikTok account for Spark Ads (§2.1).
    Creator,
}

/// Whether a connection can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    /// TikTok refused the token (expired, revoked at TikTok, refresh failed): the
    /// advertiser or creator must authorize again.
    ReauthorizationRequired,
    /// Revoked through our API or a TikTok `authorization.removed` webhook; no token kept.
    Revoked,
}

/// One advertiser account a connection may act for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertiser {
    pub advertiser_id: String,
    pub name: String,
    pub currency: Option<String>,
    /// IANA time zone, e.g. `America/Los_Angeles`: reports are in this zone.
    pub timezone: Option<String>,
}

/// A stored authorization. Tokens live elsewhere, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub id: String,
    pub org: String,
    pub kind: Kind,
    pub status: Status,
    /// Advertiser accounts (advertiser connections).
    #[serde(default)]
    pub advertisers: Vec<Advertiser>,
    /// The TikTok account (creator connections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
    /// Permissions granted, as TikTok reports them.
    #[serde(default)]
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the access token expires (creator tokens; advertiser tokens do not expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<i64>,
    /// The last TikTok refusal for this connection, e.g. `40105: Access token is invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The sealed part of a connection.
#[derive(Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

fn record_key(org: &OrgId, id: &str) -> String {
    format!("{}connections/{id}", org.key_prefix())
}

fn index_key(org: &OrgId) -> String {
    format!("{}connections", org.key_prefix())
}

fn token_key(org: &OrgId, id: &str) -> String {
    format!("{}tokens/{id}", org.key_prefix())
}

fn open_id_key(open_id: &str) -> String {
    format!(
        "openid/{}",
        crate::platform::crypto::sha256_hex(open_id.as_bytes())
    )
}

/// The connections (of any organization) that hold the TikTok account `open_id`.
pub fn by_open_id(env: &Env, open_id: &str) -> Result<Vec<(OrgId, String)>, ApiError> {
    Ok(IdIndex::new(env.kv, open_id_key(open_id))
        .list()?
        .into_iter()
        .filter_map(|entry| {
            let (org, id) = entry.split_once('/')?;
            Some((OrgId::parse(org).ok()?, id.to_string()))
        })
        .collect())
}

pub(super) fn advertiser_key(org: &OrgId, advertiser_id: &str) -> String {
    format!("{}advertisers/{advertiser_id}", org.key_prefix())
}

/// A new connection id: `c_` and 16 hex digits.
pub fn new_id() -> Result<String, ApiError> {
    Ok(format!("c_{}", hex::encode(random_bytes::<8>()?)))
}

fn check_id(id: &str) -> Result<(), ApiError> {
    let ok =
        id.len() == 18 && id.starts_with("c_") && id[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "connection {id} does not exist"
        )))
    }
}

/// Stores a new connection: sealed tokens, the record, then the advertiser mappings
/// (which make it the connection that acts for those advertisers). On a failure part way,
/// what was written is removed and earlier mappings are put back, so a failed
/// re-authorization never breaks the connection that worked before.
pub fn store(
    env: &Env,
    org: &OrgId,
    connection: &Connection,
    tokens: &Tokens,
) -> Result<(), ApiError> {
    let keyring = env.keyring()?;
    let mut replaced: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut write = || -> Result<(), ApiError> {
        let sealed = serde_json::to_vec(tokens).expect("tokens serialize");
        vault::put_secret(env.kv, &keyring, &token_key(org, &connection.id), &sealed)?;
        set_json(env.kv, &record_key(org, &connection.id), connection)?;
        IdIndex::new(env.kv, index_key(org)).insert(&connection.id)?;
        if let Some(open_id) = &connection.open_id {
            IdIndex::new(env.kv, open_id_key(open_id)).insert(&format!(
                "{}/{}",
                org.as_str(),
                connection.id
            ))?;
        }
        for a in &connection.advertisers {
            let key = advertiser_key(org, &a.advertiser_id);
            replaced.push((key.clone(), env.kv.get(&key)?));
            env.kv.set(&key, connection.id.as_bytes())?;
        }
        Ok(())
    };
    let result = write();
    if result.is_err() {
        for (key, previous) in replaced.into_iter().rev() {
            let _ = match previous {
                Some(value) => env.kv.set(&key, &value),
                None => env.kv.delete(&key),
            };
        }
        let _ = env.kv.delete(&record_key(org, &connection.id));
        let _ = IdIndex::new(env.kv, index_key(org)).remove(&connection.id);
        if let Some(open_id) = &connection.open_id {
            let _ = IdIndex::new(env.kv, open_id_key(open_id)).remove(&format!(
                "{}/{}",
                org.as_str(),
                connection.id
            ));
        }
        let _ = vault::delete_secret(env.kv, &token_key(org, &connection.id));
    }
    result
}

pub fn get(env: &Env, org: &OrgId, id: &str) -> Result<Connection, ApiError> {
    check_id(id)?;
    get_json(env.kv, &record_key(org, id))?
        .ok_or_else(|| ApiError::NotFound(format!("connection {id} does not exist")))
}

pub fn list(env: &Env, org: &OrgId) -> Result<Vec<Connection>, ApiError> {
    let mut connections = Vec::new();
    for id in IdIndex::new(env.kv, index_key(org)).list()? {
        if let Some(c) = get_json(env.kv, &record_key(org, &id))? {
            connections.push(c);
        }
    }
    Ok(connections)
}

/// Changes a stored connection atomically.
pub fn update(
    env: &Env,
    org: &OrgId,
    id: &str,
    change: impl Fn(&mut Connection),
) -> Result<Connection, ApiError> {
    update_json(
        env.kv,
        &record_key(org, id),
        |current: Option<Connection>| {
            let mut c = current
                .ok_or_else(|| ApiError::NotFound(format!("connection {id} does not exist")))?;
            change(&mut c);
            c.updated_at = env.now;
            Ok((Some(c.clone()), c))
        },
    )
}

/// Records that TikTok refused the connection's token.
pub fn mark_reauthorization_required(
    env: &Env,
    org: &OrgId,
    id: &str,
    error: &TikTokError,
) -> Result<Connection, ApiError> {
    let message = format!("{}: {}", error.code, error.message);
    update(env, org, id, |c| {
        if c.status != Status::Revoked {
            c.status = Status::ReauthorizationRequired;
        }
        c.last_error = Some(message.clone());
    })
}

/// The decrypted tokens of a connection.
pub fn tokens(env: &Env, org: &OrgId, id: &str) -> Result<Tokens, ApiError> {
    let keyring = env.keyring()?;
    let bytes = vault::get_secret(env.kv, &keyring, &token_key(org, id))?.ok_or_else(|| {
        ApiError::Conflict(format!("connection {id} has no token; authorize again"))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|_| ApiError::Storage(format!("the token of connection {id} is unreadable")))
}

fn store_tokens(env: &Env, org: &OrgId, id: &str, tokens: &Tokens) -> Result<(), ApiError> {
    let sealed = serde_json::to_vec(tokens).expect("tokens serialize");
    vault::put_secret(env.kv, &env.keyring()?, &token_key(org, id), &sealed)
}

/// Deletes the token and marks the connection revoked (its advertisers are released).
pub fn forget(env: &Env, org: &OrgId, id: &str, reason: &str) -> Result<Connection, ApiError> {
    vault::delete_secret(env.kv, &token_key(org, id))?;
    let c = update(env, org, id, |c| {
        c.status = Status::Revoked;
        c.last_error = Some(reason.to_string());
    })?;
    for a in &c.advertisers {
        let key = advertiser_key(org, &a.advertiser_id);
        if env.kv.get(&key)?.as_deref() == Some(id.as_bytes()) {
            env.kv.delete(&key)?;
        }
    }
    Ok(c)
}

/// Revokes the connection at TikTok, then deletes its token. If TikTok cannot be reached
/// the token is kept (the call can be repeated); a token TikTok already considers invalid
/// is deleted too.
pub fn revoke(env: &Env, org: &OrgId, id: &str) -> Result<Connection, ApiError> {
    let c = get(env, org, id)?;
    if c.status == Status::Revoked {
        return Ok(c);
    }
    let tokens = tokens(env, org, id)?;
    let (app_id, secret) = env.app_credentials()?;
    let call = match c.kind {
        Kind::Advertiser => Call::post(
            "/oauth2/revoke_token/",
            json!({"app_id": app_id, "secret": secret, "access_token": tokens.access_token}),
        )
        .token(&tokens.access_token),
        Kind::Creator => Call::post(
            "/tt_user/oauth2/revoke/",
            json!({"client_id": app_id, "client_secret": secret, "access_token": tokens.access_token}),
        ),
    };
    match env.tiktok()?.call(&call) {
        Ok(_) => {}
        Err(e) if e.class() == CodeClass::Reauthorize => {}
        Err(e) => return Err(e.into()),
    }
    forget(env, org, id, "revoked through the API")
}

/// The outcome of a connection check.
#[derive(Debug, Serialize)]
pub struct CheckResult {
    pub connection: Connection,
    pub token_valid: bool,
}

/// Asks TikTok whether the token still works; 40105/40102 → `reauthorization_required`.
pub fn check(env: &Env, org: &OrgId, id: &str) -> Result<CheckResult, ApiError> {
    let c = get(env, org, id)?;
    if c.status == Status::Revoked {
        return Ok(CheckResult {
            connection: c,
            token_valid: false,
        });
    }
    let tokens = tokens(env, org, id)?;
    let result = match c.kind {
        Kind::Advertiser => {
            let (app_id, secret) = env.app_credentials()?;
            env.tiktok()?
                .call(
                    &Call::get("/oauth2/advertiser/get/")
                        .query("app_id", app_id)
                        .query("secret", secret)
                        .token(&tokens.access_token),
                )
                .map(|_| ())
        }
        // Creator tokens are checked by their recorded expiry; refreshing renews them.
        Kind::Creator => match c.refresh_expires_at {
            Some(t) if t <= env.now => Err(TikTokError {
                code: 40103,
                message: "the refresh token has expired".into(),
                request_id: String::new(),
            }),
            _ => Ok(()),
        },
    };
    match result {
        Ok(()) => {
            let connection = update(env, org, id, |c| {
                c.status = Status::Active;
                c.last_checked_at = Some(env.now);
                c.last_error = None;
            })?;
            Ok(CheckResult {
                connection,
                token_valid: true,
            })
        }
        Err(e) if e.class() == CodeClass::Reauthorize => {
            let connection = mark_reauthorization_required(env, org, id, &e)?;
            update(env, org, id, |c| c.last_checked_at = Some(env.now))?;
            Ok(CheckResult {
                connection: Connection {
                    last_checked_at: Some(env.now),
                    ..connection
                },
                token_valid: false,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Stores refreshed creator tokens and their expiry.
pub fn save_refreshed(
    env: &Env,
    org: &OrgId,
    id: &str,
    tokens: &Tokens,
    access_expires_at: Option<i64>,
    refresh_expires_at: Option<i64>,
) -> Result<Connection, ApiError> {
    store_tokens(env, org, id, tokens)?;
    update(env, org, id, |c| {
        c.status = Status::Active;
        c.access_expires_at = access_expires_at;
        if refresh_expires_at.is_some() {
            c.refresh_expires_at = refresh_expires_at;
        }
        c.last_error = None;
    })
}

/// A TikTok account's token, for Spark Ads calls as that creator.
pub fn creator_access_token(
    env: &Env,
    org: &OrgId,
    id: &str,
) -> Result<(Connection, String), ApiError> {
    let c = get(env, org, id)?;
    if c.kind != Kind::Creator {
        return Err(ApiError::invalid(
            "connection_id",
            "is not a TikTok account connection",
        ));
    }
    if c.status != Status::Active {
        return Err(ApiError::Conflict(format!(
            "connection {id} needs re-authorization"
        )));
    }
    let token = tokens(env, org, id)?.access_token;
    Ok((c, token))
}

/// Fixtures other modules' tests build on.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::tenancy::advertiser_access::AdvertiserAccess;
    use crate::testing::TestEnv;

    /// Stores an active creator connection of `org` holding TikTok account `open_id`;
    /// returns its id and the org.
    pub fn creator_connection(t: &TestEnv, org: &str, open_id: &str) -> (String, OrgId) {
        let org = OrgId::parse(org).unwrap();
        let env = t.env();
        let c = Connection {
            id: new_id().unwrap(),
            org: org.as_str().to_string(),
            kind: Kind::Creator,
            status: Status::Active,
            advertisers: Vec::new(),
            open_id: Some(open_id.to_string()),
            scopes: Vec::new(),
            created_at: env.now,
            updated_at: env.now,
            access_expires_at: Some(env.now + 86_400),
            refresh_expires_at: Some(env.now + 365 * 86_400),
            last_checked_at: None,
            last_error: None,
        };
        let tokens = Tokens {
            access_token: format!("cat.{open_id}"),
            refresh_token: Some(format!("crt.{open_id}")),
        };
        store(&env, &org, &c, &tokens).unwrap();
        (c.id, org)
    }

    /// An org `org` with a key and an active connection for advertiser `111` (UTC),
    /// loaded as [`AdvertiserAccess`]: what calls made for an advertiser need.
    pub fn advertiser_access(t: &TestEnv, org: &str) -> AdvertiserAccess {
        crate::tenancy::organizations::tests::org_with_key(t, org);
        advertiser_connection(t, org, &[("111", "UTC")]);
        AdvertiserAccess::load(&t.env(), &OrgId::parse(org).unwrap(), "111").unwrap()
    }

    /// Stores an active advertiser connection of `org` for `(advertiser_id, time zone)`s
    /// with token `act.test`; returns its id.
    pub fn advertiser_connection(t: &TestEnv, org: &str, advertisers: &[(&str, &str)]) -> String {
        let org = OrgId::parse(org).unwrap();
        let env = t.env();
        let c = Connection {
            id: new_id().unwrap(),
            org: org.as_str().to_string(),
            kind: Kind::Advertiser,
            status: Status::Active,
            advertisers: advertisers
                .iter()
                .map(|(id, tz)| Advertiser {
                    advertiser_id: id.to_string(),
                    name: format!("Advertiser {id}"),
                    currency: Some("USD".into()),
                    timezone: Some(tz.to_string()),
                })
                .collect(),
            open_id: None,
            scopes: Vec::new(),
            created_at: env.now,
            updated_at: env.now,
            access_expires_at: None,
            refresh_expires_at: None,
            last_checked_at: None,
            last_error: None,
        };
        let tokens = Tokens {
            access_token: "act.test".into(),
            refresh_token: None,
        };
        store(&env, &org, &c, &tokens).unwrap();
        c.id
    }

    #[test]
    fn creator_connections_are_found_by_open_id_across_orgs() {
        let t = TestEnv::new();
        let (a, org_a) = creator_connection(&t, "org-a", "open-1");
        let (b, org_b) = creator_connection(&t, "org-b", "open-1");
        creator_connection(&t, "org-b", "open-2");
        let mut found = by_open_id(&t.env(), "open-1").unwrap();
        found.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        assert_eq!(found, [(org_a, a), (org_b, b)]);
        assert!(by_open_id(&t.env(), "open-3").unwrap().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::advertiser_access::AdvertiserAccess;
    use crate::testing::{FlakyKv, TestEnv};

    fn connection(id: &str, advertisers: &[&str]) -> Connection {
        Connection {
            id: id.into(),
            org: "acme".into(),
            kind: Kind::Advertiser,
            status: Status::Active,
            advertisers: advertisers
                .iter()
                .map(|a| Advertiser {
                    advertiser_id: a.to_string(),
                    name: a.to_string(),
                    currency: None,
                    timezone: None,
                })
                .collect(),
            open_id: None,
            scopes: vec![],
            created_at: 0,
            updated_at: 0,
            access_expires_at: None,
            refresh_expires_at: None,
            last_checked_at: None,
            last_error: None,
        }
    }

    #[test]
    fn a_failed_reauthorization_keeps_the_connection_that_worked() {
        let t = TestEnv::new();
        let kv = FlakyKv::default();
        let env = Env { kv: &kv, ..t.env() };
        let org = OrgId::parse("acme").unwrap();
        let token = |t: &str| Tokens {
            access_token: t.into(),
            refresh_token: None,
        };
        store(
            &env,
            &org,
            &connection("c_0000000000000001", &["111"]),
            &token("one"),
        )
        .unwrap();
        kv.fail_on("advertisers/222");
        let e = store(
            &env,
            &org,
            &connection("c_0000000000000002", &["111", "222"]),
            &token("two"),
        );
        assert_eq!(e.unwrap_err().status(), 503);
        let access = AdvertiserAccess::load(&env, &org, "111").unwrap();
        assert_eq!(access.connection_id, "c_0000000000000001");
        assert_eq!(list(&env, &org).unwrap().len(), 1);
        assert!(
            kv.inner
                .dump()
                .iter()
                .all(|(k, _)| !k.ends_with("c_0000000000000002"))
        );
    }
}
