//! TikTok webhooks (tiktok-api.md §8): signature verification, durable storage before
//! the 200, and idempotent processing from the store.
//!
//! Threat model: the receiving URL is public, so anyone can post anything to it, and
//! TikTok itself delivers at least once, re-signing every retry for up to 72 h. So:
//! - nothing is stored or counted per delivery before its signature verifies (only a
//!   per-app rejection counter moves), and unknown app names touch no app keys;
//! - the signature is checked over the exact raw bytes, in constant time, against every
//!   active secret of the app (two during a rotation), then the timestamp window;
//! - a delivery is identified by what it says (client_key, event, create_time,
//!   user_openid, content), not by its signature, so a retry that TikTok re-signed is a
//!   duplicate too, and one answered `duplicate: true` is never processed twice.
//!
//! Layout (per app, under `wh/{app}/`):
//! - `d/{id}`: the delivery record (raw body, parsed form, status, outcome);
//! - `seq`, `log/{n}`: the arrival log, which processing and listings walk;
//! - `head`: how far processing got; `lease`: who is processing (see [`crate::lease`]);
//! - `seen`: when the log's tail was seen where, to tell dead receivers' empty slots
//!   (see [`crate::gap`]);
//! - `dead`: ids of deliveries that failed to process; `stats/{name}`: counters.
//!
//! Deliveries are attributed to organizations while being processed (through the
//! TikTok accounts their connections hold); each organization has its own log of them
//! under `org/{org}/wh/`.

use crate::ApiError;
use crate::connections;
use crate::crypto::{constant_time_eq, hmac_sha256, random_token, sha256_hex};
use crate::env::Env;
use crate::gap;
use crate::kv::{IdIndex, KeyValue, create_json, get_json, set_json};
use crate::lease;
use crate::org::OrgId;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Extra apps and their secrets: `name:secret[:previous-secret],other:secret`. The
/// deployment's own app (`tiktok_app_id`, `tiktok_app_secret`) is always configured; an
/// entry with its name adds secrets to it (rotation).
pub const APPS_VARIABLE: &str = "webhook_apps";
/// Largest accepted gap between the signature's timestamp and now, in seconds.
pub const TOLERANCE_VARIABLE: &str = "webhook_tolerance_seconds";
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;
/// Largest accepted body, in bytes.
pub const MAX_BODY_VARIABLE: &str = "webhook_max_body_bytes";
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// A `TikTok-Signature` header longer than this is refused unread.
const MAX_HEADER_LEN: usize = 1024;
/// Processing attempts before a delivery goes to the dead letters.
pub const MAX_ATTEMPTS: u32 = 5;
const LEASE_SECS: i64 = 30;
/// An empty log slot older than this is a receiver that died before answering.
const GAP_SECS: i64 = 30;
/// Deliveries one processing run handles per app.
const PER_RUN: u64 = 500;

/// A configured app: its name in the URL and its active secrets.
#[derive(Clone)]
pub struct WebhookApp {
    pub name: String,
    secrets: Vec<String>,
}

impl std::fmt::Debug for WebhookApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebhookApp({}, {} secrets)",
            self.name,
            self.secrets.len()
        )
    }
}

fn valid_app_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Every configured app, the deployment's own first.
pub fn apps(env: &Env) -> Result<Vec<WebhookApp>, ApiError> {
    let mut apps: Vec<WebhookApp> = Vec::new();
    let mut add = |name: &str, secret: &str| -> Result<(), ApiError> {
        if !valid_app_name(name) {
            return Err(ApiError::Internal(format!(
                "variable {APPS_VARIABLE}: app name {name:?} must be 1-64 letters, digits, '-', '_' or '.'"
            )));
        }
        if secret.is_empty() {
            return Err(ApiError::Internal(format!(
                "variable {APPS_VARIABLE}: app {name} has an empty secret"
            )));
        }
        match apps.iter_mut().find(|a| a.name == name) {
            Some(a) if !a.secrets.iter().any(|s| s == secret) => a.secrets.push(secret.into()),
            Some(_) => {}
            None => apps.push(WebhookApp {
                name: name.into(),
                secrets: vec![secret.into()],
            }),
        }
        Ok(())
    };
    if let (Some(id), Some(secret)) = (
        env.var(crate::env::vars::APP_ID)?,
        env.var(crate::env::vars::APP_SECRET)?,
    ) {
        add(&id, &secret)?;
    }
    for entry in env.var(APPS_VARIABLE)?.unwrap_or_default().split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let mut parts = entry.split(':');
        let name = parts.next().unwrap_or_default().trim();
        let mut any = false;
        for secret in parts {
            add(name, secret.trim())?;
            any = true;
        }
        if !any {
            return Err(ApiError::Internal(format!(
                "variable {APPS_VARIABLE}: entry for {name:?} has no secret (name:secret[:secret])"
            )));
        }
    }
    Ok(apps)
}

/// The app named in a webhook URL; 404 when it is not configured.
pub fn app(env: &Env, name: &str) -> Result<WebhookApp, ApiError> {
    apps(env)?
        .into_iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no webhook app named {name:?}")))
}

pub fn tolerance_secs(env: &Env) -> Result<i64, ApiError> {
    env.int_var(TOLERANCE_VARIABLE, DEFAULT_TOLERANCE_SECS, 1..=86_400)
}

pub fn max_body(env: &Env) -> Result<usize, ApiError> {
    Ok(env.int_var(MAX_BODY_VARIABLE, DEFAULT_MAX_BODY as i64, 1..=1 << 20)? as usize)
}

