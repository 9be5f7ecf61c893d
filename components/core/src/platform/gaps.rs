//! Empty slots in a sequence-numbered log (the pixel queue, the webhook log).
//!
//! A writer takes a slot number with one atomic increment, then stores its entry and only
//! then acknowledges. A reader that meets an empty slot cannot tell a writer still storing
//! from one that died (a killed process): it waits, and skips the slot once it has surely
//! been handed out for a while.
//!
//! When a slot was handed out is learned from sightings of the log's tail: every run of
//! the reader notes "at time t the last slot handed out was n", whether or not it gets the
//! log's lease. An empty slot is as old as the oldest sighting that covers it. So:
//! - a crash kills many writers at once, interleaved with writers that finished: every
//!   empty slot a sighting covers is skipped after the same one wait, not after one each;
//! - when the crash also killed the reader holding the lease, the runs that find the
//!   lease taken still note the tail, so the wait for the dead writers runs while the
//!   dead reader's lease runs out: the log resumes after the longer of the two waits,
//!   not after one and then the other.

use crate::ApiError;
use crate::platform::kv::KeyValue;
use serde::{Deserialize, Serialize};

/// TailTimes kept at most. Runs note one per second at most and those older than the
/// wait are pruned, so this only binds when the wait is long; dropping the oldest is
/// safe (the slots they covered count from a later sighting: a longer wait).
const MAX_TAIL_TIMES: usize = 64;

/// Times at which a log's tail was seen, oldest first: `(unix seconds, last slot handed
/// out)`, both strictly increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailTimes(Vec<(i64, u64)>);

impl TailTimes {
    /// Notes that at `now` the last slot handed out was `tail`, and prunes what the wait
    /// no longer needs. Returns whether anything changed.
    pub fn note(&mut self, now: i64, tail: u64, wait_secs: i64) -> bool {
        let mut changed = true;
        match self.0.last_mut() {
            Some((_, seen)) if *seen >= tail => changed = false,
            // The same second (or a clock behind another run's): one sighting, the later tail.
            Some((at, seen)) if *at >= now => *seen = tail,
            _ => self.0.push((now, tail)),
        }
        // Once a sighting is old enough, it covers every slot up to its tail: the ones
        // before it add nothing.
        if let Some(ripe) = self.0.iter().rposition(|(at, _)| now - at >= wait_secs)
            && ripe > 0
        {
            self.0.drain(..ripe);
            changed = true;
        }
        if self.0.len() > MAX_TAIL_TIMES {
            let extra = self.0.len() - MAX_TAIL_TIMES;
            self.0.drain(..extra);
            changed = true;
        }
        changed
    }

    /// The last slot that, if empty at `now`, has been handed out for at least
    /// `wait_secs` and may be skipped; `None` when no slot is that old yet.
    pub fn skippable_through(&self, now: i64, wait_secs: i64) -> Option<u64> {
        self.0
            .iter()
            .rev()
            .find(|(at, _)| now - at >= wait_secs)
            .map(|(_, tail)| *tail)
    }
}

/// Compare-and-swap attempts at noting a sighting. A run that keeps losing the race
/// goes on without its own: the others' serve as well.
const NOTE_ATTEMPTS: usize = 4;

/// Notes at `key` that at `now` the log's last slot handed out is `tail`; returns the last
/// slot that may be skipped if empty (see [`TailTimes::skippable_through`]). Safe to call
/// from concurrent runs, with or without the log's lease. An unreadable record is
/// replaced: it only delays skipping.
pub fn note_tail(
    kv: &dyn KeyValue,
    key: &str,
    now: i64,
    tail: u64,
    wait_secs: i64,
) -> Result<Option<u64>, ApiError> {
    let mut skippable = None;
    for _ in 0..NOTE_ATTEMPTS {
        let current = kv.get(key)?;
        let mut sightings: TailTimes = current
            .as_deref()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default();
        // Taken before noting: a sighting from now is not old enough for anything.
        skippable = sightings.skippable_through(now, wait_secs);
        if !sightings.note(now, tail, wait_secs) {
            break;
        }
        let bytes = serde_json::to_vec(&sightings).expect("sightings serialize");
        if kv.compare_and_swap(key, current.as_deref(), &bytes)? {
            break;
        }
    }
    Ok(skippable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kv::MemoryKv;

    #[test]
    fn one_wait_covers_every_slot_handed_out_before_the_sighting() {
        let mut s = TailTimes::default();
        s.note(100, 9, 30);
        assert_eq!(s.skippable_through(129, 30), None, "still fresh");
        assert_eq!(s.skippable_through(130, 30), Some(9));
        s.note(110, 12, 30);
        assert_eq!(
            s.skippable_through(130, 30),
            Some(9),
            "slots handed out after the first sighting wait from the second"
        );
        assert_eq!(s.skippable_through(140, 30), Some(12));
    }

    #[test]
    fn sightings_stay_few_and_never_make_a_slot_look_older() {
        let mut s = TailTimes::default();
        assert!(s.note(100, 5, 30));
        assert!(!s.note(101, 5, 30), "the tail did not move");
        assert!(s.note(101, 7, 30));
        assert!(s.note(101, 8, 30), "the same second: one sighting");
        assert_eq!(s, TailTimes(vec![(100, 5), (101, 8)]));
        for t in 102..1000 {
            s.note(t, t as u64, 30);
            assert!(s.0.len() <= 32, "pruned to the wait's span: {}", s.0.len());
        }
        assert_eq!(s.skippable_through(999, 30), Some(969));
        // A long wait: capped, the oldest dropped, so old slots count from later.
        let mut s = TailTimes::default();
        for t in 0..100 {
            s.note(t, t as u64 + 1, 1_000);
        }
        assert_eq!(s.0.len(), MAX_TAIL_TIMES);
        assert_eq!(s.skippable_through(1_036, 1_000), Some(37));
        assert_eq!(s.skippable_through(1_035, 1_000), None);
        // A run whose clock is behind another's does not move a sighting earlier.
        let mut s = TailTimes(vec![(200, 5)]);
        s.note(190, 9, 30);
        assert_eq!(s, TailTimes(vec![(200, 9)]));
    }

    #[test]
    fn note_tail_stores_and_recovers_from_an_unreadable_record() {
        let kv = MemoryKv::new();
        assert_eq!(note_tail(&kv, "seen", 100, 3, 30).unwrap(), None);
        assert_eq!(note_tail(&kv, "seen", 120, 6, 30).unwrap(), None);
        assert_eq!(note_tail(&kv, "seen", 130, 6, 30).unwrap(), Some(3));
        assert_eq!(note_tail(&kv, "seen", 150, 8, 30).unwrap(), Some(6));
        kv.set("seen", b"not json").unwrap();
        assert_eq!(note_tail(&kv, "seen", 160, 9, 30).unwrap(), None);
        assert_eq!(note_tail(&kv, "seen", 190, 9, 30).unwrap(), Some(9));
    }
}
