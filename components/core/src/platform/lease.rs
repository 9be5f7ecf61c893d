//! Short exclusive leases in the key-value store, so two runs of a background job (two
//! pixel flushes, two webhook sweeps) never work on the same queue at once.
//!
//! A lease is `{owner, until}` under one key, changed only by compare-and-swap. It expires
//! by itself, so a run that dies lets the next take over; the holder renews it before each
//! unit of work that could outlast it.

use crate::ApiError;
use crate::platform::kv::KeyValue;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Record {
    owner: String,
    until: i64,
}

fn encode(owner: &str, until: i64) -> Vec<u8> {
    serde_json::to_vec(&Record {
        owner: owner.to_string(),
        until,
    })
    .expect("leases serialize")
}

/// Takes the lease at `key` for `secs` unless someone else holds an unexpired one.
pub fn take(
    kv: &dyn KeyValue,
    key: &str,
    owner: &str,
    now: i64,
    secs: i64,
) -> Result<bool, ApiError> {
    let current = kv.get(key)?;
    if let Some(bytes) = &current
        && let Ok(l) = serde_json::from_slice::<Record>(bytes)
        && l.until > now
        && l.owner != owner
    {
        return Ok(false);
    }
    kv.compare_and_swap(key, current.as_deref(), &encode(owner, now + secs))
}

/// Extends our lease by `secs` from `now`; `false` if it is no longer ours.
pub fn renew(
    kv: &dyn KeyValue,
    key: &str,
    owner: &str,
    now: i64,
    secs: i64,
) -> Result<bool, ApiError> {
    let Some(current) = kv.get(key)? else {
        return Ok(false);
    };
    let ours =
        serde_json::from_slice::<Record>(&current).is_ok_and(|l| l.owner == owner && l.until > now);
    if !ours {
        return Ok(false);
    }
    kv.compare_and_swap(key, Some(&current), &encode(owner, now + secs))
}

/// Gives the lease up if it is still ours.
pub fn release(kv: &dyn KeyValue, key: &str, owner: &str) -> Result<(), ApiError> {
    if let Some(current) = kv.get(key)?
        && serde_json::from_slice::<Record>(&current).is_ok_and(|l| l.owner == owner)
    {
        kv.compare_and_swap(key, Some(&current), &encode("", 0))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::kv::MemoryKv;

    #[test]
    fn a_held_lease_is_refused_to_others_until_it_expires() {
        let kv = MemoryKv::new();
        assert!(take(&kv, "l", "a", 100, 30).unwrap());
        assert!(!take(&kv, "l", "b", 110, 30).unwrap());
        assert!(
            take(&kv, "l", "a", 110, 30).unwrap(),
            "the holder may take it again"
        );
        assert!(
            take(&kv, "l", "b", 141, 30).unwrap(),
            "an expired lease is taken over"
        );
        assert!(
            !renew(&kv, "l", "a", 142, 30).unwrap(),
            "a lost lease is not renewed"
        );
        assert!(renew(&kv, "l", "b", 142, 30).unwrap());
        release(&kv, "l", "a").unwrap();
        assert!(
            !take(&kv, "l", "a", 150, 30).unwrap(),
            "only the holder releases"
        );
        release(&kv, "l", "b").unwrap();
        assert!(take(&kv, "l", "a", 150, 30).unwrap());
    }
}
