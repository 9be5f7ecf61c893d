//! Stored deliveries: their record and key layout, counters, listings and lookups.

use crate::ApiError;
use crate::platform::env::Env;
use crate::platform::kv::{IdIndex, KeyValue, get_json};
use crate::tenancy::org_id::OrgId;
use crate::webhooks::apps::{WebhookApp, apps};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stored and acknowledged; processing has not finished.
    Received,
    Processed,
    /// Processing failed for good (or too often); listed and replayable.
    Dead,
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub app: String,
    /// Position in the app's arrival log.
    pub seq: u64,
    pub status: Status,
    pub received_at: i64,
    /// The signature's timestamp.
    pub signed_at: i64,
    /// The exact body, when it is UTF-8 (almost always: TikTok sends JSON) ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body: Option<String>,
    /// ... else base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_body_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_openid: Option<String>,
    /// `content`, parsed from the JSON string TikTok puts it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    /// Why the body or its `content` could not be parsed, when so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_error: Option<String>,
    /// Repeated deliveries of the same event answered `duplicate: true`.
    #[serde(default)]
    pub duplicates: u32,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<i64>,
    /// What processing did, e.g. the connections it revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Organizations this delivery concerns (through their connections).
    #[serde(default)]
    pub orgs: Vec<String>,
}

pub(super) fn key(app: &str, rest: &str) -> String {
    format!("wh/{app}/{rest}")
}

pub(super) fn record_key(app: &str, id: &str) -> String {
    key(app, &format!("d/{id}"))
}

pub(super) fn log_key(app: &str, seq: u64) -> String {
    key(app, &format!("log/{seq:020}"))
}

/// Counters kept per app.
pub mod stat {
    pub const RECEIVED: &str = "received";
    pub const DUPLICATE: &str = "duplicate";
    pub const PROCESSED: &str = "processed";
    pub const DEAD: &str = "dead";
    pub const TOO_LARGE: &str = "too_large";
    pub const ALL: [&str; 9] = [
        RECEIVED,
        DUPLICATE,
        PROCESSED,
        DEAD,
        TOO_LARGE,
        "missing_signature",
        "malformed_signature",
        "signature_mismatch",
        "timestamp_outside_tolerance",
    ];
}

pub(super) fn count(kv: &dyn KeyValue, app: &str, name: &str, delta: i64) -> Result<(), ApiError> {
    kv.increment(&key(app, &format!("stats/{name}")), delta)
        .map(drop)
}

/// How far processing of one app's log got.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Head {
    pub(super) next: u64,
}

pub(super) fn org_log_key(org: &OrgId, n: u64) -> String {
    format!("{}wh/log/{n:020}", org.key_prefix())
}

/// Filters for listings.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub event: Option<String>,
    pub status: Option<Status>,
    /// Received at or after (Unix seconds).
    pub since: Option<i64>,
    /// Received before (Unix seconds).
    pub until: Option<i64>,
    /// Start below this log position (from a previous page's `next_cursor`).
    pub cursor: Option<u64>,
    pub limit: usize,
}

impl Filter {
    fn accepts(&self, d: &Delivery) -> bool {
        self.event
            .as_ref()
            .is_none_or(|e| d.event.as_ref() == Some(e))
            && self.status.is_none_or(|s| d.status == s)
            && self.since.is_none_or(|s| d.received_at >= s)
            && self.until.is_none_or(|u| d.received_at < u)
    }
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize)]
pub struct Page {
    pub deliveries: Vec<Delivery>,
    /// Pass as `cursor` for older deliveries; absent at the end.
    pub next_cursor: Option<u64>,
}

/// Log entries read per listing request at most, matching or not.
const SCAN_LIMIT: u64 = 5_000;

