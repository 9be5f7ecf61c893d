//! The write buffer: new small keys logged and held, read first, merged into the table in
//! rounds, replayed after a crash; a model of the whole against random writes.

use super::key_filter::*;
use super::*;

/// A file store with a key filter and no threads: the test merges.
fn buffering(dir: &tempfile::TempDir) -> SqliteBackend {
    let b = unfiltered(dir);
    build_filter(&b, &mut || {});
    b
}

fn in_table(b: &SqliteBackend, key: &str) -> Option<Vec<u8>> {
    lock(&b.shared.writer)
        .query_row(SELECT, params!["s", key], |r| r.get(0))
        .optional()
        .unwrap()
}

fn log_rows(b: &SqliteBackend) -> i64 {
    lock(&b.shared.writer)
        .query_row("SELECT count(*) FROM tiktok_edge_kv_buffer", [], |r| {
            r.get(0)
        })
        .unwrap()
}

fn buffered(b: &SqliteBackend) -> usize {
    b.shared.buffer.as_ref().unwrap().len()
}

/// A value the buffer keeps in its log row, not in memory.
fn too_big_to_hold() -> Vec<u8> {
    vec![b'x'; buffer::MAX_HELD_VALUE + 1]
}

/// The seq of a buffered key's newest write.
fn buffered_seq(b: &SqliteBackend, key: &str) -> i64 {
    b.shared
        .buffer
        .as_ref()
        .unwrap()
        .entry("s", key)
        .unwrap()
        .seq
}

/// As a killed process leaves it: no merge at close.
fn crash(b: SqliteBackend) {
    lock(&b.shared.merges).merge_at_close = false;
    drop(b);
}

#[test]
fn new_small_keys_are_buffered_read_first_and_merged_into_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    b.set("s", "old", b"in the table").unwrap();
    b.shared.merge_round().unwrap();
    let marks: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("m{i:03}"), i.to_string().into_bytes()))
        .collect();
    let big = too_big_to_hold();
    let mut pairs = marks.clone();
    pairs.push(("big".into(), big.clone()));
    b.set_many("s", &pairs).unwrap();
    // The marks are in the log and the buffer only; a new big value and a key the
    // table had before went to the table.
    assert_eq!((buffered(&b), log_rows(&b)), (100, 100));
    assert_eq!(in_table(&b, "m000"), None);
    assert_eq!(in_table(&b, "big"), Some(big.clone()));
    for (k, v) in &marks {
        assert_eq!(b.get("s", k).unwrap().as_ref(), Some(v), "{k}");
    }
    assert!(b.exists("s", "m042").unwrap());
    let many = b
        .get_many("s", &["m001".into(), "none".into(), "old".into()])
        .unwrap();
    assert_eq!(many[0].1.as_deref(), Some(&b"1"[..]));
    assert_eq!(
        (many[1].1.as_deref(), many[2].1.as_deref()),
        (None, Some(&b"in the table"[..]))
    );

    // Every kind of write to a buffered key goes through the buffer.
    b.set("s", "n", &1i64.to_le_bytes()).unwrap();
    assert_eq!(b.increment("s", "n", 2).unwrap(), 3);
    assert!(
        !b.compare_and_swap("s", "m001", Some(b"nope"), b"x")
            .unwrap()
    );
    assert!(
        b.compare_and_swap("s", "m001", Some(b"1"), b"swapped")
            .unwrap()
    );
    b.delete("s", "m002").unwrap();
    b.delete_many("s", &["m003".into()]).unwrap();
    b.set("s", "m004", &big).unwrap();
    assert_eq!(in_table(&b, "n"), None, "a buffered counter stays buffered");
    assert_eq!(
        in_table(&b, "m004"),
        None,
        "a big value on a buffered key is logged"
    );
    assert_eq!(
        b.get("s", "m004").unwrap(),
        Some(big.clone()),
        "read from its log row"
    );
    assert_eq!(
        b.get("s", "m001").unwrap().as_deref(),
        Some(&b"swapped"[..])
    );
    assert_eq!(b.get("s", "m002").unwrap(), None);
    assert!(!b.exists("s", "m003").unwrap());
    let listed = b.list_keys("s", None, MAX_PAGE).unwrap().keys;
    assert_eq!(listed.len(), 100 - 2 + 3, "{listed:?}");
    assert!(!listed.contains(&"m002".to_string()) && listed.contains(&"n".to_string()));

    b.shared.merge_round().unwrap();
    assert_eq!((buffered(&b), log_rows(&b)), (0, 0));
    assert_eq!(in_table(&b, "m000").as_deref(), Some(&b"0"[..]));
    assert_eq!(in_table(&b, "m001").as_deref(), Some(&b"swapped"[..]));
    assert_eq!((in_table(&b, "m002"), in_table(&b, "m003")), (None, None));
    assert_eq!(in_table(&b, "m004"), Some(big));
    assert_eq!(b.increment("s", "n", 0).unwrap(), 3);
    assert_eq!(b.list_keys("s", None, MAX_PAGE).unwrap().keys, listed);
}

