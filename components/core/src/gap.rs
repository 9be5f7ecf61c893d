//! Empty slots in a sequence-numbered log (the pixel queue, the webhook log).
//!
//! A writer takes a slot number with one atomic increment, then stores its entry and only
//! then acknowledges. A reader that meets an empty slot cannot tell a writer still storing
//! from one that died (a killed process): it waits, and skips the slot once it has been
//! empty for a while. A crash kills many writers at once, interleaved with writers that
//! finished; so a gap is remembered with the log's tail when it was first seen, and every
//! empty slot up to that tail is old by then and is skipped after the same one wait, not
//! after one wait each.

use serde::{Deserialize, Serialize};

/// The gap a reader is waiting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// When an empty slot was first seen.
    pub since: i64,
    /// The last slot handed out at that time: every slot up to here was taken before.
    pub tail: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A writer may still be storing it: stop here and try again later.
    Wait,
    /// Its writer had `wait_secs` to store it and did not: go past it.
    Skip,
}

/// Decides about the empty slot `slot`, with `tail` the last slot handed out now.
pub fn empty_slot(
    gap: &mut Option<Gap>,
    slot: u64,
    tail: u64,
    now: i64,
    wait_secs: i64,
) -> Verdict {
    match gap {
        Some(g) if slot <= g.tail => {
            if now - g.since >= wait_secs {
                Verdict::Skip
            } else {
                Verdict::Wait
            }
        }
        _ => {
            *gap = Some(Gap { since: now, tail });
            Verdict::Wait
        }
    }
}

/// Forgets the gap once the reader's next slot is past it.
pub fn moved_to(gap: &mut Option<Gap>, next: u64) {
    if gap.is_some_and(|g| next > g.tail) {
        *gap = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wait_covers_every_slot_taken_before_the_gap_was_seen() {
        let mut gap = None;
        assert_eq!(empty_slot(&mut gap, 3, 9, 100, 30), Verdict::Wait);
        assert_eq!(
            empty_slot(&mut gap, 3, 12, 120, 30),
            Verdict::Wait,
            "still fresh"
        );
        assert_eq!(empty_slot(&mut gap, 3, 12, 130, 30), Verdict::Skip);
        moved_to(&mut gap, 4);
        assert_eq!(
            empty_slot(&mut gap, 7, 12, 130, 30),
            Verdict::Skip,
            "taken before the gap was seen"
        );
        moved_to(&mut gap, 10);
        assert_eq!(gap, None, "past the gap's tail it is forgotten");
        assert_eq!(
            empty_slot(&mut gap, 10, 12, 130, 30),
            Verdict::Wait,
            "a slot taken after the gap was seen may belong to a live writer"
        );
    }
}
