//! Sending stored events on (the forwarder): per pixel, under a lease, stored events go
//! to `/event/track/` in batches of up to 1,000; retryable codes back off, what TikTok
//! refuses for good is dead-lettered.

use crate::ApiError;
use crate::pixel::queue::{DeadLetter, Next, Queue, QueuedEvent, stat};
use crate::pixel::registry::{self, ALL_PIXELS, Pixel};
use crate::platform::crypto::{random_bytes, random_token};
use crate::platform::env::Env;
use crate::platform::kv::IdIndex;
use crate::platform::lease;
use crate::tiktok::client::Call;
use crate::tiktok::codes::{CodeClass, TikTokError};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Attempts before a batch goes to the dead letters.
pub const MAX_ATTEMPTS: u32 = 8;
/// A lease lasts this long and is renewed before each batch (whose TikTok call times
/// out well within it); a flush that dies lets another take over after it.
pub(super) const LEASE_SECS: i64 = 30;
/// An empty slot older than this is a writer that died before acknowledging.
pub(super) const GAP_SECS: i64 = 30;
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

pub(super) fn take_lease(env: &Env, pixel: &str, owner: &str) -> Result<bool, ApiError> {
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
        let Ok(pixel) = registry::find(env, &id) else {
            continue;
        };
        let queue = Queue::new(env.kv, &pixel.id);
        let head = queue.head()?;
        let tail = queue.tail()?;
        // Noted before the lease, so the wait for writers that died runs even while a
        // flush that died with them still holds it (see `crate::platform::gaps`).
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
        registry::MAX_BATCH
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
        let token = match registry::access_token(env, pixel) {
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
