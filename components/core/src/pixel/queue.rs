//! The durable per-pixel event queue, dedup marks, dead letters and counters.
//!
//! Layout (all under `pq/{pixel}/`, the pixel id being unique across organizations):
//! - `seq`: a counter; a request with N events takes slots `seq+1 ..= seq+N` with one
//!   atomic increment, then writes them with one batch write *before* it answers, so an
//!   acknowledged event is stored. A writer that dies between the two leaves empty slots
//!   it never acknowledged; the forwarder skips such a gap once it is old.
//! - `seen`: when `seq` was seen where, which tells how old a gap is (see [`crate::platform::gaps`]).
//! - `e/{slot}`: a run of queued events (`QueuedEvent`s in a JSON array) in slots
//!   `slot, slot+1, …`: a request's events are stored under one key, not one each (a
//!   key costs the store far more than its bytes; `docs/performance.md`). A run is deleted once TikTok took all
//!   of it, after the head moved past it (`Head::sent_runs`); the forwarder notes how
//!   far into a run a batch that ended inside it went (`Head::run`). A key holding one
//!   event as an object is a run of one (what earlier versions stored). Versions before
//!   runs read a run as an empty slot: drain the queues before going back to one.
//! - `head`: the forwarder's position (`Head`), changed only under the lease.
//! - `lease`: who is flushing this pixel, until when (compare-and-swap), so two flushes
//!   never send the same events.
//! - `dead/seq`, `dead/{n}`: dead letters, listed and replayable.
//! - `dedup/{digest}`: when (pixel, event, event_id) was first accepted (48 h window).
//!   The digest is the first 128 bits of a SHA-256, in base64url (22 characters): marks
//!   are most of the store's keys, random ones, and a shorter key packs more of them in a
//!   page. Marks written with the whole digest in hex (64 characters) before are still
//!   retired by the digest they were logged with.
//! - `marks/seq`, `marks/{n}`, `marks/done`: the marks of events that left the queue
//!   (sent, or dead), in the order they left, to be deleted once their 48 h are over.
//!   Marks are random keys the store cannot list by age, so without this log every
//!   event ever accepted would keep its mark forever.
//! - `stats/{name}`: counters. `received` is not one: it is derived (slots handed out,
//!   less those the forwarder or a replay took again, plus rejected and deduplicated),
//!   which saves every request a write of its own.

use crate::ApiError;
use crate::pixel::registry::Pixel;
use crate::platform::env::Env;
use crate::platform::json_writer::{Members, ToJson};
use crate::platform::kv::{KeyValue, get_json, update_json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// TikTok's dedup window for (event_source_id, event, event_id) (§3.3).
pub const DEDUP_WINDOW_SECS: i64 = 48 * 3600;

/// What names the dedup mark of (event, event_id).
fn dedup_hash(event: &str, event_id: &str) -> u128 {
    let digest =
        crate::platform::crypto::sha256_of(&[event.as_bytes(), b"\0", event_id.as_bytes()]);
    // 128 bits: an accidental collision needs about 2^64 marks, an engineered one about as
    // much work.
    u128::from_be_bytes(digest[..16].try_into().expect("16 of 32 bytes"))
}

/// The dedup mark's name for (event, event_id).
fn dedup_digest(event: &str, event_id: &str) -> String {
    digest_of(dedup_hash(event, event_id))
}

/// A dedup mark's name for its [`dedup_hash`].
fn digest_of(hash: u128) -> String {
    URL_SAFE_NO_PAD.encode(hash.to_be_bytes())
}

/// Which of `hashes` repeat an earlier one. Sorting (hash, position) puts each one's
/// first sighting at the head of its run; cheaper than a `HashSet` of the marks' names
/// (SipHash over 50-character keys, and a copy of each), 1 % of the server's time under
/// 50-event batches.
fn repeats(hashes: &[u128]) -> Vec<bool> {
    let mut order: Vec<(u128, usize)> = hashes.iter().copied().zip(0..).collect();
    order.sort_unstable();
    let mut repeat = vec![false; hashes.len()];
    for pair in order.windows(2) {
        if pair[0].0 == pair[1].0 {
            repeat[pair[1].1] = true;
        }
    }
    repeat
}

/// One event waiting for TikTok: already validated, enriched and hashed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedEvent<D = Value> {
    /// TikTok's `data[]` item: typed as ingest builds it ([`crate::pixel::event::Prepared`]),
    /// JSON once read back.
    pub data: D,
    pub received_at: i64,
}

/// As its `Serialize` derive writes it, faster ([`crate::platform::json_writer`]).
impl<D: ToJson> ToJson for QueuedEvent<D> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let QueuedEvent { data, received_at } = self;
        Members::new(out)
            .field("data", data)
            .field("received_at", received_at)
            .end();
    }
}

/// A dead letter: an event TikTok refused for good, or that failed too often.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub event: QueuedEvent,
    pub code: i64,
    pub message: String,
    pub request_id: String,
    pub attempts: u32,
    pub dead_at: i64,
}

/// The forwarder's position in one pixel's queue.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Head {
    /// The next slot to send.
    pub next: u64,
    /// The first slot (the key) of the run `next` is inside of, when a batch took only
    /// the first part of that run; `None` when `next` starts a run (or is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    /// Runs the last batch sent to their end, deleted once the head is past them: a
    /// flush that dies between the two leaves them here for the next one. (Deleted
    /// first, a crash would leave the head inside a deleted run, and the part of the
    /// next run the batch took would be sent again.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_runs: Vec<u64>,
    /// Failed attempts of the batch at `next`.
    pub attempts: u32,
    /// Do not try before this time (backoff).
    pub retry_at: i64,
    pub last_error: Option<String>,
    /// When the oldest retired marks are due to be forgotten (`None`: none waiting).
    #[serde(default)]
    pub marks_due: Option<i64>,
}