#[tokio::test]
async fn grouped_writes_buffer_too_and_a_repeat_in_the_group_stays_newest() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    let set = |k: &str, v: &[u8]| Write::Set {
        key: k.into(),
        value: v.to_vec(),
    };
    let writes = vec![
        b.write("s", set("a", b"1")),
        b.write("s", set("a", b"2")),
        b.write("s", Write::DeleteMany(vec!["b".into()])),
        b.write(
            "s",
            Write::SetMany(vec![
                ("b".into(), b"3".to_vec()),
                ("c".into(), b"4".to_vec()),
            ]),
        ),
    ];
    for answer in futures::future::join_all(writes).await {
        answer.unwrap();
    }
    assert_eq!(buffered(&b), 3);
    assert_eq!(b.get("s", "a").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(b.get("s", "b").unwrap().as_deref(), Some(&b"3"[..]));
    b.shared.merge_round().unwrap();
    assert_eq!(in_table(&b, "a").as_deref(), Some(&b"2"[..]));
    assert_eq!(in_table(&b, "c").as_deref(), Some(&b"4"[..]));
}

#[test]
fn a_crash_loses_no_buffered_write_even_mid_merge() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    b.set("s", "kept", b"1").unwrap();
    b.set("s", "gone", b"2").unwrap();
    b.set("s", "changed", b"3").unwrap();
    // Copied to the table, not yet retired; then written again: the newer writes
    // must win over the copies when the log is replayed.
    b.shared.merge_chunks().unwrap();
    assert_eq!(in_table(&b, "gone").as_deref(), Some(&b"2"[..]));
    b.delete("s", "gone").unwrap();
    b.set("s", "changed", b"4").unwrap();
    b.set("s", "late", b"5").unwrap();
    crash(b);
    let again = SqliteBackend::open(&dir.path().join("kv.sqlite")).unwrap();
    assert_eq!(again.get("s", "kept").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(again.get("s", "gone").unwrap(), None);
    assert_eq!(
        again.get("s", "changed").unwrap().as_deref(),
        Some(&b"4"[..])
    );
    assert_eq!(again.get("s", "late").unwrap().as_deref(), Some(&b"5"[..]));
    assert_eq!(log_rows(&again), 0, "merged at open");
}

#[test]
fn a_logged_value_whose_row_is_retired_is_read_from_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    let big = too_big_to_hold();
    b.set("s", "k", b"v").unwrap();
    b.set("s", "k", &big).unwrap();
    let upto = b.shared.merge_chunks().unwrap();
    // The end of a round: the log rows are deleted before the entries go.
    lock(&b.shared.writer)
        .execute(buffer::RETIRE, [0, upto])
        .unwrap();
    assert_eq!(buffered(&b), 1);
    assert_eq!(b.get("s", "k").unwrap(), Some(big.clone()));
    assert!(b.compare_and_swap("s", "k", Some(&big), b"new").unwrap());
    assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"new"[..]));
}

