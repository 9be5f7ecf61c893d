//! Taking events in (`POST /pixel/events`) and sending them on (the forwarder).
//!
//! Ingest: parse, validate and hash each event ([`crate::events`]), drop duplicates of
//! (pixel, event, event_id) seen within 48 h, and store the rest before answering.
//! Forward: per pixel, under a lease, send stored events to `/event/track/` in batches,
//! back off on retryable codes, dead-letter what TikTok refuses for good.

use crate::ApiError;
use crate::crypto::{random_bytes, random_token};
use crate::env::Env;
use crate::events::{self, Context};
use crate::json::Json;
use crate::kv::IdIndex;
use crate::lease;
use crate::pixel_queue::{DeadLetter, Next, Queue, QueuedEvent, stat};
use crate::pixels::{self, ALL_PIXELS, Pixel};
use crate::tiktok::{Call, CodeClass, TikTokError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::borrow::Cow;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RejectedEvent {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// The answer to an ingest request.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    /// Stored, to be sent to TikTok.
    pub accepted: usize,
    /// Already accepted within 48 h (same event and event_id); not stored again.
    pub deduplicated: usize,
    pub rejected: Vec<RejectedEvent>,
    /// The event_id of each event, by index (generated when the event had none), so the
    /// TikTok browser pixel can send the same one.
    pub event_ids: Vec<Option<String>>,
}

/// The events of a body: a list, `{"events": [...]}`, or one event object.
pub fn events_of<'a, 'b>(body: &'a Json<'b>) -> Result<&'a [Json<'b>], ApiError> {
    match body {
        Json::Array(list) => Ok(list),
        Json::Object(map) => match map.get("events") {
            Some(Json::Array(list)) => Ok(list),
            Some(_) => Err(ApiError::invalid("events", "must be a list of events")),
            None => Ok(std::slice::from_ref(body)),
        },
        _ => Err(ApiError::invalid(
            "body",
            "must be an event, a list of events, or {\"events\": [...]}",
        )),
    }
}

pub fn ingest(
    env: &Env,
    pixel: &Pixel,
    list: &[Json],
    ctx: &Context,
) -> Result<IngestReport, ApiError> {
    if list.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "must contain at least one event",
        ));
    }
    if list.len() > pixel.max_batch {
        return Err(ApiError::invalid(
            "events",
            format!(
                "at most {} events per request for this pixel",
                pixel.max_batch
            ),
        ));
    }
    let queue = Queue::new(env.kv, &pixel.id);
    let rules = pixel.rules();
    let mut report = IngestReport {
        accepted: 0,
        deduplicated: 0,
        rejected: Vec::new(),
        event_ids: Vec::with_capacity(list.len()),
    };
    let mut prepared: Vec<events::Prepared> = Vec::with_capacity(list.len());
    let mut urls = events::PageUrls::default();
    for (index, raw) in list.iter().enumerate() {
        // Copied only to give an event without an id one ([`events::prepare`] takes the
        // fields it knows, so the rest, such as a body's `pixel_id`, are left behind).
        let event = match raw {
            Json::Object(map) if matches!(map.get("event_id"), None | Some(Json::Null)) => {
                let mut map = map.clone();
                map.insert(
                    "event_id",
                    Json::String(format!("edge-{}", hex::encode(random_bytes::<12>()?)).into()),
                );
                Cow::Owned(Json::Object(map))
            }
            _ => Cow::Borrowed(raw),
        };
        report.event_ids.push(
            event
                .get("event_id")
                .and_then(Json::as_str)
                .map(str::to_string),
        );
        match events::prepare(&event, &rules, ctx, &mut urls) {
            Ok(data) => prepared.push(data),
            Err(r) => report.rejected.push(RejectedEvent {
                index,
                field: r.field,
                reason: r.reason,
            }),
        }
    }
    let names: Vec<(&str, &str)> = prepared
        .iter()
        .map(|p| (p.event.as_str(), p.event_id.as_str()))
        .collect();
    let sightings = queue.first_sightings(&names, env.now)?;
    let mut accepted = Vec::with_capacity(prepared.len());
    for (data, &new) in prepared.into_iter().zip(&sightings.fresh) {
        if new {
            accepted.push(QueuedEvent {
                data,
                received_at: env.now,
            });
        } else {
            report.deduplicated += 1;
        }
    }
    queue.accept(&accepted, sightings)?;
    report.accepted = accepted.len();
    queue.count(stat::REJECTED, report.rejected.len() as i64)?;
    queue.count(stat::DEDUPLICATED, report.deduplicated as i64)?;
    Ok(report)
}