impl Head {
    /// Notes marks retired to be forgotten at `due`.
    pub fn marks_retired(&mut self, due: Option<i64>) {
        if let Some(due) = due {
            self.marks_due = Some(self.marks_due.map_or(due, |d| d.min(due)));
        }
    }

    pub fn marks_are_due(&self, now: i64) -> bool {
        self.marks_due.is_some_and(|due| due <= now)
    }
}

/// Dedup marks to forget once their window is over: those of a batch of events that
/// left the queue (`marks/{n}`).
#[derive(Debug, Serialize, Deserialize)]
struct RetiredMarks {
    /// When the youngest of them is past the window.
    due: i64,
    /// (digest, the time the mark was set): a mark set again since, by the same event
    /// accepted anew after its window, is a newer one and is kept.
    marks: Vec<(String, i64)>,
}

/// Most events in one run: a request's events are stored in runs of at most this many,
/// and a bigger request (a replay of many dead letters) in several.
const MAX_RUN_EVENTS: usize = crate::pixel::registry::MAX_BATCH;
/// Most bytes in one run (unless one event alone is bigger), far below what a store
/// takes in one value (1 MiB on tiktok-edge), whatever the events' sizes.
const MAX_RUN_BYTES: usize = 256 << 10;

/// The next events to send from a queue ([`Queue::next_batch`]).
#[derive(Debug)]
pub enum Next {
    /// Events from the head's slot on, in slot order.
    Batch(Batch),
    /// No event at the head's slot (an empty slot: a writer still storing, or one that
    /// died). The slots before `empty_to` are empty too: where the next run begins, or
    /// past the slots read.
    Empty { empty_to: u64 },
}

#[derive(Debug)]
pub struct Batch {
    /// The events, from the head's slot on.
    pub events: Vec<QueuedEvent>,
    /// The slot after the last event taken: the head's next position once sent.
    pub next: u64,
    /// The run the batch ends inside of (its first slot), when it took only part of it.
    pub run: Option<u64>,
    /// The runs the batch took to their end (first slots), deleted once it is sent.
    finished: Vec<u64>,
}

impl Batch {
    /// Moves `head` past the sent batch; [`Queue::remove_sent`] then deletes the runs
    /// it finished.
    pub fn advance(self, head: &mut Head) {
        head.next = self.next;
        head.run = self.run;
        head.sent_runs = self.finished;
    }
}

/// A stored run: its events, or `None` for a value no version wrote (skipped as an
/// empty slot).
fn parse_run(value: &[u8]) -> Option<Vec<QueuedEvent>> {
    match value.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(value).ok(),
        _ => serde_json::from_slice(value).ok().map(|e| vec![e]),
    }
}

pub struct Queue<'a> {
    kv: &'a dyn KeyValue,
    /// `pq/{pixel}/`, which begins every key of the queue.
    prefix: String,
}

/// Counters kept per pixel.
pub mod stat {
    pub const REJECTED: &str = "rejected";
    pub const DEDUPLICATED: &str = "deduplicated";
    pub const DELIVERED: &str = "delivered";
    pub const DEAD: &str = "dead";
    /// Events put in new slots again (dead letters replayed, a refused batch's survivors
    /// moved to the tail): slots that are not new events.
    pub const REQUEUED: &str = "requeued";
}

/// What the dedup check decided for the events of one request.
#[derive(Default)]
pub struct Sightings {
    /// By event: not seen within 48 h (to accept).
    pub fresh: Vec<bool>,
    /// Marks to write together with the accepted events ([`Queue::accept`]).
    marks: Vec<(String, Vec<u8>)>,
}

impl<'a> Queue<'a> {
    pub fn new(kv: &'a dyn KeyValue, pixel: &str) -> Self {
        Queue {
            kv,
            prefix: format!("pq/{pixel}/"),
        }
    }