#[test]
fn a_merge_drops_what_the_cache_read_from_the_table_before() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    let big = too_big_to_hold();
    // One write puts the key in the table (too big to buffer) and then in the buffer.
    b.set_many(
        "s",
        &[("k".into(), big.clone()), ("k".into(), b"small".to_vec())],
    )
    .unwrap();
    assert_eq!(in_table(&b, "k"), Some(big.clone()));
    // A read that found the table's copy (a reader that missed the buffer just
    // before the write) kept it.
    let Cached::Miss(generation) = b.shared.cache.get("s", "k") else {
        panic!("cached")
    };
    b.shared.cache.fill("s", "k", &big, generation);
    b.shared.merge_round().unwrap();
    assert_eq!(buffered(&b), 0);
    assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"small"[..]));
}

#[test]
fn a_logged_value_written_again_is_read_from_its_newer_entry() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    let big = too_big_to_hold();
    b.set("s", "k", b"v").unwrap();
    b.set("s", "k", &big).unwrap();
    let old = buffered_seq(&b, "k");
    // A reader took that entry; then the key was written again and the old row
    // retired before the reader read it.
    b.set("s", "k", b"newer").unwrap();
    lock(&b.shared.writer)
        .execute(buffer::RETIRE, [old, old])
        .unwrap();
    assert_eq!(
        b.logged_value("s", "k", old).unwrap(),
        Some(Some(b"newer".to_vec()))
    );
    b.set("s", "k", &big).unwrap();
    let newer = buffered_seq(&b, "k");
    assert_eq!(b.logged_value("s", "k", old).unwrap(), Some(Some(big)));
    // Same seq, row gone: merged and retired, the table has it.
    lock(&b.shared.writer)
        .execute(buffer::RETIRE, [newer, newer])
        .unwrap();
    assert_eq!(b.logged_value("s", "k", newer).unwrap(), None);
}

#[test]
fn a_round_keeps_what_was_written_during_it() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    b.set("s", "a", b"1").unwrap();
    b.set("s", "b", b"1").unwrap();
    // Nothing copied yet: nothing retired.
    b.shared.retire_merged(2).unwrap();
    assert_eq!((buffered(&b), log_rows(&b)), (2, 2));
    b.delete("s", "b").unwrap();
    let upto = b.shared.merge_chunks().unwrap();
    b.set("s", "a", b"2").unwrap();
    b.shared.retire_merged(upto).unwrap();
    assert_eq!(buffered(&b), 1, "the newer write stays buffered");
    assert_eq!(b.get("s", "a").unwrap().as_deref(), Some(&b"2"[..]));
    b.shared.merge_round().unwrap();
    assert_eq!((buffered(&b), log_rows(&b)), (0, 0));
    assert_eq!(in_table(&b, "a").as_deref(), Some(&b"2"[..]));
}

#[test]
fn list_keys_pages_merge_the_buffer_with_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    let big = too_big_to_hold();
    // Even keys in the table (big values are not buffered), odd ones buffered.
    for i in (0..40).step_by(2) {
        b.set("s", &format!("k{i:02}"), &big).unwrap();
    }
    for i in (1..40).step_by(2) {
        b.set("s", &format!("k{i:02}"), b"v").unwrap();
    }
    // Copied to the table but still buffered, then deleted: hidden from the table.
    b.set("s", "k40", b"v").unwrap();
    b.set("s", "k41", b"v").unwrap();
    b.shared.merge_chunks().unwrap();
    b.delete("s", "k40").unwrap();
    b.delete("s", "k41").unwrap();
    b.set("s", "k42", b"v").unwrap();
    let expected: Vec<String> = (0..40).chain([42]).map(|i| format!("k{i:02}")).collect();
    for limit in [1, 3, 7, 100] {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = b.list_keys("s", cursor.as_deref(), limit).unwrap();
            assert!(page.keys.len() <= limit);
            keys.extend(page.keys);
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(keys, expected, "pages of {limit}");
    }
}