/// Per-pixel figures.
#[derive(Debug, Serialize)]
pub struct Stats {
    pub pixel_id: String,
    pub received: i64,
    pub rejected: i64,
    pub deduplicated: i64,
    pub pending: u64,
    pub delivered: i64,
    pub dead: i64,
    pub last_error: Option<String>,
}

pub fn stats(env: &Env, pixel: &Pixel) -> Result<Stats, ApiError> {
    let q = Queue::new(env.kv, &pixel.id);
    let head = q.head()?;
    // Read once: a request taking slots between two reads made `pending` exceed
    // `received` in a snapshot taken under load.
    let tail = q.tail()?;
    Ok(Stats {
        pixel_id: pixel.id.clone(),
        received: q.received_by(tail)?,
        rejected: q.counter(stat::REJECTED)?,
        deduplicated: q.counter(stat::DEDUPLICATED)?,
        pending: (tail + 1).saturating_sub(head.next),
        delivered: q.counter(stat::DELIVERED)?,
        dead: q.counter(stat::DEAD)?,
        last_error: head.last_error,
    })
}

/// Attempts before a batch goes to the dead letters.
pub const MAX_ATTEMPTS: u32 = 8;
/// A lease lasts this long and is renewed before each batch (whose TikTok call times
/// out well within it); a flush that dies lets another take over after it.
const LEASE_SECS: i64 = 30;
/// An empty slot older than this is a writer that died before acknowledging.
const GAP_SECS: i64 = 30;
/// Batches one flush sends per pixel before moving on.
const BATCHES_PER_FLUSH: usize = 20;
/// Entries of the retired-marks log one flush handles per pixel. Each lists the marks
/// of one sent batch, so forgetting keeps pace with sending ([`BATCHES_PER_FLUSH`]).
const MARK_LOG_ENTRIES_PER_FLUSH: u64 = BATCHES_PER_FLUSH as u64;

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FlushReport {
    pub pixels: usize,
    pub requests: usize,
    pub delivered: usize,
    pub retrying: usize,
    pub dead: usize,
    /// Pixels skipped because another flush holds their lease.
    pub busy: usize,
}

fn lease_key(pixel: &str) -> String {
    format!("pq/{pixel}/lease")
}

fn take_lease(env: &Env, pixel: &str, owner: &str) -> Result<bool, ApiError> {
    lease::take(env.kv, &lease_key(pixel), owner, env.now, LEASE_SECS)
}

/// Extends our lease before each batch; `false` if it is no longer ours.
fn renew_lease(env: &Env, pixel: &str, owner: &str) -> Result<bool, ApiError> {
    lease::renew(env.kv, &lease_key(pixel), owner, env.now, LEASE_SECS)
}

fn release_lease(env: &Env, pixel: &str, owner: &str) -> Result<(), ApiError> {
    lease::release(env.kv, &lease_key(pixel), owner)
}

/// Exponential backoff with jitter for attempt `n` (from 1): 2 s, 4 s, … up to 10 min.
fn backoff_secs(attempt: u32) -> i64 {
    let base = 2i64
        .saturating_mul(1 << attempt.saturating_sub(1).min(9))
        .min(600);
    let jitter = random_bytes::<1>().map(|b| b[0] as i64).unwrap_or(0) * base / 512;
    base + jitter
}