/// Why a delivery was refused before anything was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingHeader,
    MalformedHeader(&'static str),
    SignatureMismatch,
    /// `|now - t|` is over the tolerance; the signature itself verified.
    OutsideTolerance,
}

impl Rejection {
    /// The counter (and `error.reason`) for this rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingHeader => "missing_signature",
            Rejection::MalformedHeader(_) => "malformed_signature",
            Rejection::SignatureMismatch => "signature_mismatch",
            Rejection::OutsideTolerance => "timestamp_outside_tolerance",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Rejection::MissingHeader => "the TikTok-Signature header is missing".into(),
            Rejection::MalformedHeader(why) => {
                format!("the TikTok-Signature header is malformed: {why}")
            }
            Rejection::SignatureMismatch => {
                "the signature does not match the body under any of the app's secrets".into()
            }
            Rejection::OutsideTolerance => {
                "the signature's timestamp is outside the accepted window".into()
            }
        }
    }
}

/// The parsed `TikTok-Signature: t=…,s=…` header.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub t: i64,
    /// One or more candidate signatures (32 bytes each).
    pub signatures: Vec<[u8; 32]>,
}

/// Splits on `,` then on the first `=`, in any order; unknown elements are ignored (the
/// scheme may grow), `t` must appear once, `s` at least once.
pub fn parse_header(value: &str) -> Result<SignatureHeader, Rejection> {
    if value.len() > MAX_HEADER_LEN {
        return Err(Rejection::MalformedHeader("longer than 1024 bytes"));
    }
    let mut t = None;
    let mut signatures = Vec::new();
    for element in value.split(',') {
        let Some((name, v)) = element.trim().split_once('=') else {
            continue;
        };
        match name.trim() {
            "t" => {
                if t.is_some() {
                    return Err(Rejection::MalformedHeader("more than one t"));
                }
                let v = v.trim();
                if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Rejection::MalformedHeader("t is not Unix seconds"));
                }
                t = Some(v.parse::<i64>().expect("at most 12 digits"));
            }
            "s" => {
                let mut sig = [0u8; 32];
                hex::decode_to_slice(v.trim(), &mut sig)
                    .map_err(|_| Rejection::MalformedHeader("s is not 64 hex digits"))?;
                if signatures.len() < 4 {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(Rejection::MalformedHeader("no t element"))?;
    if signatures.is_empty() {
        return Err(Rejection::MalformedHeader("no s element"));
    }
    Ok(SignatureHeader { t, signatures })
}

/// `hex(HMAC-SHA256(secret, t + "." + body))`, what TikTok sends as `s`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut payload = format!("{t}.").into_bytes();
    payload.extend_from_slice(body);
    hex::encode(hmac_sha256(secret.as_bytes(), &payload))
}

/// Checks a delivery: the header, the signature under any of `secrets` (constant time,
/// every candidate compared), then `|now - t| <= tolerance`. Returns `t`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now: i64,
    tolerance: i64,
) -> Result<i64, Rejection> {
    let header = parse_header(header.ok_or(Rejection::MissingHeader)?)?;
    let mut payload = format!("{}.", header.t).into_bytes();
    payload.extend_from_slice(body);
    let mut matched = false;
    for secret in secrets {
        let expected = hmac_sha256(secret.as_bytes(), &payload);
        for candidate in &header.signatures {
            matched |= constant_time_eq(&expected, candidate);
        }
    }
    if !matched {
        return Err(Rejection::SignatureMismatch);
    }
    if (now - header.t).abs() > tolerance {
        return Err(Rejection::OutsideTolerance);
    }
    Ok(header.t)
}

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

/// The parsed form of a body, and the identity that makes retries duplicates.
struct Parsed {
    event: Option<String>,
    client_key: Option<String>,
    create_time: Option<i64>,
    user_openid: Option<String>,
    content: Option<Value>,
    parse_error: Option<String>,
    identity: String,
}

fn parse_body(app: &str, body: &[u8]) -> Parsed {
    let mut p = Parsed {
        event: None,
        client_key: None,
        create_time: None,
        user_openid: None,
        content: None,
        parse_error: None,
        identity: String::new(),
    };
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            p.parse_error = Some("the body is JSON but not an object".into());
            p.identity = sha256_hex(&[app.as_bytes(), b"\0raw\0", body].concat());
            return p;
        }
        Err(e) => {
            p.parse_error = Some(format!("the body is not JSON: {e}"));
            p.identity = sha256_hex(&[app.as_bytes(), b"\0raw\0", body].concat());
            return p;
        }
    };
    let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_string);
    p.event = text("event");
    p.client_key = text("client_key");
    p.user_openid = text("user_openid");
    p.create_time = object.get("create_time").and_then(Value::as_i64);
    let content_text = match object.get("content") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => {
                p.content = Some(v);
                s.clone()
            }
            Err(e) => {
                p.parse_error = Some(format!("content is not JSON: {e}"));
                s.clone()
            }
        },
        // Some senders put the object in directly; keep it as it is.
        Some(other) => {
            p.content = Some(other.clone());
            other.to_string()
        }
        None => String::new(),
    };
    if p.event.is_none() {
        p.parse_error = Some("the body has no event".into());
    }
    let identity = json!([
        app,
        p.client_key,
        p.event,
        p.create_time,
        p.user_openid,
        content_text
    ]);
    p.identity = sha256_hex(identity.to_string().as_bytes());
    p
}