#[test]
fn keys_merged_after_a_filter_rebuild_are_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let b = buffering(&dir);
    b.set("s", "mark", b"1").unwrap();
    // The rebuild scans the table, where the mark is not yet; the buffer has it.
    build_filter(&b, &mut || {});
    assert_eq!(buffered(&b), 1);
    assert_eq!(b.get("s", "mark").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(b.exists("s", "mark").unwrap());
    b.set("s", "mark", &[7; 100]).unwrap();
    assert_eq!(b.get("s", "mark").unwrap().as_deref(), Some(&[7; 100][..]));
    b.shared.merge_round().unwrap();
    assert_eq!(buffered(&b), 0);
    assert!(!absent_in_filter(&b, "s", "mark"));
    assert_eq!(b.get("s", "mark").unwrap().as_deref(), Some(&[7; 100][..]));
    assert!(b.exists("s", "mark").unwrap());
}

#[test]
fn a_full_buffer_sends_new_keys_to_the_table() {
    const KEYS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let b = unfiltered_with(
        &dir,
        &SqliteOptions {
            write_buffer_keys: KEYS,
        },
    );
    build_filter(&b, &mut || {});
    let pairs: Vec<(String, Vec<u8>)> = (0..KEYS + 10)
        .map(|i| (format!("m{i}"), b"v".to_vec()))
        .collect();
    b.set_many("s", &pairs).unwrap();
    assert_eq!(buffered(&b), KEYS);
    assert_eq!(in_table(&b, "m999").as_deref(), None);
    assert_eq!(
        in_table(&b, &format!("m{}", KEYS + 9)).as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(b.get("s", "m0").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        b.get("s", &format!("m{}", KEYS + 9)).unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn a_store_with_no_write_buffer_writes_every_key_to_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let b = unfiltered_with(
        &dir,
        &SqliteOptions {
            write_buffer_keys: 0,
        },
    );
    build_filter(&b, &mut || {});
    b.set("s", "mark", b"1").unwrap();
    assert!(b.shared.buffer.is_none());
    assert_eq!(in_table(&b, "mark").as_deref(), Some(&b"1"[..]));
}

#[test]
fn a_merge_round_waits_for_a_burst_to_end_or_the_buffer_to_fill() {
    let (second, none) = (Duration::from_secs(1), Duration::ZERO);
    // Nothing buffered: nothing to do, however long.
    assert!(!round_due(0, 100, MERGE_INTERVAL, MERGE_INTERVAL));
    // Keys still coming, buffer below three quarters: wait.
    assert!(!round_due(74, 100, none, none));
    assert!(!round_due(74, 100, second / 2, MERGE_INTERVAL - second));
    // Three quarters full, quiet for a second, or a minute since the last round.
    assert!(round_due(75, 100, none, none));
    assert!(round_due(1, 100, MERGE_WHEN_QUIET, none));
    assert!(round_due(1, 100, none, MERGE_INTERVAL));
    // A huge capacity does not overflow.
    assert!(!round_due(1, usize::MAX, none, none));
}

/// Writers on their own keys, each checking every answer against a model of them,
/// while merge rounds and key filter rebuilds run; then a crash and a reopen.
#[test]
fn writers_agree_with_a_model_through_merges_rebuilds_and_a_crash() {
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(buffering(&dir));
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut rounds, mut most_buffered) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                most_buffered = most_buffered.max(buffered(&b));
                b.shared.merge_round().unwrap();
                if rounds % 4 == 0 {
                    build_filter(&b, &mut || {});
                }
                rounds += 1;
            }
            (rounds, most_buffered)
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                let prefix = format!("w{t}/");
                for step in 0..1500 {
                    let key = format!("{prefix}{:02}", rng.usize(..40));
                    let value = match rng.u8(..4) {
                        0 => too_big_to_hold(),
                        _ => format!("{step}").into_bytes(),
                    };
                    let op = match rng.u8(..6) {
                        0 => Write::Delete { key: key.clone() },
                        1 => Write::DeleteMany(vec![key.clone()]),
                        2 => Write::SetMany(vec![(key.clone(), value.clone())]),
                        3 if model.get(&key).is_none_or(|v| v.len() == 8) => Write::Increment {
                            key: key.clone(),
                            delta: 3,
                        },
                        4 => Write::CompareAndSwap {
                            key: key.clone(),
                            expected: model.get(&key).cloned(),
                            new: value.clone(),
                        },
                        _ => Write::Set {
                            key: key.clone(),
                            value: value.clone(),
                        },
                    };
                    let answer = if step % 2 == 0 {
                        b.run("s", &op).unwrap()
                    } else {
                        futures::executor::block_on(b.write("s", op.clone())).unwrap()
                    };
                    match &op {
                        Write::Delete { .. } | Write::DeleteMany(_) => {
                            model.remove(&key);
                        }
                        Write::Increment { delta, .. } => {
                            let n = model
                                .get(&key)
                                .map_or(0, |v| i64::from_le_bytes(v[..].try_into().unwrap()))
                                + delta;
                            assert_eq!(answer, Written::Counter(n), "{key}");
                            model.insert(key.clone(), n.to_le_bytes().to_vec());
                        }
                        Write::CompareAndSwap { new, .. } => {
                            assert_eq!(answer, Written::Swapped(true), "{key}");
                            model.insert(key.clone(), new.clone());
                        }
                        _ => {
                            model.insert(key.clone(), value);
                        }
                    }
                    assert_eq!(
                        b.get("s", &key).unwrap(),
                        model.get(&key).cloned(),
                        "{key} at {step}"
                    );
                    assert_eq!(b.exists("s", &key).unwrap(), model.contains_key(&key));
                    if step % 50 == 0 {
                        let listed: Vec<String> = b
                            .list_keys("s", Some(&format!("w{t}")), MAX_PAGE)
                            .unwrap()
                            .keys
                            .into_iter()
                            .filter(|k| k.starts_with(&prefix))
                            .collect();
                        assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
                        let keys: Vec<String> = model.keys().cloned().collect();
                        let many = b.get_many("s", &keys).unwrap();
                        assert!(many.iter().all(|(k, v)| v.as_ref() == model.get(k)));
                    }
                }
                model
            })
        })
        .collect();
    let models: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let (rounds, most_buffered) = background.join().unwrap();
    assert!(
        rounds > 1 && most_buffered > 0,
        "{rounds} rounds, {most_buffered}"
    );
    crash(Arc::into_inner(b).unwrap());
    let again = SqliteBackend::open(&dir.path().join("kv.sqlite")).unwrap();
    let total: usize = models.iter().map(BTreeMap::len).sum();
    for model in models {
        for (k, v) in &model {
            assert_eq!(again.get("s", k).unwrap().as_ref(), Some(v), "{k}");
        }
    }
    let stored = again.list_keys("s", None, MAX_PAGE).unwrap().keys;
    assert_eq!(stored.len(), total, "no deleted key came back");
}