/// Walks a log backwards from `top`, loading entries with `load`.
fn page(
    env: &Env,
    top: u64,
    filter: &Filter,
    slot_key: impl Fn(u64) -> String,
    load: impl Fn(&[u8]) -> Result<Option<Delivery>, ApiError>,
) -> Result<Page, ApiError> {
    let limit = filter.limit.clamp(1, 200);
    let mut out = Vec::new();
    let mut n = filter.cursor.map_or(top, |c| c.saturating_sub(1).min(top));
    let floor = n.saturating_sub(SCAN_LIMIT);
    while n > floor && out.len() < limit {
        let from = n.saturating_sub(100).max(floor) + 1;
        let keys: Vec<String> = (from..=n).rev().map(&slot_key).collect();
        let values = env.kv.get_many(&keys)?;
        for (slot, v) in (from..=n).rev().zip(values) {
            n = slot - 1;
            let Some(v) = v.filter(|v| !v.is_empty()) else {
                continue;
            };
            if let Some(d) = load(&v)? {
                if filter.since.is_some_and(|s| d.received_at < s) {
                    // The log is in arrival order: nothing older can match.
                    return Ok(Page {
                        deliveries: out,
                        next_cursor: None,
                    });
                }
                if filter.accepts(&d) {
                    out.push(d);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
    }
    Ok(Page {
        deliveries: out,
        next_cursor: (n > 0).then_some(n + 1),
    })
}

/// An app's deliveries (admin).
pub fn list_app(env: &Env, app: &WebhookApp, filter: &Filter) -> Result<Page, ApiError> {
    let top = env.kv.increment(&key(&app.name, "seq"), 0)?.max(0) as u64;
    page(
        env,
        top,
        filter,
        |n| log_key(&app.name, n),
        |id| {
            let d =
                get_json::<Delivery>(env.kv, &record_key(&app.name, &String::from_utf8_lossy(id)))?;
            // Logged again at a later slot: listed there.
            Ok(d)
        },
    )
    .map(|mut p| {
        let mut seen = std::collections::HashSet::new();
        p.deliveries.retain(|d| seen.insert(d.id.clone()));
        p
    })
}

/// The deliveries that concern an organization.
pub fn list_org(env: &Env, org: &OrgId, filter: &Filter) -> Result<Page, ApiError> {
    let top = env
        .kv
        .increment(&format!("{}wh/seq", org.key_prefix()), 0)?
        .max(0) as u64;
    page(
        env,
        top,
        filter,
        |n| org_log_key(org, n),
        |entry| {
            let entry = String::from_utf8_lossy(entry);
            let Some((app, id)) = entry.split_once('/') else {
                return Ok(None);
            };
            get_json::<Delivery>(env.kv, &record_key(app, id))
        },
    )
}

fn check_id(id: &str) -> Result<(), ApiError> {
    let ok =
        id.len() == 35 && id.starts_with("wh_") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("delivery {id} does not exist")))
    }
}

pub fn get_app_delivery(env: &Env, app: &WebhookApp, id: &str) -> Result<Delivery, ApiError> {
    check_id(id)?;
    get_json(env.kv, &record_key(&app.name, id))?
        .ok_or_else(|| ApiError::NotFound(format!("delivery {id} does not exist")))
}

/// A delivery, if it concerns `org` (whatever app it came through).
pub fn get_org_delivery(env: &Env, org: &OrgId, id: &str) -> Result<Delivery, ApiError> {
    check_id(id)?;
    for app in apps(env)? {
        if let Some(d) = get_json::<Delivery>(env.kv, &record_key(&app.name, id))?
            && d.orgs.iter().any(|o| o == org.as_str())
        {
            return Ok(d);
        }
    }
    Err(ApiError::NotFound(format!("delivery {id} does not exist")))
}

/// An app's counters.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub app: String,
    pub counters: serde_json::Map<String, Value>,
    /// Logged deliveries not processed yet.
    pub pending: u64,
    pub dead_letters: usize,
}

pub fn stats(env: &Env, app: &WebhookApp) -> Result<Stats, ApiError> {
    let mut counters = serde_json::Map::new();
    for name in stat::ALL {
        let v = env
            .kv
            .increment(&key(&app.name, &format!("stats/{name}")), 0)?;
        counters.insert(name.to_string(), json!(v));
    }
    let tail = env.kv.increment(&key(&app.name, "seq"), 0)?.max(0) as u64;
    let next = get_json::<Head>(env.kv, &key(&app.name, "head"))?.map_or(1, |h| h.next);
    Ok(Stats {
        app: app.name.clone(),
        counters,
        pending: (tail + 1).saturating_sub(next),
        dead_letters: IdIndex::new(env.kv, key(&app.name, "dead")).list()?.len(),
    })
}