fn key(app: &str, rest: &str) -> String {
    format!("wh/{app}/{rest}")
}

fn record_key(app: &str, id: &str) -> String {
    key(app, &format!("d/{id}"))
}

fn log_key(app: &str, seq: u64) -> String {
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

fn count(kv: &dyn KeyValue, app: &str, name: &str, delta: i64) -> Result<(), ApiError> {
    kv.increment(&key(app, &format!("stats/{name}")), delta)
        .map(drop)
}

/// What `POST /webhooks/tiktok/{app}` answers.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Receipt {
    pub received: bool,
    pub duplicate: bool,
    pub id: String,
}

/// A refused delivery: 401 with the reason, nothing stored, a counter moved.
pub fn reject(env: &Env, app: &WebhookApp, why: Rejection) -> ApiError {
    if let Err(e) = count(env.kv, &app.name, why.code(), 1) {
        return e;
    }
    ApiError::Unauthorized(why.message())
}

/// Verifies and stores one delivery; answers only once it is stored.
pub fn receive(
    env: &Env,
    app: &WebhookApp,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Receipt, ApiError> {
    let limit = max_body(env)?;
    if body.len() > limit {
        count(env.kv, &app.name, stat::TOO_LARGE, 1)?;
        return Err(ApiError::PayloadTooLarge(limit as u64));
    }
    let signed_at = verify(signature, body, &app.secrets, env.now, tolerance_secs(env)?)
        .map_err(|why| reject(env, app, why))?;
    let parsed = parse_body(&app.name, body);
    let id = format!("wh_{}", &parsed.identity[..32]);
    let rkey = record_key(&app.name, &id);

    if let Some(existing) = get_json::<Delivery>(env.kv, &rkey)? {
        return duplicate(env, app, existing);
    }
    let seq = env.kv.increment(&key(&app.name, "seq"), 1)? as u64;
    let (raw_body, raw_body_base64) = match std::str::from_utf8(body) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    };
    let delivery = Delivery {
        id: id.clone(),
        app: app.name.clone(),
        seq,
        status: Status::Received,
        received_at: env.now,
        signed_at,
        raw_body,
        raw_body_base64,
        event: parsed.event,
        client_key: parsed.client_key,
        create_time: parsed.create_time,
        user_openid: parsed.user_openid,
        content: parsed.content,
        parse_error: parsed.parse_error,
        duplicates: 0,
        attempts: 0,
        processed_at: None,
        outcome: None,
        error: None,
        orgs: Vec::new(),
    };
    if !create_json(env.kv, &rkey, &delivery)? {
        // The same delivery, arriving twice at once: the other request stored it. Our
        // log slot stays empty; processing skips it.
        env.kv.set(&log_key(&app.name, seq), b"")?;
        let existing = get_json::<Delivery>(env.kv, &rkey)?
            .ok_or_else(|| ApiError::Storage("a delivery vanished while stored".into()))?;
        return duplicate(env, app, existing);
    }
    env.kv.set(&log_key(&app.name, seq), id.as_bytes())?;
    count(env.kv, &app.name, stat::RECEIVED, 1)?;
    Ok(Receipt {
        received: true,
        duplicate: false,
        id,
    })
}

/// A delivery stored before. If it was never logged (the receiver died between storing
/// and logging, so it was never acknowledged), it is logged now, so it is processed.
fn duplicate(env: &Env, app: &WebhookApp, mut existing: Delivery) -> Result<Receipt, ApiError> {
    count(env.kv, &app.name, stat::DUPLICATE, 1)?;
    if existing.status == Status::Received {
        let logged = env.kv.get(&log_key(&app.name, existing.seq))?;
        if logged.as_deref() != Some(existing.id.as_bytes()) {
            existing.seq = env.kv.increment(&key(&app.name, "seq"), 1)? as u64;
            set_json(env.kv, &record_key(&app.name, &existing.id), &existing)?;
            env.kv
                .set(&log_key(&app.name, existing.seq), existing.id.as_bytes())?;
        }
    }
    crate::kv::update_json(
        env.kv,
        &record_key(&app.name, &existing.id),
        |d: Option<Delivery>| {
            Ok(match d {
                Some(mut d) => {
                    d.duplicates = d.duplicates.saturating_add(1);
                    (Some(d), ())
                }
                None => (None, ()),
            })
        },
    )?;
    Ok(Receipt {
        received: true,
        duplicate: true,
        id: existing.id,
    })
}

/// How far processing of one app's log got.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Head {
    next: u64,
}

/// What one processing run did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ProcessReport {
    pub apps: usize,
    pub processed: usize,
    /// Failed this time; tried again on a later run.
    pub retrying: usize,
    pub dead: usize,
    /// Apps skipped because another run holds their lease.
    pub busy: usize,
}

/// Processes stored deliveries of every app, oldest first. Safe to run concurrently
/// (a lease per app) and after a crash (a delivery's effects are idempotent and its
/// status is set only after them).
pub fn process(env: &Env) -> Result<ProcessReport, ApiError> {
    let mut report = ProcessReport::default();
    let owner = random_token::<12>()?;
    for app in apps(env)? {
        report.apps += 1;
        // Noted before the lease, so the wait for receivers that died runs even while a
        // run that died with them still holds it (see `crate::gap`).
        let tail = env.kv.increment(&key(&app.name, "seq"), 0)?.max(0) as u64;
        let skippable = gap::note_tail(env.kv, &key(&app.name, "seen"), env.now, tail, GAP_SECS)?;
        let lease_key = key(&app.name, "lease");
        if !lease::take(env.kv, &lease_key, &owner, env.now, LEASE_SECS)? {
            report.busy += 1;
            continue;
        }
        let result = process_app(env, &app.name, tail, skippable, &mut report);
        lease::release(env.kv, &lease_key, &owner)?;
        result?;
    }
    Ok(report)
}