#[test]
fn a_merge_transaction_is_sized_to_hold_the_writers_lock_about_a_millisecond() {
    // At the pace of a small table, chunks stay at their most.
    assert_eq!(
        next_chunk(MERGE_CHUNK, Duration::from_micros(400)),
        MERGE_CHUNK
    );
    // Four times too slow: a quarter as many keys next time.
    assert_eq!(next_chunk(256, MERGE_HOLD * 4), 64);
    // A stall (a page fault, a checkpoint's fsync) never stops the merge.
    assert_eq!(next_chunk(16, Duration::from_secs(2)), MIN_MERGE_CHUNK);
    // A chunk of nothing, or one that took no time, is no evidence of slowness.
    assert_eq!(next_chunk(0, Duration::ZERO), MERGE_CHUNK);
    assert_eq!(next_chunk(64, Duration::ZERO), MERGE_CHUNK);
}

#[test]
fn a_filter_build_that_panics_is_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let b = unfiltered(&dir);
    b.set("s", "k", b"v").unwrap();
    let conn = open_reader(b.shared.path.as_ref().unwrap()).unwrap();
    let failed = b
        .shared
        .build_filter_guarded(&conn, MAX_FILTERED_KEYS, &mut || panic!("a test panic"));
    assert_eq!(failed.err().as_deref(), Some("the build panicked"));
    assert!(
        !b.shared.filter.building(),
        "commits stopped adding to the build"
    );
    assert!(b.shared.filter.lookup().is_none());
    assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(matches!(
        b.shared
            .build_filter_guarded(&conn, MAX_FILTERED_KEYS, &mut || {}),
        Ok(Built::Filter { .. })
    ));
    assert!(!absent_in_filter(&b, "s", "k"));
}