    /// Keys are built by appending rather than with `format!`: one per event (its mark)
    /// and one per request (its run), and the formatting machinery (padding above all,
    /// a character at a time) was 2 % of the server's time under 50-event batches.
    fn key(&self, rest: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + rest.len());
        key.push_str(&self.prefix);
        key.push_str(rest);
        key
    }

    /// `prefix{rest}{n}`, `n` zero-padded to 20 digits so keys sort by number.
    fn numbered_key(&self, rest: &str, n: u64) -> String {
        let mut digits = [b'0'; 20];
        let (mut n, mut at) = (n, digits.len());
        while n > 0 {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let mut key = String::with_capacity(self.prefix.len() + rest.len() + digits.len());
        key.push_str(&self.prefix);
        key.push_str(rest);
        key.push_str(std::str::from_utf8(&digits).expect("ASCII digits"));
        key
    }

    pub fn slot_key(&self, slot: u64) -> String {
        self.numbered_key("e/", slot)
    }

    fn dead_key(&self, n: u64) -> String {
        self.numbered_key("dead/", n)
    }

    /// Stores a request's accepted events durably, with their dedup marks in the same
    /// write: a failure or a crash stores neither, so a retry of the request counts as
    /// new. (A mark written before its event, as a compare-and-swap would, outlives a
    /// crash between the two, and the client's retry would be answered "deduplicated"
    /// for an event that was never stored.)
    pub fn accept<D: ToJson>(
        &self,
        events: &[QueuedEvent<D>],
        sightings: Sightings,
    ) -> Result<(), ApiError> {
        self.store(events, sightings.marks)
    }

    /// Stores events taken from the queue again (a replay, a batch's survivors) in new
    /// slots at the tail.
    pub fn requeue(&self, events: &[QueuedEvent]) -> Result<(), ApiError> {
        self.store(events, Vec::new())?;
        self.count(stat::REQUEUED, events.len() as i64)
    }

    /// One increment takes the slots, one batch write stores the events (in runs) and
    /// `extra`.
    fn store<D: ToJson>(
        &self,
        events: &[QueuedEvent<D>],
        extra: Vec<(String, Vec<u8>)>,
    ) -> Result<(), ApiError> {
        let mut entries = Vec::with_capacity(1 + extra.len());
        if !events.is_empty() {
            let last = self.kv.increment(&self.key("seq"), events.len() as i64)? as u64;
            let first = last + 1 - events.len() as u64;
            entries.extend(self.runs_of(events, first, MAX_RUN_BYTES));
        }
        entries.extend(extra);
        if !entries.is_empty() {
            self.kv.set_many(&entries)?;
        }
        Ok(())
    }

    /// `events` in slots from `first` on, as runs to store: a run ends after
    /// [`MAX_RUN_EVENTS`] events, or before the event that would take it past
    /// `max_bytes` (an event bigger than that is a run of its own).
    fn runs_of<D: ToJson>(
        &self,
        events: &[QueuedEvent<D>],
        first: u64,
        max_bytes: usize,
    ) -> Vec<(String, Vec<u8>)> {
        let mut runs = Vec::new();
        let (mut start, mut taken) = (first, 0);
        // Sized for typical events, so the buffer is not regrown as it fills.
        let mut value = Vec::with_capacity(768 * events.len().min(MAX_RUN_EVENTS));
        for (event, slot) in events.iter().zip(first..) {
            let before = value.len();
            value.push(if taken == 0 { b'[' } else { b',' });
            event.write_json(&mut value);
            taken += 1;
            // With the closing `]`.
            if value.len() + 1 > max_bytes && taken > 1 {
                // This event starts the next run.
                let moved = value.split_off(before + 1);
                value.truncate(before);
                value.push(b']');
                runs.push((self.slot_key(start), std::mem::take(&mut value)));
                value.push(b'[');
                value.extend_from_slice(&moved);
                (start, taken) = (slot, 1);
            }
            if taken == MAX_RUN_EVENTS {
                value.push(b']');
                runs.push((self.slot_key(start), std::mem::take(&mut value)));
                (start, taken) = (slot + 1, 0);
            }
        }
        if taken > 0 {
            value.push(b']');
            runs.push((self.slot_key(start), value));
        }
        runs
    }

    /// Events received: every slot handed out for a new event, plus those rejected and
    /// deduplicated.
    pub fn received(&self) -> Result<i64, ApiError> {
        self.received_by(self.tail()?)
    }

    /// [`Self::received`] when the last slot handed out is `tail` (read once by a
    /// caller that derives other figures from it too, so they agree).
    pub fn received_by(&self, tail: u64) -> Result<i64, ApiError> {
        Ok(tail as i64 - self.counter(stat::REQUEUED)?
            + self.counter(stat::REJECTED)?
            + self.counter(stat::DEDUPLICATED)?)
    }

    /// The last slot handed out (0 when none).
    pub fn tail(&self) -> Result<u64, ApiError> {
        Ok(self.kv.increment(&self.key("seq"), 0)?.max(0) as u64)
    }

    /// Notes that the last slot handed out at `now` is `tail`; returns the last slot that
    /// may be skipped if empty (see [`crate::platform::gaps::note_tail`]).
    pub fn note_tail(&self, now: i64, tail: u64, wait_secs: i64) -> Result<Option<u64>, ApiError> {
        crate::platform::gaps::note_tail(self.kv, &self.key("seen"), now, tail, wait_secs)
    }

    pub fn head(&self) -> Result<Head, ApiError> {
        Ok(
            get_json::<Head>(self.kv, &self.key("head"))?.unwrap_or(Head {
                next: 1,
                ..Head::default()
            }),
        )
    }

    pub fn set_head(&self, head: &Head) -> Result<(), ApiError> {
        crate::platform::kv::set_json(self.kv, &self.key("head"), head)
    }

    /// The next batch from `head`: at most `max` events (at least 1), in slots up to
    /// `tail`. Whole runs while they fit, then the first part of the one that does not;
    /// it ends before an empty slot. One read: the slots `head.next ..` that `max`
    /// events could fill, and the run `head.next` is inside of.
    pub fn next_batch(&self, head: &Head, tail: u64, max: usize) -> Result<Next, ApiError> {
        let max = max.max(1);
        let from = head.next;
        let to = tail.min(from.saturating_add(max as u64 - 1));
        if to < from {
            return Ok(Next::Empty { empty_to: from });
        }
        let inside = head.run.filter(|r| *r < from);
        let mut keys: Vec<String> = (from..=to).map(|s| self.slot_key(s)).collect();
        keys.extend(inside.map(|r| self.slot_key(r)));
        let mut values = self.kv.get_many(&keys)?;
        // (the slot of its first event here, its key's slot, events)
        let mut runs: Vec<(u64, u64, Vec<QueuedEvent>)> = Vec::new();
        let mut finished = Vec::new();
        if let Some(r) = inside {
            let value = values.pop().flatten();
            if let Some(events) = value.as_deref().and_then(parse_run) {
                let done = (from - r) as usize;
                if done < events.len() {
                    runs.push((from, r, events.into_iter().skip(done).collect()));
                } else {
                    // All of it was taken already: only its key is left to delete.
                    finished.push(r);
                }
            }
        }
        for (slot, value) in (from..=to).zip(values) {
            if let Some(events) = value.as_deref().and_then(parse_run)
                && !events.is_empty()
            {
                runs.push((slot, slot, events));
            }
        }
        let mut batch = Batch {
            events: Vec::new(),
            next: from,
            run: None,
            finished,
        };
        for (at, key, events) in runs.iter_mut() {
            if *at != batch.next || batch.events.len() == max {
                break;
            }
            let room = max - batch.events.len();
            if events.len() <= room {
                batch.next += events.len() as u64;
                batch.finished.push(*key);
                batch.events.append(events);
            } else {
                batch.next += room as u64;
                batch.run = Some(*key);
                batch.events.extend(events.drain(..room));
            }
        }
        Ok(if batch.events.is_empty() {
            Next::Empty {
                empty_to: runs
                    .iter()
                    .map(|(at, ..)| *at)
                    .find(|at| *at > from)
                    .unwrap_or(to + 1),
            }
        } else {
            Next::Batch(batch)
        })
    }

    /// Deletes the runs the head notes as sent ([`Head::sent_runs`]), once it is stored.
    pub fn remove_sent(&self, head: &Head) -> Result<(), ApiError> {
        if head.sent_runs.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = head.sent_runs.iter().map(|s| self.slot_key(*s)).collect();
        self.kv.delete_many(&keys)
    }

    /// [`Self::remove_sent`] for a head read at the start of a flush: the runs are
    /// almost always gone already (deleted by the flush that sent them), and a read is
    /// cheaper than a write, which the store would commit.
    pub fn remove_left_behind(&self, head: &Head) -> Result<(), ApiError> {
        if head.sent_runs.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = head.sent_runs.iter().map(|s| self.slot_key(*s)).collect();
        let values = self.kv.get_many(&keys)?;
        let left: Vec<String> = keys
            .into_iter()
            .zip(values)
            .filter_map(|(key, value)| value.map(|_| key))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        self.kv.delete_many(&left)
    }

    /// Which events of one request are new (not accepted within 48 h): one read for
    /// the request, and the marks are written with the events ([`Self::accept`]). A
    /// repeat inside the request counts as seen. Two requests racing with the same
    /// event_id may both see it as new; TikTok drops the second by the same (event,
    /// event_id) key within the same 48 h, so it is still counted once there.
    pub fn first_sightings(
        &self,
        events: &[(impl AsRef<str>, impl AsRef<str>)],
        now: i64,
    ) -> Result<Sightings, ApiError> {
        let hashes: Vec<u128> = events
            .iter()
            .map(|(event, id)| dedup_hash(event.as_ref(), id.as_ref()))
            .collect();
        let keys: Vec<String> = hashes.iter().map(|h| self.mark_key_of(*h)).collect();
        let seen = self.kv.get_many(&keys)?;
        let stamp = now.to_string().into_bytes();
        let mut fresh = Vec::with_capacity(events.len());
        let mut marks: Vec<(String, Vec<u8>)> = Vec::new();
        let repeats = repeats(&hashes);
        for ((key, seen), repeat) in keys.into_iter().zip(seen).zip(repeats) {
            let seen_at = seen.map(|v| String::from_utf8_lossy(&v).parse::<i64>().unwrap_or(0));
            let new = !repeat && seen_at.is_none_or(|at| now - at > DEDUP_WINDOW_SECS);
            if new {
                marks.push((key, stamp.clone()));
            }
            fresh.push(new);
        }
        Ok(Sightings { fresh, marks })
    }

    fn mark_key(&self, digest: &str) -> String {
        let mut key = self.key("dedup/");
        key.push_str(digest);
        key
    }

    /// [`Self::mark_key`] of a [`dedup_hash`], built in one allocation (one per event).
    fn mark_key_of(&self, hash: u128) -> String {
        const DIGEST_CHARS: usize = 22;
        let mut key = String::with_capacity(self.prefix.len() + "dedup/".len() + DIGEST_CHARS);
        key.push_str(&self.prefix);
        key.push_str("dedup/");
        URL_SAFE_NO_PAD.encode_string(hash.to_be_bytes(), &mut key);
        key
    }

    fn retired_key(&self, n: u64) -> String {
        self.numbered_key("marks/", n)
    }

    /// Logs the dedup marks of events leaving the queue for good (sent, or dead) so they
    /// are deleted once their 48 h are over; returns when that is. Called by the
    /// forwarder, under the pixel's lease, before it removes the events.
    pub fn retire_marks(&self, events: &[QueuedEvent]) -> Result<Option<i64>, ApiError> {
        let marks: Vec<(String, i64)> = events
            .iter()
            .filter_map(|e| {
                let event = e.data.get("event")?.as_str()?;
                let id = e.data.get("event_id")?.as_str()?;
                Some((dedup_digest(event, id), e.received_at))
            })
            .collect();
        let Some(youngest) = marks.iter().map(|(_, at)| *at).max() else {
            return Ok(None);
        };
        let due = youngest + DEDUP_WINDOW_SECS + 1;
        let n = self.kv.increment(&self.key("marks/seq"), 1)? as u64;
        crate::platform::kv::set_json(self.kv, &self.retired_key(n), &RetiredMarks { due, marks })?;
        Ok(Some(due))
    }

    /// Deletes the retired marks whose window is over, oldest first, reading at most
    /// `entries` log entries; returns when to come back (`None`: nothing left waiting).
    /// Each entry's marks (up to one sent batch) go in a write of their own, so a big
    /// backlog never holds the store's commit for long.
    /// Runs under the pixel's lease, so no one else writes the log meanwhile: an entry
    /// missing below `marks/seq` is one a forwarder that died never wrote.
    pub fn forget_expired_marks(&self, now: i64, entries: u64) -> Result<Option<i64>, ApiError> {
        let last = self.kv.increment(&self.key("marks/seq"), 0)?.max(0) as u64;
        let done_key = self.key("marks/done");
        let done = get_json::<u64>(self.kv, &done_key)?.unwrap_or(0);
        if done >= last {
            return Ok(None);
        }
        let to = last.min(done + entries.max(1));
        let keys: Vec<String> = (done + 1..=to).map(|n| self.retired_key(n)).collect();
        let values = self.kv.get_many(&keys)?;
        for ((n, key), value) in (done + 1..=to).zip(keys).zip(values) {
            let mut deletions = match value.map(|b| serde_json::from_slice::<RetiredMarks>(&b)) {
                Some(Ok(r)) if r.due > now => return Ok(Some(r.due)),
                Some(Ok(r)) => self.stale_marks(&r.marks)?,
                // Never written (see above), or unreadable: nothing to forget.
                Some(Err(_)) | None => Vec::new(),
            };
            deletions.push(key);
            self.kv.delete_many(&deletions)?;
            crate::platform::kv::set_json(self.kv, &done_key, &n)?;
        }
        // More entries than `entries` may be due: come back at once.
        Ok((to < last).then_some(now))
    }

    /// The keys of `marks` still holding the time they were retired with.
    fn stale_marks(&self, marks: &[(String, i64)]) -> Result<Vec<String>, ApiError> {
        let keys: Vec<String> = marks.iter().map(|(d, _)| self.mark_key(d)).collect();
        let current = self.kv.get_many(&keys)?;
        Ok(keys
            .into_iter()
            .zip(current)
            .zip(marks)
            .filter_map(|((key, value), (_, set_at))| {
                let at = String::from_utf8_lossy(&value?).parse::<i64>().unwrap_or(0);
                (at <= *set_at).then_some(key)
            })
            .collect())
    }

    pub fn count(&self, name: &str, delta: i64) -> Result<(), ApiError> {
        if delta != 0 {
            self.kv
                .increment(&self.key(&format!("stats/{name}")), delta)?;
        }
        Ok(())
    }

    pub fn counter(&self, name: &str) -> Result<i64, ApiError> {
        self.kv.increment(&self.key(&format!("stats/{name}")), 0)
    }

    pub fn bury(&self, letters: Vec<DeadLetter>) -> Result<(), ApiError> {
        if letters.is_empty() {
            return Ok(());
        }
        let last = self
            .kv
            .increment(&self.key("dead/seq"), letters.len() as i64)? as u64;
        let first = last + 1 - letters.len() as u64;
        let entries: Vec<(String, Vec<u8>)> = letters
            .into_iter()
            .zip(first..)
            .map(|(mut d, n)| {
                d.id = n;
                (
                    self.dead_key(n),
                    serde_json::to_vec(&d).expect("dead letters serialize"),
                )
            })
            .collect();
        self.kv.set_many(&entries)?;
        self.count(stat::DEAD, entries.len() as i64)
    }

    /// Dead letters with ids after `after`, at most `limit`.
    pub fn dead_letters(&self, after: u64, limit: usize) -> Result<Vec<DeadLetter>, ApiError> {
        let last = self.kv.increment(&self.key("dead/seq"), 0)?.max(0) as u64;
        let floor = get_json::<u64>(self.kv, &self.key("dead/floor"))?.unwrap_or(0);
        let mut out = Vec::new();
        let mut from = after.max(floor) + 1;
        while from <= last && out.len() < limit {
            let to = (from + 499).min(last);
            let keys: Vec<String> = (from..=to).map(|n| self.dead_key(n)).collect();
            for value in self.kv.get_many(&keys)?.into_iter().flatten() {
                if let Ok(d) = serde_json::from_slice::<DeadLetter>(&value) {
                    out.push(d);
                    if out.len() == limit {
                        break;
                    }
                }
            }
            from = to + 1;
        }
        Ok(out)
    }

    /// Puts dead letters back in the queue (new slots); returns how many.
    pub fn replay(&self, ids: Option<&[u64]>) -> Result<usize, ApiError> {
        let letters = match ids {
            Some(ids) => {
                let keys: Vec<String> = ids.iter().map(|n| self.dead_key(*n)).collect();
                self.kv
                    .get_many(&keys)?
                    .into_iter()
                    .flatten()
                    .filter_map(|v| serde_json::from_slice::<DeadLetter>(&v).ok())
                    .collect()
            }
            None => self.dead_letters(0, 10_000)?,
        };
        if letters.is_empty() {
            return Ok(0);
        }
        let events: Vec<QueuedEvent> = letters.iter().map(|d| d.event.clone()).collect();
        self.requeue(&events)?;
        let keys: Vec<String> = letters.iter().map(|d| self.dead_key(d.id)).collect();
        self.kv.delete_many(&keys)?;
        self.count(stat::DEAD, -(letters.len() as i64))?;
        if ids.is_none() {
            let last = letters.iter().map(|d| d.id).max().unwrap_or(0);
            update_json(self.kv, &self.key("dead/floor"), |floor: Option<u64>| {
                Ok((Some(floor.unwrap_or(0).max(last)), ()))
            })?;
        }
        Ok(letters.len())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kv::MemoryKv;
    use crate::testing::FlakyKv;

    fn queued(id: &str) -> QueuedEvent {
        QueuedEvent {
            data: serde_json::json!({"event": "Purchase", "event_id": id}),
            received_at: 0,
        }
    }

    #[test]
    fn numbered_keys_are_zero_padded_to_sort_by_number() {
        let kv = MemoryKv::new();
        let q = Queue::new(&kv, "px_1");
        for n in [0, 1, 9, 10, 12_345, 10u64.pow(19), u64::MAX] {
            assert_eq!(q.slot_key(n), format!("pq/px_1/e/{n:020}"));
        }
        assert_eq!(q.dead_key(7), "pq/px_1/dead/00000000000000000007");
        assert_eq!(q.retired_key(7), "pq/px_1/marks/00000000000000000007");
        assert_eq!(q.mark_key("abc"), "pq/px_1/dedup/abc");
        let hash = dedup_hash("Purchase", "1");
        assert_eq!(q.mark_key_of(hash), q.mark_key(&digest_of(hash)));
        assert_eq!(q.mark_key_of(hash).capacity(), q.mark_key_of(hash).len());
        assert_eq!(q.key("seq"), "pq/px_1/seq");
    }

    fn ids(events: &[QueuedEvent]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e.data["event_id"].as_str().unwrap())
            .collect()
    }

    fn queued_n(n: usize, prefix: &str) -> Vec<QueuedEvent> {
        (0..n).map(|i| queued(&format!("{prefix}{i}"))).collect()
    }

    #[test]
    fn a_request_is_stored_in_runs_split_by_count_and_size() {
        let kv = MemoryKv::new();
        let q = Queue::new(&kv, "px");
        let runs = |events: &[QueuedEvent], max_bytes| -> Vec<(String, Vec<QueuedEvent>)> {
            q.runs_of(events, 7, max_bytes)
                .into_iter()
                .map(|(key, value)| (key, parse_run(&value).expect("a run parses")))
                .collect()
        };
        let small = runs(&queued_n(3, "s"), MAX_RUN_BYTES);
        assert_eq!(small.len(), 1);
        assert_eq!(small[0].0, q.slot_key(7));
        assert_eq!(ids(&small[0].1), ["s0", "s1", "s2"]);

        let many = runs(&queued_n(MAX_RUN_EVENTS + 1, "m"), MAX_RUN_BYTES);
        assert_eq!(many.len(), 2, "at most {MAX_RUN_EVENTS} events a run");
        assert_eq!(many[0].1.len(), MAX_RUN_EVENTS);
        assert_eq!(many[1].0, q.slot_key(7 + MAX_RUN_EVENTS as u64));
        assert_eq!(ids(&many[1].1), [format!("m{MAX_RUN_EVENTS}")]);

        // One event serializes to about 60 bytes: three fit in 200, the fourth does not.
        let one = serde_json::to_vec(&queued("b0")).unwrap().len();
        assert!((50..67).contains(&one), "{one}");
        let sized = runs(&queued_n(7, "b"), 200);
        let lengths: Vec<usize> = sized.iter().map(|(_, run)| run.len()).collect();
        assert_eq!(lengths, [3, 3, 1]);
        let keys: Vec<&str> = sized.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, [q.slot_key(7), q.slot_key(10), q.slot_key(13)]);
        for (key, value) in q.runs_of(&queued_n(7, "b"), 7, 200) {
            assert!(value.len() <= 200, "{key}: {} bytes", value.len());
        }
        let alone = runs(&queued_n(2, "x"), 10);
        assert_eq!(
            alone.iter().map(|(_, run)| run.len()).collect::<Vec<_>>(),
            [1, 1],
            "an event bigger than a run is a run of its own"
        );
    }

    /// The batch's ids, or the end of the empty slots.
    fn next(q: &Queue, head: &Head, tail: u64, max: usize) -> Result<Batch, u64> {
        match q.next_batch(head, tail, max).unwrap() {
            Next::Batch(batch) => Ok(batch),
            Next::Empty { empty_to } => Err(empty_to),
        }
    }

    #[test]
    fn batches_take_whole_runs_then_part_of_one_and_resume_inside_it() {
        let kv = MemoryKv::new();
        let q = Queue::new(&kv, "px");
        for (n, prefix) in [(3, "a"), (4, "b"), (2, "c")] {
            q.accept(&queued_n(n, prefix), Sightings::default())
                .unwrap();
        }
        let tail = q.tail().unwrap();
        assert_eq!(tail, 9);
        let mut head = Head {
            next: 1,
            ..Head::default()
        };
        let first = next(&q, &head, tail, 5).unwrap();
        assert_eq!(ids(&first.events), ["a0", "a1", "a2", "b0", "b1"]);
        assert_eq!((first.next, first.run), (6, Some(4)));
        first.advance(&mut head);
        assert_eq!(head.sent_runs, [1]);
        q.remove_sent(&head).unwrap();
        let slot_keys = || -> Vec<String> {
            kv.dump()
                .into_iter()
                .map(|(k, _)| k)
                .filter(|k| k.contains("/e/"))
                .collect()
        };
        assert_eq!(
            slot_keys(),
            [q.slot_key(4), q.slot_key(8)],
            "the run taken whole is gone, the one taken in part is kept"
        );

        let second = next(&q, &head, tail, 5).unwrap();
        assert_eq!(ids(&second.events), ["b2", "b3", "c0", "c1"]);
        assert_eq!((second.next, second.run), (10, None));
        second.advance(&mut head);
        assert_eq!(
            head.sent_runs,
            [4, 8],
            "the run it was inside of, and the next"
        );
        q.remove_sent(&head).unwrap();
        assert!(slot_keys().is_empty());
        assert_eq!(next(&q, &head, tail, 5).unwrap_err(), 10, "nothing left");

        // One at a time, as for a pixel with a test code.
        q.accept(&queued_n(2, "t"), Sightings::default()).unwrap();
        let mut sent = Vec::new();
        while let Ok(batch) = next(&q, &head, q.tail().unwrap(), 1) {
            sent.extend(ids(&batch.events).into_iter().map(String::from));
            batch.advance(&mut head);
            q.remove_sent(&head).unwrap();
        }
        assert_eq!(sent, ["t0", "t1"]);
        assert!(slot_keys().is_empty());
    }

    /// Memory that counts deletes.
    #[derive(Default)]
    struct CountingKv {
        inner: MemoryKv,
        deletes: std::cell::Cell<usize>,
    }

    impl KeyValue for CountingKv {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
            self.inner.set(key, value)
        }
        fn delete(&self, key: &str) -> Result<(), ApiError> {
            self.deletes.set(self.deletes.get() + 1);
            self.inner.delete(key)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, ApiError> {
            self.inner.increment(key, delta)
        }
        fn compare_and_swap(
            &self,
            key: &str,
            expected: Option<&[u8]>,
            new: &[u8],
        ) -> Result<bool, ApiError> {
            self.inner.compare_and_swap(key, expected, new)
        }
    }

    #[test]
    fn a_flush_deletes_only_the_sent_runs_a_dead_one_left_behind() {
        let kv = CountingKv::default();
        let q = Queue::new(&kv, "px");
        for prefix in ["a", "b", "c"] {
            q.accept(&queued_n(2, prefix), Sightings::default())
                .unwrap();
        }
        let mut head = Head {
            next: 1,
            ..Head::default()
        };
        next(&q, &head, 6, 4).unwrap().advance(&mut head);
        assert_eq!(head.sent_runs, [1, 3]);
        // The flush died before deleting them: the next deletes them.
        q.remove_left_behind(&head).unwrap();
        assert_eq!(kv.deletes.get(), 2);
        assert!(kv.inner.get(&q.slot_key(1)).unwrap().is_none());
        assert!(kv.inner.get(&q.slot_key(5)).unwrap().is_some(), "not sent");
        // Deleted already (the usual case): nothing is written.
        q.remove_left_behind(&head).unwrap();
        assert_eq!(kv.deletes.get(), 2);
    }

    #[test]
    fn empty_slots_end_a_batch_and_are_measured_up_to_the_next_run() {
        let kv = MemoryKv::new();
        let q = Queue::new(&kv, "px");
        q.accept(&queued_n(2, "a"), Sightings::default()).unwrap(); // slots 1-2
        kv.increment("pq/px/seq", 3).unwrap(); // a writer that died: slots 3-5
        q.accept(&queued_n(1, "b"), Sightings::default()).unwrap(); // slot 6
        // What an earlier version stored: one event per slot, as an object.
        kv.increment("pq/px/seq", 1).unwrap();
        crate::platform::kv::set_json(&kv, &q.slot_key(7), &queued("old")).unwrap();
        let head = |next| Head {
            next,
            ..Head::default()
        };
        let first = next(&q, &head(1), 7, 100).unwrap();
        assert_eq!(ids(&first.events), ["a0", "a1"], "up to the empty slot");
        assert_eq!(next(&q, &head(3), 7, 100).unwrap_err(), 6);
        assert_eq!(
            next(&q, &head(3), 4, 100).unwrap_err(),
            5,
            "no run in the slots read"
        );
        let last = next(&q, &head(6), 7, 100).unwrap();
        assert_eq!(ids(&last.events), ["b0", "old"]);
        let inside = Head {
            next: 2,
            run: Some(1),
            ..Head::default()
        };
        assert_eq!(ids(&next(&q, &inside, 7, 100).unwrap().events), ["a1"]);
        // A run the head is inside of, deleted by a forwarder that died before moving the
        // head: the rest of its slots read as empty.
        kv.delete(&q.slot_key(1)).unwrap();
        assert_eq!(next(&q, &inside, 7, 100).unwrap_err(), 6);
        let mut head = Head::default();
        last.advance(&mut head);
        q.remove_sent(&head).unwrap();
        let slot_keys: Vec<String> = kv
            .dump()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.contains("/e/"))
            .collect();
        assert!(slot_keys.is_empty(), "both kinds of run are deleted");
    }

    #[test]
    fn only_the_first_of_equal_hashes_is_not_a_repeat() {
        let (a, b, c) = (dedup_hash("Purchase", "1"), dedup_hash("Purchase", "2"), 7);
        assert_eq!(
            repeats(&[a, b, a, c, b, a, c]),
            [false, false, true, false, true, true, true]
        );
        assert!(repeats(&[]).is_empty());
        assert_ne!(dedup_hash("Purchase", "1"), dedup_hash("Purchase1", ""));
        // Marks already stored keep their names: the first 16 bytes of the digest.
        let digest = crate::platform::crypto::sha256_of(&[b"Purchase", b"\0", b"1"]);
        assert_eq!(
            dedup_digest("Purchase", "1"),
            URL_SAFE_NO_PAD.encode(&digest[..16])
        );
    }

    #[test]
    fn events_that_could_not_be_stored_leave_no_dedup_mark_behind() {
        let kv = FlakyKv::default();
        let q = Queue::new(&kv, "px");
        for ids in [vec!["single"], vec!["b1", "b2", "b3"]] {
            let sightings: Vec<(String, String)> = ids
                .iter()
                .map(|id| ("Purchase".to_string(), id.to_string()))
                .collect();
            let events: Vec<QueuedEvent> = ids.iter().map(|id| queued(id)).collect();
            let found = q.first_sightings(&sightings, 100).unwrap();
            assert!(found.fresh.iter().all(|f| *f));
            kv.fail_on("/e/"); // the event slots: a full disk
            assert!(q.accept(&events, found).is_err());
            *kv.fail_on.borrow_mut() = None;
            let again = q.first_sightings(&sightings, 101).unwrap();
            assert!(
                again.fresh.iter().all(|f| *f),
                "a retry of {ids:?} is new, not a duplicate of what was never stored"
            );
        }
    }

    #[test]
    fn a_request_killed_before_its_store_leaves_no_dedup_mark() {
        let kv = MemoryKv::new();
        let q = Queue::new(&kv, "px");
        let single = [("Purchase".to_string(), "once".to_string())];
        assert_eq!(q.first_sightings(&single, 100).unwrap().fresh, [true]);
        // The process dies here, before `accept`: the client gets no answer and retries.
        let retry = q.first_sightings(&single, 101).unwrap();
        assert_eq!(
            retry.fresh,
            [true],
            "the retry is stored, not called a duplicate"
        );
        q.accept(&[queued("once")], retry).unwrap();
        assert_eq!(q.first_sightings(&single, 102).unwrap().fresh, [false]);
    }

    #[test]
    fn the_marks_log_skips_entries_a_dead_forwarder_never_wrote_and_resumes_past_its_limit() {
        let kv = MemoryKv::new();
        let q = Queue::new(&kv, "px");
        let ids = ["a", "b", "c"];
        for (at, id) in ids.iter().enumerate() {
            let sighting = [("Purchase".to_string(), id.to_string())];
            let found = q.first_sightings(&sighting, at as i64).unwrap();
            let mut event = queued(id);
            event.received_at = at as i64;
            q.accept(std::slice::from_ref(&event), found).unwrap();
            if *id == "b" {
                // A forwarder that died after taking a log entry and before writing it.
                kv.increment("pq/px/marks/seq", 1).unwrap();
            }
            q.retire_marks(&[event]).unwrap();
        }
        let marks = || {
            kv.dump()
                .iter()
                .filter(|(k, _)| k.contains("/dedup/"))
                .count()
        };
        let later = DEDUP_WINDOW_SECS + 10;
        assert_eq!(
            q.forget_expired_marks(later, 2).unwrap(),
            Some(later),
            "more to do"
        );
        assert_eq!(marks(), 2, "a's mark went");
        assert_eq!(q.forget_expired_marks(later, 2).unwrap(), None);
        assert_eq!(marks(), 0, "the missing entry was passed over");
        let fresh = q
            .first_sightings(&[("Purchase".to_string(), "c".to_string())], later)
            .unwrap();
        assert_eq!(fresh.fresh, [true]);
    }

    #[test]
    fn marks_logged_with_the_whole_hex_digest_before_are_still_forgotten() {
        let kv = MemoryKv::new();
        let q = Queue::new(&kv, "px");
        // What an earlier version left: a mark named by the whole SHA-256 in hex, and its
        // log entry.
        let old = crate::platform::crypto::sha256_hex(b"Purchase\0a");
        kv.set(&format!("pq/px/dedup/{old}"), b"5").unwrap();
        kv.increment("pq/px/marks/seq", 1).unwrap();
        let entry = RetiredMarks {
            due: 5 + DEDUP_WINDOW_SECS + 1,
            marks: vec![(old.clone(), 5)],
        };
        crate::platform::kv::set_json(&kv, "pq/px/marks/00000000000000000001", &entry).unwrap();
        // Marks now are shorter, and the two never meet.
        let now = q.first_sightings(&[("Purchase", "a")], 6).unwrap();
        assert_eq!(now.marks.len(), 1);
        assert_eq!(
            now.marks[0].0,
            format!("pq/px/dedup/{}", dedup_digest("Purchase", "a"))
        );
        assert_eq!(dedup_digest("Purchase", "a").len(), 22);
        assert_eq!(
            q.forget_expired_marks(DEDUP_WINDOW_SECS + 10, 10).unwrap(),
            None
        );
        assert!(
            kv.dump().iter().all(|(k, _)| !k.contains("/dedup/")),
            "the old mark was left behind"
        );
    }

    #[test]
    fn received_counts_new_events_not_slots_taken_again() {
        let kv = MemoryKv::new();
        let q = Queue::new(&kv, "px");
        let found = q
            .first_sightings(&[("Purchase", "a"), ("Purchase", "b")], 1)
            .unwrap();
        q.accept(&[queued("a"), queued("b")], found).unwrap();
        q.count(stat::REJECTED, 4).unwrap();
        q.count(stat::DEDUPLICATED, 1).unwrap();
        assert_eq!(q.received().unwrap(), 7);
        q.requeue(&[queued("a")]).unwrap();
        assert_eq!(q.tail().unwrap(), 3, "the survivor took a new slot");
        assert_eq!(q.received().unwrap(), 7, "but is not a new event");
    }
}