/// Processes the log's slots from the head up to `tail`; an empty slot is skipped when
/// it is at most `skippable`.
fn process_app(
    env: &Env,
    app: &str,
    tail: u64,
    skippable: Option<u64>,
    report: &mut ProcessReport,
) -> Result<(), ApiError> {
    let head_key = key(app, "head");
    let mut head = get_json::<Head>(env.kv, &head_key)?.unwrap_or(Head { next: 1 });
    let last = tail.min(head.next + PER_RUN - 1);
    if head.next > last {
        return Ok(());
    }
    let slots: Vec<String> = (head.next..=last).map(|n| log_key(app, n)).collect();
    let ids = env.kv.get_many(&slots)?;
    for (n, id) in (head.next..=last).zip(ids) {
        match id {
            // A receiver between taking the slot and logging: wait for it, unless the slot
            // was handed out so long ago that the receiver must have died (unanswered, so
            // TikTok sends the delivery again and it gets a new slot).
            None if skippable.is_none_or(|s| n > s) => break,
            None => {}
            Some(id) if id.is_empty() => {}
            Some(id) => {
                let id = String::from_utf8_lossy(&id).into_owned();
                match process_one(env, app, &id, n)? {
                    Some(Status::Processed) => report.processed += 1,
                    Some(Status::Dead) => report.dead += 1,
                    Some(Status::Received) => {
                        report.retrying += 1;
                        break;
                    }
                    None => {}
                }
            }
        }
        head.next = n + 1;
    }
    set_json(env.kv, &head_key, &head)
}

/// Processes the delivery logged at `slot`; `None` when there was nothing to do (already
/// processed, or logged again at a later slot). `Received` means: retry later.
fn process_one(env: &Env, app: &str, id: &str, slot: u64) -> Result<Option<Status>, ApiError> {
    let rkey = record_key(app, id);
    let Some(mut d) = get_json::<Delivery>(env.kv, &rkey)? else {
        return Ok(None);
    };
    if d.status != Status::Received || d.seq != slot {
        return Ok(None);
    }
    d.attempts += 1;
    let result = handle(env, &mut d);
    match result {
        Ok(outcome) => {
            d.status = Status::Processed;
            d.outcome = Some(outcome);
            d.error = None;
            d.processed_at = Some(env.now);
        }
        Err(Failure::Permanent(e)) => {
            d.status = Status::Dead;
            d.error = Some(e);
        }
        Err(Failure::Transient(e)) if d.attempts >= MAX_ATTEMPTS => {
            d.status = Status::Dead;
            d.error = Some(format!("{e} (after {} attempts)", d.attempts));
        }
        Err(Failure::Transient(e)) => d.error = Some(e),
    }
    let status = d.status;
    // The effects first, the status last: a run killed in between leaves the delivery
    // `received`, and the next run does them again (each is idempotent). The other way
    // round, a delivery marked done could miss its organizations' listings for good.
    match status {
        Status::Processed => attribute(env, &d)?,
        Status::Dead => {
            IdIndex::new(env.kv, key(app, "dead")).insert(id)?;
            attribute(env, &d)?;
        }
        Status::Received => {}
    }
    // Keep the duplicate count a concurrent receiver may have raised meanwhile.
    crate::kv::update_json(env.kv, &rkey, |current: Option<Delivery>| {
        let mut next = d.clone();
        if let Some(c) = current {
            next.duplicates = next.duplicates.max(c.duplicates);
        }
        Ok((Some(next), ()))
    })?;
    match status {
        Status::Processed => count(env.kv, app, stat::PROCESSED, 1)?,
        Status::Dead => count(env.kv, app, stat::DEAD, 1)?,
        Status::Received => {}
    }
    Ok(Some(status))
}

enum Failure {
    /// The delivery itself cannot be processed (no event, junk body).
    Permanent(String),
    /// Storage or similar trouble: try again on a later run.
    Transient(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Transient(e.to_string())
    }
}

/// Events TikTok documents (§8.1); others are kept as received.
const KNOWN_EVENTS: [&str; 6] = [
    "authorization.removed",
    "video.upload.failed",
    "video.publish.completed",
    "post.publish.complete",
    "portability.download.ready",
    "tiktok.ping",
];

/// Reasons `authorization.removed` gives in `content.reason` (§8.1; UNCERTAIN mapping).
fn removal_reason(code: i64) -> &'static str {
    match code {
        1 => "user disconnected the app",
        2 => "account deleted",
        3 => "age changed",
        4 => "account banned",
        5 => "developer revoked authorization",
        _ => "unknown",
    }
}