/// The index TikTok names in `Batch.3.properties…: Not a valid string`.
fn batch_index(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("Batch.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Sends what every pixel has queued. Safe to run concurrently: each pixel is flushed
/// by one caller at a time.
pub fn flush(env: &Env) -> Result<FlushReport, ApiError> {
    let owner = random_token::<12>()?;
    let mut report = FlushReport::default();
    for id in IdIndex::new(env.kv, ALL_PIXELS).list()? {
        let Ok(pixel) = pixels::find(env, &id) else {
            continue;
        };
        let queue = Queue::new(env.kv, &pixel.id);
        let head = queue.head()?;
        let tail = queue.tail()?;
        // Noted before the lease, so the wait for writers that died runs even while a
        // flush that died with them still holds it (see `crate::gap`).
        let skippable = if tail >= head.next {
            queue.note_tail(env.now, tail, GAP_SECS)?
        } else {
            None
        };
        let nothing_to_send = tail < head.next || head.retry_at > env.now;
        if nothing_to_send && !head.marks_are_due(env.now) {
            continue;
        }
        report.pixels += 1;
        if !take_lease(env, &pixel.id, &owner)? {
            report.busy += 1;
            continue;
        }
        let result = flush_pixel(env, &pixel, &queue, &owner, skippable, &mut report);
        release_lease(env, &pixel.id, &owner)?;
        result?;
    }
    Ok(report)
}

/// Sends up to [`BATCHES_PER_FLUSH`] batches of the pixel's queue; an empty slot is
/// skipped when it is at most `skippable`.
fn flush_pixel(
    env: &Env,
    pixel: &Pixel,
    queue: &Queue,
    owner: &str,
    skippable: Option<u64>,
    report: &mut FlushReport,
) -> Result<(), ApiError> {
    let batch_size: usize = if pixel.test_event_code.is_some() {
        1
    } else {
        pixels::MAX_BATCH
    };
    forget_due_marks(env, queue)?;
    // Runs a flush that died sent to their end and left behind.
    queue.remove_left_behind(&queue.head()?)?;
    for _ in 0..BATCHES_PER_FLUSH {
        if !renew_lease(env, &pixel.id, owner)? {
            return Ok(());
        }
        let mut head = queue.head()?;
        let tail = queue.tail()?;
        if tail < head.next || head.retry_at > env.now {
            return Ok(());
        }
        let batch = match queue.next_batch(&head, tail, batch_size)? {
            Next::Batch(batch) => batch,
            Next::Empty { empty_to } => {
                // An empty slot: a writer still storing (wait for it), or one that died
                // before acking. Once handed out long enough ago, it is skipped with every
                // empty slot after it that is as old: all of a dead request's slots at once.
                let Some(skippable) = skippable.filter(|s| head.next <= *s) else {
                    return Ok(());
                };
                head.next = empty_to.min(skippable + 1);
                head.run = None;
                queue.set_head(&head)?;
                continue;
            }
        };
        let present = &batch.events;
        let token = match pixels::access_token(env, pixel) {
            Ok(t) => t,
            Err(e) => {
                head.retry_at = env.now + 60;
                head.last_error = Some(e.to_string());
                queue.set_head(&head)?;
                report.retrying += present.len();
                return Ok(());
            }
        };
        let mut body = json!({
            "event_source": "web",
            "event_source_id": pixel.pixel_code,
            "partner_name": "tiktok-edge",
            "data": present.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
        });
        if let Some(code) = &pixel.test_event_code {
            body["test_event_code"] = json!(code);
        }
        report.requests += 1;
        let outcome = env
            .tiktok()?
            .call_once(&Call::post("/event/track/", body).token(&token));
        match outcome {
            Ok(_) => {
                let delivered = present.len();
                head.marks_retired(queue.retire_marks(present)?);
                batch.advance(&mut head);
                head.attempts = 0;
                head.retry_at = 0;
                head.last_error = None;
                queue.set_head(&head)?;
                queue.remove_sent(&head)?;
                queue.count(stat::DELIVERED, delivered as i64)?;
                report.delivered += delivered;
            }
            Err(e) => {
                let error = format!("{}: {} (request_id {})", e.code, e.message, e.request_id);
                head.last_error = Some(error);
                let transient = matches!(e.class(), CodeClass::Retry | CodeClass::RateLimited);
                // Token or permission trouble waits for the operator without burning
                // attempts; events stay queued and `last_error` says why.
                if matches!(e.class(), CodeClass::Reauthorize | CodeClass::Permission) {
                    head.retry_at = env.now + 60;
                    queue.set_head(&head)?;
                    report.retrying += present.len();
                    return Ok(());
                }
                if transient && head.attempts + 1 < MAX_ATTEMPTS {
                    head.attempts += 1;
                    head.retry_at = env.now + backoff_secs(head.attempts);
                    queue.set_head(&head)?;
                    report.retrying += present.len();
                    return Ok(());
                }
                // Refused for good (or too many attempts). One named bad event
                // goes alone; the rest are tried again at once.
                let culprit =
                    batch_index(&e.message).filter(|i| *i < present.len() && present.len() > 1);
                let doomed: Vec<usize> = match culprit {
                    Some(i) => vec![i],
                    None => (0..present.len()).collect(),
                };
                let letters = doomed
                    .iter()
                    .map(|i| dead_letter(&present[*i], &e, head.attempts + 1, env.now))
                    .collect();
                queue.bury(letters)?;
                let dead: Vec<QueuedEvent> = doomed.iter().map(|i| present[*i].clone()).collect();
                head.marks_retired(queue.retire_marks(&dead)?);
                report.dead += dead.len();
                if culprit.is_some() {
                    // Keep the survivors in order: move them to the tail.
                    let survivors: Vec<QueuedEvent> = present
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !doomed.contains(i))
                        .map(|(_, e)| e.clone())
                        .collect();
                    queue.requeue(&survivors)?;
                }
                batch.advance(&mut head);
                head.attempts = 0;
                head.retry_at = 0;
                queue.set_head(&head)?;
                queue.remove_sent(&head)?;
            }
        }
    }
    Ok(())
}

/// Deletes the dedup marks whose 48 h are over, when some are due.
fn forget_due_marks(env: &Env, queue: &Queue) -> Result<(), ApiError> {
    let mut head = queue.head()?;
    if head.marks_are_due(env.now) {
        head.marks_due = queue.forget_expired_marks(env.now, MARK_LOG_ENTRIES_PER_FLUSH)?;
        queue.set_head(&head)?;
    }
    Ok(())
}

fn dead_letter(event: &QueuedEvent, e: &TikTokError, attempts: u32, now: i64) -> DeadLetter {
    DeadLetter {
        id: 0,
        event: event.clone(),
        code: e.code,
        message: e.message.clone(),
        request_id: e.request_id.clone(),
        attempts,
        dead_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KeyValue;
    use crate::org::OrgId;
    use crate::orgs::tests::org_with_key;
    use crate::pixels::PixelInput;
    use crate::testing::TestEnv;
    use crate::tiktok::fake::err;
    use serde_json::Value;

    fn pixel(t: &TestEnv) -> Pixel {
        org_with_key(t, "acme");
        let input: PixelInput = serde_json::from_value(json!({
            "pixel_code": "CODE1", "allowed_origins": ["https://shop.example"],
            "access_token": "events-token", "default_country": "US"
        }))
        .unwrap();
        pixels::create(&t.env(), &OrgId::parse("acme").unwrap(), input).unwrap()
    }

    fn ctx(t: &TestEnv) -> Context {
        Context {
            ip: Some("203.0.113.9".into()),
            user_agent: Some("UA".into()),
            now: t.now.get(),
        }
    }

    /// Ingest of events written as `Value`s.
    fn ingest(
        env: &Env,
        pixel: &Pixel,
        list: &[Value],
        ctx: &Context,
    ) -> Result<IngestReport, ApiError> {
        let list: Vec<Json> = list.iter().map(Json::from_value).collect();
        super::ingest(env, pixel, &list, ctx)
    }

    fn events(n: usize, prefix: &str) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"event": "AddToCart", "event_id": format!("{prefix}-{i}"), "user": {"email": "Shopper@Example.com"}}))
            .collect()
    }

    fn sent_events(t: &TestEnv) -> Vec<Value> {
        t.tiktok
            .sent
            .borrow()
            .iter()
            .filter(|r| r.url.contains("/event/track/"))
            .flat_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["data"].as_array().unwrap().clone()
            })
            .collect()
    }

    #[test]
    fn batches_deduplicate_against_earlier_requests_and_within_themselves() {
        let t = TestEnv::new();
        let p = pixel(&t);
        let first = ingest(&t.env(), &p, &events(3, "a"), &ctx(&t)).unwrap();
        assert_eq!((first.accepted, first.deduplicated), (3, 0));
        let mut batch = events(2, "a"); // seen in the first request
        batch.extend(events(2, "b"));
        batch.push(json!({"event": "AddToCart", "event_id": "b-0"})); // repeat within
        batch.push(json!({"event": "ViewContent", "event_id": "b-0"})); // other event, same id
        let second = ingest(&t.env(), &p, &batch, &ctx(&t)).unwrap();
        assert_eq!((second.accepted, second.deduplicated), (3, 3));
        t.now
            .set(t.now.get() + crate::pixel_queue::DEDUP_WINDOW_SECS + 1);
        let later = ingest(&t.env(), &p, &events(2, "a"), &ctx(&t)).unwrap();
        assert_eq!(
            (later.accepted, later.deduplicated),
            (2, 0),
            "after 48 h an id is new again"
        );
        let single = ingest(&t.env(), &p, &events(1, "a"), &ctx(&t)).unwrap();
        assert_eq!((single.accepted, single.deduplicated), (0, 1));
        let s = stats(&t.env(), &p).unwrap();
        assert_eq!((s.received, s.deduplicated, s.pending), (12, 4, 8));
    }

    #[test]
    fn accepted_events_are_stored_then_delivered_hashed_once() {
        let t = TestEnv::new();
        let p = pixel(&t);
        let mut batch = events(3, "a");
        batch.push(json!({"event": "AddToCart"}));
        batch.push(json!({"event": 5}));
        let r = ingest(&t.env(), &p, &batch, &ctx(&t)).unwrap();
        assert_eq!((r.accepted, r.deduplicated), (4, 0));
        assert_eq!(
            r.rejected,
            vec![RejectedEvent {
                index: 4,
                field: "event".into(),
                reason: "must be a string".into()
            }]
        );
        assert!(
            r.event_ids[3].as_deref().unwrap().starts_with("edge-"),
            "an id is made for events without one"
        );
        // Stored before the answer: nothing sent yet, all pending.
        assert_eq!(stats(&t.env(), &p).unwrap().pending, 4);
        let again = ingest(&t.env(), &p, &events(3, "a"), &ctx(&t)).unwrap();
        assert_eq!((again.accepted, again.deduplicated), (0, 3));

        let report = flush(&t.env()).unwrap();
        assert_eq!((report.requests, report.delivered), (1, 4));
        let sent = sent_events(&t);
        assert_eq!(sent.len(), 4);
        assert_eq!(
            sent[0]["user"]["email"],
            crate::crypto::sha256_hex(b"shopper@example.com")
        );
        assert_eq!(sent[0]["user"]["ip"], "203.0.113.9");
        let request = t.tiktok.sent.borrow().last().unwrap().clone();
        assert!(
            request
                .headers
                .contains(&("access-token".into(), "events-token".into()))
        );
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            (
                body["event_source"].as_str(),
                body["event_source_id"].as_str()
            ),
            (Some("web"), Some("CODE1"))
        );
        assert!(
            !String::from_utf8_lossy(&request.body)
                .to_lowercase()
                .contains("shopper@")
        );
        let s = stats(&t.env(), &p).unwrap();
        assert_eq!(
            (
                s.received,
                s.rejected,
                s.deduplicated,
                s.pending,
                s.delivered
            ),
            (8, 1, 3, 0, 4)
        );
        assert_eq!(
            flush(&t.env()).unwrap().requests,
            0,
            "nothing is sent twice"
        );
    }

    /// A pixel with three requests of 400 events queued ("a-0" … "c-399").
    fn three_requests_of_400(t: &TestEnv) -> Pixel {
        let mut p = pixel(t);
        p.max_batch = 400;
        for prefix in ["a", "b", "c"] {
            let r = ingest(&t.env(), &p, &events(400, prefix), &ctx(t)).unwrap();
            assert_eq!(r.accepted, 400);
        }
        p
    }

    #[test]
    fn a_batch_that_ends_inside_a_request_sends_the_rest_next_exactly_once() {
        let t = TestEnv::new();
        let p = three_requests_of_400(&t);
        let report = flush(&t.env()).unwrap();
        assert_eq!((report.requests, report.delivered), (2, 1200));
        let sizes: Vec<usize> = t
            .tiktok
            .sent
            .borrow()
            .iter()
            .map(|r| {
                serde_json::from_slice::<Value>(&r.body).unwrap()["data"]
                    .as_array()
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, [pixels::MAX_BATCH, 200], "full batches");
        let ids: Vec<String> = sent_events(&t)
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = ["a", "b", "c"]
            .iter()
            .flat_map(|prefix| (0..400).map(move |i| format!("{prefix}-{i}")))
            .collect();
        assert_eq!(ids, expected, "each once, in order");
        assert_eq!(stored(&t, "e"), 0, "every run is deleted");
        let s = stats(&t.env(), &p).unwrap();
        assert_eq!((s.pending, s.delivered), (0, 1200));
    }

    #[test]
    fn runs_a_dead_flush_sent_are_deleted_by_the_next_and_nothing_is_sent_twice() {
        let t = TestEnv::new();
        let p = three_requests_of_400(&t);
        // A flush sent the first 1,000 events (two runs and part of a third), stored its
        // head, and died before deleting the runs.
        let queue = Queue::new(&t.kv, &p.id);
        let mut head = queue.head().unwrap();
        let tail = queue.tail().unwrap();
        let Next::Batch(batch) = queue.next_batch(&head, tail, pixels::MAX_BATCH).unwrap() else {
            panic!("events are queued");
        };
        assert_eq!(batch.events.len(), pixels::MAX_BATCH);
        batch.advance(&mut head);
        queue.set_head(&head).unwrap();
        assert_eq!(stored(&t, "e"), 3);

        assert_eq!(flush(&t.env()).unwrap().delivered, 200);
        let ids: Vec<String> = sent_events(&t)
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect();
        let rest: Vec<String> = (200..400).map(|i| format!("c-{i}")).collect();
        assert_eq!(ids, rest, "only what the dead flush did not send");
        assert_eq!(stored(&t, "e"), 0, "its runs are deleted too");
        assert_eq!(stats(&t.env(), &p).unwrap().pending, 0);
    }

    #[test]
    fn a_pixel_with_a_test_code_sends_a_request_event_by_event() {
        let t = TestEnv::new();
        let p = pixel(&t);
        let input: PixelInput =
            serde_json::from_value(json!({"test_event_code": "TEST123"})).unwrap();
        let p = pixels::update(&t.env(), &OrgId::parse("acme").unwrap(), &p.id, input).unwrap();
        ingest(&t.env(), &p, &events(3, "t"), &ctx(&t)).unwrap();
        assert_eq!(flush(&t.env()).unwrap().requests, 3);
        let ids: Vec<Value> = sent_events(&t)
            .iter()
            .map(|e| e["event_id"].clone())
            .collect();
        assert_eq!(ids, [json!("t-0"), json!("t-1"), json!("t-2")]);
        assert_eq!(stored(&t, "e"), 0);
    }

    /// Keys of `kind` ("dedup", "marks") stored for the pixel.
    fn stored(t: &TestEnv, kind: &str) -> usize {
        let part = format!("/{kind}/");
        t.kv.dump()
            .iter()
            .filter(|(k, _)| k.contains(&part))
            .count()
    }

    #[test]
    fn dedup_marks_are_deleted_once_their_48_hours_are_over() {
        let t = TestEnv::new();
        let p = pixel(&t);
        let start = t.now.get();
        let window = crate::pixel_queue::DEDUP_WINDOW_SECS;
        ingest(&t.env(), &p, &events(3, "m"), &ctx(&t)).unwrap();
        assert_eq!(flush(&t.env()).unwrap().delivered, 3);
        ingest(&t.env(), &p, &events(1, "dead"), &ctx(&t)).unwrap();
        t.script(vec![err(40002, "Invalid event")]);
        assert_eq!(flush(&t.env()).unwrap().dead, 1);
        t.now.set(start + 3600);
        ingest(&t.env(), &p, &events(2, "n"), &ctx(&t)).unwrap();
        assert_eq!(flush(&t.env()).unwrap().delivered, 2);
        assert_eq!(stored(&t, "dedup"), 6);

        t.now.set(start + window);
        flush(&t.env()).unwrap();
        assert_eq!(stored(&t, "dedup"), 6, "still within 48 h");
        let repeat = ingest(&t.env(), &p, &events(1, "m"), &ctx(&t)).unwrap();
        assert_eq!(repeat.deduplicated, 1);

        t.now.set(start + window + 1);
        flush(&t.env()).unwrap();
        assert_eq!(
            stored(&t, "dedup"),
            2,
            "the first four marks (sent or dead) are gone, the later two kept"
        );
        t.now.set(start + 3600 + window + 1);
        flush(&t.env()).unwrap();
        assert_eq!(stored(&t, "dedup"), 0);
        assert_eq!(stored(&t, "marks"), 2, "only the log's counters are left");
        assert_eq!(
            flush(&t.env()).unwrap().pixels,
            0,
            "an idle pixel with nothing due is not visited"
        );
    }

    #[test]
    fn a_mark_set_again_after_its_window_survives_the_old_ones_deletion() {
        let t = TestEnv::new();
        let p = pixel(&t);
        let start = t.now.get();
        let window = crate::pixel_queue::DEDUP_WINDOW_SECS;
        ingest(&t.env(), &p, &events(1, "again"), &ctx(&t)).unwrap();
        assert_eq!(flush(&t.env()).unwrap().delivered, 1);
        // No flush ran at the end of the window: the old mark is still stored when the
        // same event comes back, and is replaced.
        t.now.set(start + window + 5);
        let back = ingest(&t.env(), &p, &events(1, "again"), &ctx(&t)).unwrap();
        assert_eq!(back.accepted, 1);
        assert_eq!(flush(&t.env()).unwrap().delivered, 1);
        assert_eq!(stored(&t, "dedup"), 1, "the new mark is kept");
        t.now.set(start + window + 60);
        let repeat = ingest(&t.env(), &p, &events(1, "again"), &ctx(&t)).unwrap();
        assert_eq!(repeat.deduplicated, 1, "and still deduplicates");
    }

    #[test]
    fn retryable_refusals_back_off_then_deliver() {
        let t = TestEnv::new();
        let p = pixel(&t);
        ingest(&t.env(), &p, &events(2, "r"), &ctx(&t)).unwrap();
        t.script(vec![err(40100, "Too many requests")]);
        let r = flush(&t.env()).unwrap();
        assert_eq!((r.delivered, r.retrying), (0, 2));
        assert!(
            stats(&t.env(), &p)
                .unwrap()
                .last_error
                .unwrap()
                .starts_with("40100")
        );
        assert_eq!(
            flush(&t.env()).unwrap().requests,
            0,
            "waits for its backoff"
        );
        t.now.set(t.now.get() + 10);
        assert_eq!(flush(&t.env()).unwrap().delivered, 2);
        assert_eq!(
            sent_events(&t).len(),
            4,
            "the refused batch, then the same batch delivered"
        );
    }

    #[test]
    fn a_named_bad_event_is_dead_lettered_alone_and_can_be_replayed() {
        let t = TestEnv::new();
        let p = pixel(&t);
        ingest(&t.env(), &p, &events(3, "d"), &ctx(&t)).unwrap();
        t.script(vec![err(
            40002,
            "Batch.1.properties.contents.0.content_id: Not a valid string",
        )]);
        let r = flush(&t.env()).unwrap();
        assert_eq!((r.dead, r.delivered), (1, 2));
        let queue = Queue::new(&t.kv, &p.id);
        let dead = queue.dead_letters(0, 10).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].event.data["event_id"], "d-1");
        assert_eq!(
            (dead[0].code, dead[0].request_id.as_str()),
            (40002, "req-err")
        );
        assert_eq!(queue.replay(None).unwrap(), 1);
        assert_eq!(flush(&t.env()).unwrap().delivered, 1);
        let s = stats(&t.env(), &p).unwrap();
        assert_eq!((s.delivered, s.dead, s.pending), (3, 0, 0));
        assert_eq!(
            s.received, 3,
            "moved and replayed events are not received twice"
        );
    }

    #[test]
    fn too_many_transient_failures_end_in_the_dead_letters() {
        let t = TestEnv::new();
        let p = pixel(&t);
        ingest(&t.env(), &p, &events(1, "x"), &ctx(&t)).unwrap();
        for _ in 0..MAX_ATTEMPTS {
            t.script(vec![err(50000, "system error")]);
            flush(&t.env()).unwrap();
            t.now.set(t.now.get() + 700);
        }
        let s = stats(&t.env(), &p).unwrap();
        assert_eq!((s.dead, s.pending), (1, 0));
    }

    #[test]
    fn a_second_flush_leaves_a_leased_pixel_alone() {
        let t = TestEnv::new();
        let p = pixel(&t);
        ingest(&t.env(), &p, &events(1, "l"), &ctx(&t)).unwrap();
        assert!(take_lease(&t.env(), &p.id, "someone-else").unwrap());
        let r = flush(&t.env()).unwrap();
        assert_eq!((r.busy, r.requests), (1, 0));
        t.now.set(t.now.get() + LEASE_SECS + 1);
        assert_eq!(
            flush(&t.env()).unwrap().delivered,
            1,
            "an expired lease is taken over"
        );
    }

    #[test]
    fn a_slot_left_empty_by_a_dead_writer_is_skipped_after_a_while() {
        let t = TestEnv::new();
        let p = pixel(&t);
        // A writer took slot 1 and died before storing it.
        t.kv.increment(&format!("pq/{}/seq", p.id), 1).unwrap();
        ingest(&t.env(), &p, &events(1, "g"), &ctx(&t)).unwrap();
        assert_eq!(flush(&t.env()).unwrap().delivered, 0);
        t.now.set(t.now.get() + GAP_SECS);
        assert_eq!(flush(&t.env()).unwrap().delivered, 1);
    }

    #[test]
    fn writers_killed_together_cost_one_wait_not_one_per_slot() {
        let t = TestEnv::new();
        let p = pixel(&t);
        let seq = format!("pq/{}/seq", p.id);
        // A crash: a 3-event request died (slots 1-3), one was stored (4), another
        // died (5), one more was stored (6).
        t.kv.increment(&seq, 3).unwrap();
        ingest(&t.env(), &p, &events(1, "a"), &ctx(&t)).unwrap();
        t.kv.increment(&seq, 1).unwrap();
        ingest(&t.env(), &p, &events(1, "b"), &ctx(&t)).unwrap();
        assert_eq!(flush(&t.env()).unwrap().delivered, 0);
        t.now.set(t.now.get() + GAP_SECS);
        assert_eq!(
            flush(&t.env()).unwrap().delivered,
            2,
            "every acknowledged event goes after the one wait"
        );
    }

    #[test]
    fn a_crash_that_also_kills_the_flush_costs_one_wait_not_two() {
        let t = TestEnv::new();
        let p = pixel(&t);
        // A crash: a 2-event request died (slots 1-2), one was stored (3), and the flush
        // died holding the pixel's lease.
        t.kv.increment(&format!("pq/{}/seq", p.id), 2).unwrap();
        ingest(&t.env(), &p, &events(1, "a"), &ctx(&t)).unwrap();
        assert!(take_lease(&t.env(), &p.id, "dead-flush").unwrap());
        assert_eq!(flush(&t.env()).unwrap().busy, 1);
        t.now.set(t.now.get() + LEASE_SECS.max(GAP_SECS) + 1);
        assert_eq!(
            flush(&t.env()).unwrap().delivered,
            1,
            "the dead writers' slots aged while the dead flush's lease ran out"
        );
    }

    #[test]
    fn oversized_batches_and_empty_bodies_are_refused() {
        let t = TestEnv::new();
        let mut p = pixel(&t);
        p.max_batch = 2;
        assert_eq!(
            ingest(&t.env(), &p, &events(3, "b"), &ctx(&t))
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            ingest(&t.env(), &p, &[], &ctx(&t)).unwrap_err().status(),
            400
        );
        let events_in = |v: Value| events_of(&Json::from_value(&v)).map(|list| list.len());
        assert!(events_in(json!("x")).is_err());
        assert!(events_in(json!({"events": {"event": "A"}})).is_err());
        assert_eq!(events_in(json!({"events": [1, 2]})).unwrap(), 2);
        assert_eq!(events_in(json!({"event": "A"})).unwrap(), 1);
    }
}
