//! Processing stored deliveries from each app's log, under a lease, once each; dead
//! letters and their replay.

use crate::ApiError;
use crate::platform::crypto::random_token;
use crate::platform::env::Env;
use crate::platform::gaps;
use crate::platform::kv::{IdIndex, get_json, set_json};
use crate::platform::lease;
use crate::tenancy::connections;
use crate::tenancy::org_id::OrgId;
use crate::webhooks::apps::{WebhookApp, apps};
use crate::webhooks::deliveries::{
    Delivery, Head, Status, count, key, log_key, org_log_key, record_key, stat,
};
use serde::Serialize;
use serde_json::{Value, json};

/// Processing attempts before a delivery goes to the dead letters.
pub const MAX_ATTEMPTS: u32 = 5;
pub(super) const LEASE_SECS: i64 = 30;
/// An empty log slot older than this is a receiver that died before answering.
pub(super) const GAP_SECS: i64 = 30;
/// Deliveries one processing run handles per app.
const PER_RUN: u64 = 500;

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
        // run that died with them still holds it (see `crate::platform::gaps`).
        let tail = env.kv.increment(&key(&app.name, "seq"), 0)?.max(0) as u64;
        let skippable = gaps::note_tail(env.kv, &key(&app.name, "seen"), env.now, tail, GAP_SECS)?;
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
    crate::platform::kv::update_json(env.kv, &rkey, |current: Option<Delivery>| {
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

/// Adds the delivery to the log of each organization it concerns: once per delivery and
/// org however often processing runs, and also when a run died between taking the log
/// slot and writing it (the mark names the slot, and the slot is written again).
pub(super) fn attribute(env: &Env, d: &Delivery) -> Result<(), ApiError> {
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