fn handle(env: &Env, d: &mut Delivery) -> Result<Value, Failure> {
    if d.raw_body_base64.is_some() || d.event.is_none() {
        return Err(Failure::Permanent(
            d.parse_error
                .clone()
                .unwrap_or_else(|| "the body cannot be processed".into()),
        ));
    }
    let event = d.event.clone().unwrap_or_default();
    let holders = match &d.user_openid {
        Some(open_id) => connections::by_open_id(env, open_id)?,
        None => Vec::new(),
    };
    d.orgs = holders
        .iter()
        .map(|(org, _)| org.as_str().to_string())
        .collect();
    d.orgs.dedup();
    if event == "authorization.removed" {
        let Some(open_id) = d.user_openid.clone() else {
            return Err(Failure::Permanent(
                "authorization.removed without user_openid".into(),
            ));
        };
        let reason = d
            .content
            .as_ref()
            .and_then(|c| c.get("reason"))
            .and_then(Value::as_i64);
        let text = format!(
            "authorization.removed webhook (reason {}: {})",
            reason.map_or("none".to_string(), |r| r.to_string()),
            removal_reason(reason.unwrap_or(0))
        );
        let mut revoked = Vec::new();
        for (org, connection) in holders {
            let c = match connections::get(env, &org, &connection) {
                Ok(c) => c,
                Err(ApiError::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            if c.open_id.as_deref() != Some(open_id.as_str()) {
                continue;
            }
            if c.status != connections::Status::Revoked {
                connections::forget(env, &org, &connection, &text)?;
            }
            revoked.push(json!({"org": org.as_str(), "connection": connection}));
        }
        return Ok(
            json!({"action": "connections_revoked", "connections": revoked, "reason": reason}),
        );
    }
    if KNOWN_EVENTS.contains(&event.as_str()) || event.starts_with("post.publish.") {
        return Ok(json!({"action": "recorded"}));
    }
    Ok(json!({"action": "kept", "note": "event not known to tiktok-edge; kept as received"}))
}

fn org_log_key(org: &OrgId, n: u64) -> String {
    format!("{}wh/log/{n:020}", org.key_prefix())
}

/// Adds the delivery to the log of each organization it concerns: once per delivery and
/// org however often processing runs, and also when a run died between taking the log
/// slot and writing it (the mark names the slot, and the slot is written again).
fn attribute(env: &Env, d: &Delivery) -> Result<(), ApiError> {
    for org in &d.orgs {
        let Ok(org) = OrgId::parse(org) else { continue };
        let mark = format!("{}wh/seen/{}", org.key_prefix(), d.id);
        let slot = match env.kv.get(&mark)? {
            Some(m) => marked_slot(&m),
            None => {
                let n = env
                    .kv
                    .increment(&format!("{}wh/seq", org.key_prefix()), 1)?
                    as u64;
                if env
                    .kv
                    .compare_and_swap(&mark, None, format!("slot:{n}").as_bytes())?
                {
                    Some(n)
                } else {
                    // Another run marked it first; our slot stays empty (listings skip it).
                    env.kv.get(&mark)?.as_deref().and_then(marked_slot)
                }
            }
        };
        // A mark from before marks named their slot: logged when it was made.
        let Some(slot) = slot else { continue };
        let entry = format!("{}/{}", d.app, d.id);
        let key = org_log_key(&org, slot);
        if env.kv.get(&key)?.as_deref() != Some(entry.as_bytes()) {
            env.kv.set(&key, entry.as_bytes())?;
        }
    }
    Ok(())
}

fn marked_slot(mark: &[u8]) -> Option<u64> {
    std::str::from_utf8(mark)
        .ok()?
        .strip_prefix("slot:")?
        .parse()
        .ok()
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

/// Puts dead deliveries (all, or the listed ids) back in the log to be processed again.
pub fn replay(
    env: &Env,
    app: &WebhookApp,
    ids: Option<Vec<String>>,
) -> Result<Vec<String>, ApiError> {
    let dead = IdIndex::new(env.kv, key(&app.name, "dead"));
    let wanted = match ids {
        Some(ids) => {
            let all = dead.list()?;
            for id in &ids {
                if !all.contains(id) {
                    return Err(ApiError::invalid(
                        "ids",
                        format!("{id} is not a dead letter"),
                    ));
                }
            }
            ids
        }
        None => dead.list()?,
    };
    let mut replayed = Vec::new();
    for id in wanted {
        let rkey = record_key(&app.name, &id);
        let Some(mut d) = get_json::<Delivery>(env.kv, &rkey)? else {
            dead.remove(&id)?;
            continue;
        };
        d.seq = env.kv.increment(&key(&app.name, "seq"), 1)? as u64;
        d.status = Status::Received;
        d.attempts = 0;
        set_json(env.kv, &rkey, &d)?;
        env.kv.set(&log_key(&app.name, d.seq), id.as_bytes())?;
        dead.remove(&id)?;
        replayed.push(id);
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnv;

    fn vectors() -> Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/webhook-signatures.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("testdata/ is in the repository"))
            .unwrap()
    }

    #[test]
    fn every_shared_signature_vector() {
        let v = vectors();
        let secret = v["client_secret"].as_str().unwrap().to_string();
        let cases = v["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let body = case["raw_body"].as_str().unwrap_or("").as_bytes();
            let header = case["header"].as_str();
            let secrets = vec![
                case["secret"]
                    .as_str()
                    .map_or(secret.clone(), str::to_string),
            ];
            let got = verify(
                header,
                body,
                &secrets,
                case["now"].as_i64().unwrap(),
                case["tolerance_s"].as_i64().unwrap(),
            );
            let expect = case["expect"].as_str().unwrap();
            match expect {
                e if e.starts_with("valid") => assert!(got.is_ok(), "{name}: {got:?}"),
                e if e.contains("outside tolerance") => {
                    assert_eq!(got, Err(Rejection::OutsideTolerance), "{name}")
                }
                e if e.contains("malformed") => assert!(
                    matches!(got, Err(Rejection::MalformedHeader(_))),
                    "{name}: {got:?}"
                ),
                e if e.contains("no TikTok-Signature") => {
                    assert_eq!(got, Err(Rejection::MissingHeader), "{name}")
                }
                _ => assert_eq!(got, Err(Rejection::SignatureMismatch), "{name}: {expect}"),
            }
            if let Some(expected) = case["expected_signature"].as_str() {
                let t = parse_header(header.unwrap()).unwrap().t;
                assert_eq!(sign(&secrets[0], t, body), expected, "{name}");
            }
        }
    }

    #[test]
    fn tolerance_edges_are_inclusive_both_ways() {
        let secrets = vec!["s3cret".to_string()];
        let body = br#"{"event":"tiktok.ping"}"#;
        let at = |t: i64| format!("t={t},s={}", sign("s3cret", t, body));
        let now = 1_700_000_000;
        for (t, ok) in [
            (now - 300, true),
            (now - 301, false),
            (now + 300, true),
            (now + 301, false),
        ] {
            assert_eq!(
                verify(Some(&at(t)), body, &secrets, now, 300).is_ok(),
                ok,
                "t = now{:+}",
                t - now
            );
        }
    }

    #[test]
    fn either_secret_verifies_during_rotation() {
        let body = b"{}";
        let now = 1_700_000_000;
        let secrets = vec!["new".to_string(), "old".to_string()];
        for s in ["new", "old"] {
            let h = format!("t={now},s={}", sign(s, now, body));
            assert!(verify(Some(&h), body, &secrets, now, 300).is_ok(), "{s}");
        }
        let h = format!("t={now},s={}", sign("retired", now, body));
        assert_eq!(
            verify(Some(&h), body, &secrets, now, 300),
            Err(Rejection::SignatureMismatch)
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        for h in [
            "",
            "t=1",
            "s=00",
            &format!("s={}", "a".repeat(64)),
            &format!("t=abc,s={}", "a".repeat(64)),
            &format!("t=1,t=2,s={}", "a".repeat(64)),
            &format!("t=1,s={}", "g".repeat(64)),
            &format!("t=-5,s={}", "a".repeat(64)),
            &"t=1,".repeat(400),
        ] {
            assert!(
                matches!(parse_header(h), Err(Rejection::MalformedHeader(_))),
                "{h:?}"
            );
        }
        let ok = parse_header(&format!(" s = {} , t=7, v1=x", "AB".repeat(32))).unwrap();
        assert_eq!(ok.t, 7, "spaces, case and unknown elements are tolerated");
    }

    fn test_env() -> TestEnv {
        let mut t = TestEnv::new();
        t.config
            .0
            .insert(APPS_VARIABLE.into(), "other:o1:o0, app-1:rotated".into());
        t
    }

    fn signed(t: &TestEnv, secret: &str, body: &[u8]) -> String {
        format!("t={},s={}", t.now.get(), sign(secret, t.now.get(), body))
    }

    #[test]
    fn apps_come_from_the_deployment_app_and_webhook_apps() {
        let mut t = test_env();
        let apps = apps(&t.env()).unwrap();
        let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["app-1", "other"]);
        assert_eq!(apps[0].secrets, ["app-secret", "rotated"]);
        assert!(
            !format!("{apps:?}").contains("o1"),
            "secrets stay out of Debug"
        );
        for (name, bad) in [
            (TOLERANCE_VARIABLE, "abc"),
            (TOLERANCE_VARIABLE, "0"),
            (MAX_BODY_VARIABLE, "99999999"),
        ] {
            t.config.0.insert(name.into(), bad.into());
            let e = tolerance_secs(&t.env())
                .and(max_body(&t.env()).map(|_| 0))
                .unwrap_err();
            assert!(e.to_string().contains(name), "{name}={bad}: {e}");
            t.config.0.remove(name);
        }
        for bad in ["x", "bad name:s", ":s", "a:"] {
            t.config.0.insert(APPS_VARIABLE.into(), bad.into());
            assert!(
                matches!(super::apps(&t.env()), Err(ApiError::Internal(_))),
                "{bad}"
            );
        }
    }

    fn body(event: &str, open_id: &str, content: &str) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"client_key": "app-1", "event": event, "create_time": 1_700_000_000,
            "user_openid": open_id, "content": content}),
        )
        .unwrap()
    }

    #[test]
    fn a_bad_signature_stores_nothing_but_a_counter() {
        let t = test_env();
        let app = app(&t.env(), "app-1").unwrap();
        let b = body("tiktok.ping", "u", "{}");
        let before = t.kv.dump().len();
        let e = receive(&t.env(), &app, Some(&signed(&t, "wrong", &b)), &b).unwrap_err();
        assert_eq!(e.status(), 401);
        let e = receive(&t.env(), &app, None, &b).unwrap_err();
        assert_eq!(e.status(), 401);
        let keys: Vec<String> = t.kv.dump().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), before + 2, "{keys:?}");
        assert!(
            keys.iter()
                .all(|k| !k.contains("/d/") && !k.contains("/log/"))
        );
        let s = stats(&t.env(), &app).unwrap();
        assert_eq!(s.counters["signature_mismatch"], 1);
        assert_eq!(s.counters["missing_signature"], 1);
        let big = vec![b' '; DEFAULT_MAX_BODY + 1];
        let e = receive(&t.env(), &app, Some(&signed(&t, "app-secret", &big)), &big).unwrap_err();
        assert_eq!(e.status(), 413);
    }

    #[test]
    fn a_retry_resigned_later_is_a_duplicate_and_processed_once() {
        let t = test_env();
        let app = app(&t.env(), "app-1").unwrap();
        let b = body("video.publish.completed", "u", r#"{"share_id":"v1"}"#);
        let first = receive(&t.env(), &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
        assert!(!first.duplicate);
        t.now.set(t.now.get() + 60);
        let again = receive(&t.env(), &app, Some(&signed(&t, "rotated", &b)), &b).unwrap();
        assert_eq!((again.duplicate, &again.id), (true, &first.id));
        let r = process(&t.env()).unwrap();
        assert_eq!((r.processed, r.dead), (1, 0));
        assert_eq!(process(&t.env()).unwrap().processed, 0, "nothing left");
        let d = get_app_delivery(&t.env(), &app, &first.id).unwrap();
        assert_eq!(d.status, Status::Processed);
        assert_eq!(
            d.content,
            Some(json!({"share_id": "v1"})),
            "content parsed from its string"
        );
        assert_eq!((d.attempts, d.duplicates), (1, 1));
        let late = receive(&t.env(), &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
        assert!(late.duplicate);
        assert_eq!(
            process(&t.env()).unwrap().processed,
            0,
            "a processed delivery stays processed"
        );
    }

    #[test]
    fn authorization_removed_revokes_the_creator_connection_of_every_org_holding_it() {
        let t = test_env();
        let env = t.env();
        let (a, _) = crate::connections::testing::creator_connection(&t, "org-a", "open-9");
        let (b, _) = crate::connections::testing::creator_connection(&t, "org-b", "open-9");
        let (c, _) = crate::connections::testing::creator_connection(&t, "org-c", "open-other");
        let app = app(&env, "app-1").unwrap();
        let bd = body("authorization.removed", "open-9", r#"{"reason":1}"#);
        let r = receive(&env, &app, Some(&signed(&t, "app-secret", &bd)), &bd).unwrap();
        assert_eq!(process(&env).unwrap().processed, 1);
        for (org, id, revoked) in [
            ("org-a", &a, true),
            ("org-b", &b, true),
            ("org-c", &c, false),
        ] {
            let org = OrgId::parse(org).unwrap();
            let conn = connections::get(&env, &org, id).unwrap();
            assert_eq!(
                conn.status == connections::Status::Revoked,
                revoked,
                "{org:?}"
            );
            assert_eq!(
                connections::tokens(&env, &org, id).is_err(),
                revoked,
                "token deleted"
            );
            let listed = list_org(
                &env,
                &org,
                &Filter {
                    limit: 10,
                    ..Filter::default()
                },
            )
            .unwrap();
            assert_eq!(listed.deliveries.len(), usize::from(revoked), "{org:?}");
        }
        let d = get_org_delivery(&env, &OrgId::parse("org-a").unwrap(), &r.id).unwrap();
        assert_eq!(
            d.outcome.unwrap()["connections"].as_array().unwrap().len(),
            2
        );
        assert!(get_org_delivery(&env, &OrgId::parse("org-c").unwrap(), &r.id).is_err());
        let conn = connections::get(&env, &OrgId::parse("org-a").unwrap(), &a).unwrap();
        assert!(conn.last_error.unwrap().contains("user disconnected"));
    }

    #[test]
    fn junk_and_unknown_bodies_are_kept_and_junk_dead_letters_replay() {
        let t = test_env();
        let env = t.env();
        let app = app(&env, "app-1").unwrap();
        let junk: &[u8] = b"\xff\xfenot json";
        let r1 = receive(&env, &app, Some(&signed(&t, "app-secret", junk)), junk).unwrap();
        let odd = body("ads.something_new", "u", "not json {");
        let r2 = receive(&env, &app, Some(&signed(&t, "app-secret", &odd)), &odd).unwrap();
        let r = process(&env).unwrap();
        assert_eq!((r.processed, r.dead), (1, 1));
        let d1 = get_app_delivery(&env, &app, &r1.id).unwrap();
        assert_eq!(d1.status, Status::Dead);
        assert!(
            d1.raw_body_base64.is_some(),
            "invalid UTF-8 kept exactly, as base64"
        );
        let d2 = get_app_delivery(&env, &app, &r2.id).unwrap();
        assert_eq!(d2.status, Status::Processed);
        assert!(d2.parse_error.unwrap().contains("content is not JSON"));
        assert_eq!(d2.raw_body.unwrap().as_bytes(), odd.as_slice());
        assert_eq!(stats(&env, &app).unwrap().dead_letters, 1);
        assert_eq!(
            replay(&env, &app, None).unwrap(),
            std::slice::from_ref(&r1.id)
        );
        assert_eq!(process(&env).unwrap().dead, 1, "still junk: dead again");
        assert!(
            replay(&env, &app, Some(vec![r2.id])).is_err(),
            "only dead letters replay"
        );
    }

    #[test]
    fn listing_filters_by_event_and_time_newest_first_with_a_cursor() {
        let t = test_env();
        let app = app(&t.env(), "app-1").unwrap();
        for i in 0..5 {
            t.now.set(1_700_000_000 + i * 10);
            let event = if i % 2 == 0 {
                "tiktok.ping"
            } else {
                "video.upload.failed"
            };
            let b = body(event, &format!("u{i}"), "{}");
            receive(&t.env(), &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
        }
        let env = t.env();
        let all = list_app(
            &env,
            &app,
            &Filter {
                limit: 2,
                ..Filter::default()
            },
        )
        .unwrap();
        assert_eq!(all.deliveries.len(), 2);
        assert_eq!(all.deliveries[0].user_openid.as_deref(), Some("u4"));
        let rest = list_app(
            &env,
            &app,
            &Filter {
                limit: 10,
                cursor: all.next_cursor,
                ..Filter::default()
            },
        )
        .unwrap();
        assert_eq!(rest.deliveries.len(), 3);
        assert_eq!(rest.next_cursor, None);
        let pings = list_app(
            &env,
            &app,
            &Filter {
                limit: 10,
                event: Some("tiktok.ping".into()),
                since: Some(1_700_000_010),
                ..Filter::default()
            },
        )
        .unwrap();
        let who: Vec<_> = pings
            .deliveries
            .iter()
            .map(|d| d.user_openid.clone().unwrap())
            .collect();
        assert_eq!(who, ["u4", "u2"]);
    }

    #[test]
    fn a_processor_killed_between_marking_and_logging_still_lists_the_delivery() {
        let t = test_env();
        let env = t.env();
        let app = app(&env, "app-1").unwrap();
        let b = body("tiktok.ping", "u", "{}");
        let r = receive(&env, &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
        let mut d: Delivery = get_json(env.kv, &record_key("app-1", &r.id))
            .unwrap()
            .unwrap();
        d.orgs = vec!["acme".into()];
        let org = OrgId::parse("acme").unwrap();
        attribute(&env, &d).unwrap();
        // The crash: the run took its slot and marked the delivery; its log write was lost.
        env.kv.delete(&org_log_key(&org, 1)).unwrap();
        attribute(&env, &d).unwrap();
        attribute(&env, &d).unwrap();
        assert_eq!(
            env.kv.get(&org_log_key(&org, 1)).unwrap(),
            Some(format!("app-1/{}", r.id).into_bytes())
        );
        assert_eq!(
            env.kv
                .increment(&format!("{}wh/seq", org.key_prefix()), 0)
                .unwrap(),
            1,
            "one slot, however often processing runs"
        );
    }

    /// Three deliveries stored, as a crash leaves them: the first two receivers died
    /// before logging, the third answered.
    fn two_receivers_killed(t: &TestEnv) {
        let env = t.env();
        let app = app(&env, "app-1").unwrap();
        for user in ["u1", "u2", "u3"] {
            let b = body("tiktok.ping", user, "{}");
            receive(&env, &app, Some(&signed(t, "app-secret", &b)), &b).unwrap();
        }
        env.kv.delete(&log_key("app-1", 1)).unwrap();
        env.kv.delete(&log_key("app-1", 2)).unwrap();
    }

    #[test]
    fn receivers_killed_together_cost_one_wait_not_one_each() {
        let t = test_env();
        two_receivers_killed(&t);
        let env = t.env();
        assert_eq!(
            process(&env).unwrap().processed,
            0,
            "a fresh gap is waited for"
        );
        t.now.set(t.now.get() + GAP_SECS + 1);
        assert_eq!(
            process(&t.env()).unwrap().processed,
            1,
            "both dead slots are skipped after the one wait"
        );
    }

    #[test]
    fn a_crash_that_also_kills_the_processing_run_costs_one_wait_not_two() {
        let t = test_env();
        two_receivers_killed(&t);
        // The run processing the log died too, holding its lease.
        let env = t.env();
        assert!(lease::take(env.kv, "wh/app-1/lease", "dead-run", env.now, LEASE_SECS).unwrap());
        assert_eq!(process(&env).unwrap().busy, 1);
        t.now.set(t.now.get() + LEASE_SECS.max(GAP_SECS) + 1);
        assert_eq!(
            process(&t.env()).unwrap().processed,
            1,
            "the dead receivers' slots aged while the dead run's lease ran out"
        );
    }

    #[test]
    fn a_receiver_that_died_before_logging_is_healed_by_the_retry() {
        let t = test_env();
        let env = t.env();
        let app = app(&env, "app-1").unwrap();
        let b = body("tiktok.ping", "u", "{}");
        let r = receive(&env, &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
        // Simulate the crash: the record is stored, its log slot never written.
        env.kv.delete(&log_key("app-1", 1)).unwrap();
        assert_eq!(
            process(&env).unwrap().processed,
            0,
            "a fresh gap is waited for"
        );
        t.now.set(t.now.get() + GAP_SECS + 1);
        let env = t.env();
        assert_eq!(
            process(&env).unwrap().processed,
            0,
            "the gap is skipped once old"
        );
        let again = receive(&env, &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
        assert!(again.duplicate);
        assert_eq!(
            process(&env).unwrap().processed,
            1,
            "logged again by the retry, then processed"
        );
        assert_eq!(
            get_app_delivery(&env, &app, &r.id).unwrap().status,
            Status::Processed
        );
    }

    #[test]
    fn two_runs_at_once_do_not_both_process() {
        let t = test_env();
        let env = t.env();
        let app = app(&env, "app-1").unwrap();
        let b = body("tiktok.ping", "u", "{}");
        receive(&env, &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
        assert!(lease::take(env.kv, "wh/app-1/lease", "other-run", env.now, 30).unwrap());
        let r = process(&env).unwrap();
        assert_eq!((r.processed, r.busy), (0, 1));
    }
}
