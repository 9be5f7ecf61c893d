//! The backend's behaviour: reads, writes, limits, group commit, checkpoints, the key
//! filter, the write buffer and its merges, crashes.

use super::*;
use crate::checkpoint::checkpoint;
use crate::key_scan::*;
use crate::merge::*;

#[test]
fn set_get_delete_exists() {
    let b = SqliteBackend::in_memory().unwrap();
    assert_eq!(b.get("s", "k").unwrap(), None);
    b.set("s", "k", b"v1").unwrap();
    b.set("s", "k", b"v2").unwrap();
    assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(b.exists("s", "k").unwrap());
    assert_eq!(
        b.get("other", "k").unwrap(),
        None,
        "stores are separate namespaces"
    );
    b.delete("s", "k").unwrap();
    assert!(!b.exists("s", "k").unwrap());
}

#[test]
fn counters_are_spins_little_endian_i64() {
    let b = SqliteBackend::in_memory().unwrap();
    assert_eq!(b.increment("s", "n", 5).unwrap(), 5);
    assert_eq!(b.increment("s", "n", -2).unwrap(), 3);
    assert_eq!(b.get("s", "n").unwrap().unwrap(), 3i64.to_le_bytes());
    b.set("s", "text", b"hello").unwrap();
    assert_eq!(b.increment("s", "text", 1), Err(KvError::NotACounter));
}

#[test]
fn list_keys_pages_in_order() {
    let b = SqliteBackend::in_memory().unwrap();
    for k in ["c", "a", "b", "d", "e", ""] {
        b.set("s", k, b"x").unwrap();
    }
    let p1 = b.list_keys("s", None, 2).unwrap();
    assert_eq!(p1.keys, ["", "a"], "the empty key is listed too");
    let p2 = b.list_keys("s", p1.cursor.as_deref(), 2).unwrap();
    assert_eq!(p2.keys, ["b", "c"]);
    let p3 = b.list_keys("s", p2.cursor.as_deref(), 2).unwrap();
    assert_eq!(p3.keys, ["d", "e"]);
    assert_eq!(p3.cursor, None);
    let all = b.list_keys("s", None, usize::MAX).unwrap();
    assert_eq!(all.keys.len(), 6, "a huge limit is clamped, not overflowed");
}

#[test]
fn compare_and_swap_only_when_unchanged() {
    let b = SqliteBackend::in_memory().unwrap();
    assert!(b.compare_and_swap("s", "k", None, b"1").unwrap());
    assert!(!b.compare_and_swap("s", "k", None, b"2").unwrap());
    assert!(!b.compare_and_swap("s", "k", Some(b"0"), b"2").unwrap());
    assert!(b.compare_and_swap("s", "k", Some(b"1"), b"2").unwrap());
    assert_eq!(b.get("s", "k").unwrap().unwrap(), b"2");
}

#[test]
fn batches_and_limits() {
    let b = SqliteBackend::in_memory().unwrap();
    b.set_many(
        "s",
        &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
    )
    .unwrap();
    let got = b.get_many("s", &["a".into(), "zz".into()]).unwrap();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), Some(b"1".to_vec())),
            ("zz".to_string(), None)
        ]
    );
    b.delete_many("s", &["a".into(), "b".into()]).unwrap();
    assert!(!b.exists("s", "a").unwrap());
    assert_eq!(b.set("s", &"k".repeat(256), b"x"), Err(KvError::KeyTooLong));
    assert_eq!(
        b.set("s", "k", &vec![0; tiktok_edge_kv::MAX_VALUE_BYTES + 1]),
        Err(KvError::ValueTooLarge)
    );
}

#[tokio::test]
async fn a_read_after_any_write_sees_it_though_the_old_value_was_cached() {
    let b = SqliteBackend::in_memory().unwrap();
    let read = |key: &str| {
        b.get_many("s", &[key.to_string()]).unwrap()[0]
            .1
            .clone()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let writes: Vec<(Write, &str, Option<&str>)> = vec![
        (
            Write::Set {
                key: "k".into(),
                value: b"v2".to_vec(),
            },
            "k",
            Some("v2"),
        ),
        (
            Write::CompareAndSwap {
                key: "k".into(),
                expected: Some(b"v2".to_vec()),
                new: b"v3".to_vec(),
            },
            "k",
            Some("v3"),
        ),
        (
            Write::SetMany(vec![("k".into(), b"v4".to_vec())]),
            "k",
            Some("v4"),
        ),
        (Write::DeleteMany(vec!["k".into()]), "k", None),
        (
            Write::Set {
                key: "k".into(),
                value: b"v5".to_vec(),
            },
            "k",
            Some("v5"),
        ),
        (Write::Delete { key: "k".into() }, "k", None),
    ];
    b.set("s", "k", b"v1").unwrap();
    for (write, key, expected) in writes {
        let before = read(key);
        assert_eq!(
            b.get("s", key)
                .unwrap()
                .map(|v| String::from_utf8(v).unwrap()),
            before
        );
        b.write("s", write.clone()).await.unwrap();
        assert_eq!(read(key).as_deref(), expected, "after {write:?}");
        assert_eq!(b.get("s", key).unwrap().is_some(), expected.is_some());
    }
    b.set("s", "n", &1i64.to_le_bytes()).unwrap();
    assert_eq!(b.get("s", "n").unwrap(), Some(1i64.to_le_bytes().to_vec()));
    b.write(
        "s",
        Write::Increment {
            key: "n".into(),
            delta: 2,
        },
    )
    .await
    .unwrap();
    assert_eq!(b.get("s", "n").unwrap(), Some(3i64.to_le_bytes().to_vec()));
    b.set("s", "n", &7i64.to_le_bytes()).unwrap();
    assert_eq!(
        b.get("s", "n").unwrap(),
        Some(7i64.to_le_bytes().to_vec()),
        "sync writes too"
    );
}

#[tokio::test]
async fn a_write_sqlite_refuses_fails_alone_and_the_rest_of_its_group_commits() {
    let b = SqliteBackend::in_memory().unwrap();
    // SQLite refusing one write (as a full disk or a bad page would) rolls back its
    // whole group's transaction.
    lock(&b.shared.writer)
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON spin_key_value
             WHEN NEW.key = 'refused' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    let set = |key: &str, value: &[u8]| Write::Set {
        key: key.into(),
        value: value.to_vec(),
    };
    let writes = vec![
        b.write("s", set("before", b"1")),
        b.write("s", set("refused", b"2")),
        b.write(
            "s",
            Write::Increment {
                key: "n".into(),
                delta: 5,
            },
        ),
        b.write("s", set("after", b"3")),
    ];
    assert_eq!(lock(&b.shared.queue).waiting.len(), 4, "one group");
    let answers = futures::future::join_all(writes).await;
    assert_eq!(answers[0], Ok(Written::Done));
    assert!(
        matches!(&answers[1], Err(KvError::Backend(m)) if m.contains("refused by the test")),
        "{:?}",
        answers[1]
    );
    assert_eq!(answers[2], Ok(Written::Counter(5)));
    assert_eq!(answers[3], Ok(Written::Done));
    assert_eq!(b.get("s", "before").unwrap(), Some(b"1".to_vec()));
    assert_eq!(b.get("s", "after").unwrap(), Some(b"3".to_vec()));
    assert_eq!(b.get("s", "refused").unwrap(), None);
    assert_eq!(
        b.increment("s", "n", 0).unwrap(),
        5,
        "applied once, not once per try"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_in_groups_with_their_own_answers() {
    let b = Arc::new(SqliteBackend::in_memory().unwrap());
    b.set("s", "text", b"not a counter").unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            let counter = b
                .write(
                    "s",
                    Write::Increment {
                        key: "n".into(),
                        delta: 1,
                    },
                )
                .await;
            let own = b
                .write(
                    "s",
                    Write::Set {
                        key: format!("k{i}"),
                        value: vec![i as u8],
                    },
                )
                .await;
            let claimed = b
                .write(
                    "s",
                    Write::CompareAndSwap {
                        key: "claim".into(),
                        expected: None,
                        new: vec![i as u8],
                    },
                )
                .await;
            // A bad write in someone's group answers for itself only.
            let bad = b
                .write(
                    "s",
                    Write::Increment {
                        key: "text".into(),
                        delta: 1,
                    },
                )
                .await;
            (counter, own, claimed, bad)
        }));
    }
    let mut counters = Vec::new();
    let mut claims = 0;
    for t in tasks {
        let (counter, own, claimed, bad) = t.await.unwrap();
        match counter.unwrap() {
            Written::Counter(n) => counters.push(n),
            other => panic!("{other:?}"),
        }
        assert_eq!(own.unwrap(), Written::Done);
        if claimed.unwrap() == Written::Swapped(true) {
            claims += 1;
        }
        assert_eq!(bad, Err(KvError::NotACounter));
    }
    counters.sort();
    assert_eq!(
        counters,
        (1..=200).collect::<Vec<_>>(),
        "every increment saw its own value"
    );
    assert_eq!(claims, 1, "exactly one compare-and-swap from absent wins");
    assert_eq!(b.increment("s", "n", 0).unwrap(), 200);
    for i in 0..200 {
        assert_eq!(b.get("s", &format!("k{i}")).unwrap(), Some(vec![i as u8]));
    }
    assert_eq!(
        b.write(
            "s",
            Write::Set {
                key: "k".repeat(256),
                value: vec![]
            }
        )
        .await,
        Err(KvError::KeyTooLong),
        "limits are checked before a write is queued"
    );
}

#[test]
fn a_write_queued_as_its_runtime_shuts_down_is_still_committed() {
    let b = SqliteBackend::in_memory().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pending = {
        let _inside = runtime.enter();
        b.write(
            "s",
            Write::Set {
                key: "k".into(),
                value: b"v".to_vec(),
            },
        )
    };
    drop(runtime); // its commit task never ran
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), pending).await
        });
    assert_eq!(
        answer,
        Ok(Ok(Written::Done)),
        "the write was answered, not left waiting"
    );
    assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        b.write_now_for_test(),
        Ok(Written::Done),
        "leadership was handed back: a later write commits too"
    );
}

impl SqliteBackend {
    fn write_now_for_test(&self) -> Result<Written, KvError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self.write("s", Write::Delete { key: "k".into() }))
    }
}

#[test]
fn a_second_store_on_the_same_file_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    let first = SqliteBackend::open(&path).unwrap();
    let Err(KvError::Backend(e)) = SqliteBackend::open(&path) else {
        panic!("a second store opened the same file");
    };
    assert!(e.contains("in use by another process"), "{e}");
    drop(first);
    SqliteBackend::open(&path).unwrap();
}

#[test]
fn reads_do_not_wait_for_a_commit_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let b = SqliteBackend::open(&dir.path().join("kv.sqlite")).unwrap();
    b.set("s", "k", b"committed").unwrap();
    let _committing = lock(&b.shared.writer);
    assert_eq!(b.get("s", "k").unwrap().as_deref(), Some(&b"committed"[..]));
    assert_eq!(b.get_many("s", &["k".into()]).unwrap().len(), 1);
    assert!(b.exists("s", "k").unwrap());
    assert_eq!(b.list_keys("s", None, 10).unwrap().keys, ["k"]);
}

/// Pages in the WAL, as a checkpoint on a fresh connection reports it.
fn wal_pages(path: &Path) -> i64 {
    checkpoint(&open_checkpointer(path).unwrap()).unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_copied_in_the_background_and_starts_over_under_constant_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    let b =
        Arc::new(SqliteBackend::open_with(&path, &SqliteOptions::default(), 64, true).unwrap());
    // Writers that never pause: without the committer's catch-up the background
    // copies never reach the last commit, and the WAL grows without end.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..800 {
                    b.write(
                        "s",
                        Write::Set {
                            key: format!("w{w}/{}", i % 50),
                            value: vec![i as u8; 4096],
                        },
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // 3,200 writes of a 4 KiB value: over 6,400 pages appended in all. How far the
    // WAL got between restarts depends on the machine's timing (about 1,000-1,400
    // pages seen), so the bound only tells restarts from none.
    let pages = wal_pages(&path);
    assert!(
        pages < 3_200,
        "the WAL kept {pages} pages: it never started over"
    );
    // The WAL started over after copies: the last value of each key reads back.
    assert_eq!(
        b.get("s", "w3/49").unwrap(),
        Some(vec![(799 % 256) as u8; 4096])
    );
}

#[tokio::test]
async fn a_queued_write_is_on_disk_when_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    let b = SqliteBackend::open(&path).unwrap();
    b.write(
        "s",
        Write::SetMany(vec![
            ("a".into(), b"1".to_vec()),
            ("b".into(), b"2".to_vec()),
        ]),
    )
    .await
    .unwrap();
    b.write("s", Write::DeleteMany(vec!["a".into()]))
        .await
        .unwrap();
    drop(b);
    let again = SqliteBackend::open(&path).unwrap();
    assert_eq!(again.get("s", "a").unwrap(), None);
    assert_eq!(again.get("s", "b").unwrap().as_deref(), Some(&b"2"[..]));
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite");
    SqliteBackend::open(&path)
        .unwrap()
        .set("s", "k", b"kept")
        .unwrap();
    assert_eq!(
        SqliteBackend::open(&path)
            .unwrap()
            .get("s", "k")
            .unwrap()
            .unwrap(),
        b"kept"
    );
}

/// A file-backed store whose key filter only this test builds.
fn unfiltered(dir: &tempfile::TempDir) -> SqliteBackend {
    unfiltered_with(dir, &SqliteOptions::default())
}

fn unfiltered_with(dir: &tempfile::TempDir, options: &SqliteOptions) -> SqliteBackend {
    SqliteBackend::open_with(
        &dir.path().join("kv.sqlite"),
        options,
        RESTART_FRAMES,
        false,
    )
    .unwrap()
}

fn build_filter(b: &SqliteBackend, scanned: &mut dyn FnMut()) {
    let conn = open_reader(b.shared.path.as_ref().unwrap()).unwrap();
    match b
        .shared
        .build_filter(&conn, MAX_FILTERED_KEYS, scanned)
        .unwrap()
    {
        Built::Filter { .. } => {}
        _ => panic!("no filter built"),
    }
}

fn absent_in_filter(b: &SqliteBackend, store: &str, key: &str) -> bool {
    b.shared.filter.lookup().unwrap().presence(store, key) == Presence::Absent
}

#[test]
fn keys_stored_before_the_filter_is_built_are_found_and_most_absent_ones_skip_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let b = unfiltered(&dir);
    // More keys than one scan page, in two stores.
    let keys: Vec<String> = (0..(SCAN_PAGE as usize * 2 + 17))
        .map(|i| format!("k{i}"))
        .collect();
    let pairs: Vec<(String, Vec<u8>)> =
        keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
    b.set_many("s", &pairs).unwrap();
    b.set("other", "only-here", b"v").unwrap();
    drop(b);
    let b = unfiltered(&dir);
    build_filter(&b, &mut || {});
    let found = b.get_many("s", &keys).unwrap();
    assert!(
        found.iter().all(|(_, v)| v.is_some()),
        "a stored key read as absent"
    );
    assert!(b.exists("other", "only-here").unwrap());
    assert_eq!(b.get("other", "k1").unwrap(), None, "stores stay apart");
    let absent: Vec<String> = (0..1000).map(|i| format!("absent{i}")).collect();
    assert!(
        b.get_many("s", &absent)
            .unwrap()
            .iter()
            .all(|(_, v)| v.is_none())
    );
    let skipped = absent
        .iter()
        .filter(|k| absent_in_filter(&b, "s", k))
        .count();
    assert!(
        skipped > 950,
        "only {skipped} of 1000 absent keys skip SQLite"
    );
}

#[tokio::test]
async fn a_key_created_by_any_write_is_found_once_the_write_answers() {
    let dir = tempfile::tempdir().unwrap();
    let b = unfiltered(&dir);
    build_filter(&b, &mut || {});
    let creating = |key: &str| {
        vec![
            Write::Set {
                key: format!("{key}-set"),
                value: b"v".to_vec(),
            },
            Write::SetMany(vec![(format!("{key}-many"), b"v".to_vec())]),
            Write::Increment {
                key: format!("{key}-counter"),
                delta: 1,
            },
            Write::CompareAndSwap {
                key: format!("{key}-swapped"),
                expected: None,
                new: b"v".to_vec(),
            },
        ]
    };
    let check = |write: &Write| {
        let key = write.keys().next().unwrap().to_string();
        assert!(b.get("s", &key).unwrap().is_some(), "after {write:?}");
        assert!(b.exists("s", &key).unwrap(), "after {write:?}");
        assert!(b.get_many("s", &[key]).unwrap()[0].1.is_some());
    };
    // Each key was read (and found absent) first.
    for write in creating("grouped") {
        let key = write.keys().next().unwrap().to_string();
        assert_eq!(b.get("s", &key).unwrap(), None);
        b.write("s", write.clone()).await.unwrap();
        check(&write);
    }
    for write in creating("alone") {
        let key = write.keys().next().unwrap().to_string();
        assert_eq!(b.get("s", &key).unwrap(), None);
        b.run("s", &write).unwrap();
        check(&write);
    }
    // Deleted and created again.
    b.delete("s", "alone-set").unwrap();
    assert_eq!(b.get("s", "alone-set").unwrap(), None);
    b.set("s", "alone-set", b"again").unwrap();
    assert_eq!(
        b.get("s", "alone-set").unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

#[test]
fn keys_written_behind_the_scans_back_are_in_the_new_filter() {
    let dir = tempfile::tempdir().unwrap();
    let b = unfiltered(&dir);
    b.set("s", "before", b"v").unwrap();
    let b = Arc::new(b);
    let writer = b.clone();
    // Committed after the scan read the table, before the filter is in use (no
    // runtime here: the grouped write commits on this thread).
    build_filter(&b, &mut || {
        writer.set("s", "during-alone", b"v").unwrap();
        let group = writer.write(
            "s",
            Write::SetMany(vec![("during-grouped".into(), b"v".to_vec())]),
        );
        futures::executor::block_on(group).unwrap();
    });
    for key in ["before", "during-alone", "during-grouped"] {
        assert!(
            !absent_in_filter(&b, "s", key),
            "{key} missing from the filter"
        );
        assert!(b.get("s", key).unwrap().is_some(), "{key} read as absent");
    }
}

#[tokio::test]
async fn a_full_filter_is_rebuilt_bigger_without_losing_a_key() {
    let dir = tempfile::tempdir().unwrap();
    // A small buffer, so the filter's room is the least there is.
    let options = SqliteOptions {
        write_buffer_keys: 1_000,
    };
    let b = SqliteBackend::open_with_options(&dir.path().join("kv.sqlite"), &options).unwrap();
    let built = |b: &SqliteBackend| b.shared.filter.bytes();
    let deadline = Instant::now() + Duration::from_secs(20);
    while built(&b).is_none() {
        assert!(
            Instant::now() < deadline,
            "the first filter was never built"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = built(&b).unwrap();
    // Twice the empty filter's capacity, through group commits.
    let keys: Vec<String> = (0..200_000).map(|i| format!("mark/{i}")).collect();
    for chunk in keys.chunks(5_000) {
        let pairs = chunk.iter().map(|k| (k.clone(), b"1".to_vec())).collect();
        b.write("s", Write::SetMany(pairs)).await.unwrap();
    }
    while built(&b) == Some(first) {
        assert!(
            Instant::now() < deadline,
            "the full filter was never rebuilt"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(built(&b).unwrap() > first);
    let found = b.get_many("s", &keys).unwrap();
    assert!(
        found.iter().all(|(_, v)| v.is_some()),
        "a stored key read as absent"
    );
}

#[test]
fn a_store_with_too_many_keys_goes_unfiltered_and_every_key_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let b = unfiltered(&dir);
    build_filter(&b, &mut || {});
    assert!(b.shared.filter.lookup().is_some());
    let keys: Vec<String> = (0..(SCAN_PAGE as usize + 1))
        .map(|i| format!("k{i}"))
        .collect();
    let pairs: Vec<(String, Vec<u8>)> =
        keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
    b.set_many("s", &pairs).unwrap();
    // New small keys are buffered; the scan reads the table.
    b.shared.merge_round().unwrap();
    // A rebuild that finds more keys than it may hold drops the filter it had.
    let conn = open_reader(b.shared.path.as_ref().unwrap()).unwrap();
    let built = b
        .shared
        .build_filter(&conn, SCAN_PAGE as usize, &mut || {})
        .unwrap();
    assert!(matches!(built, Built::TooManyKeys));
    assert!(
        b.shared.filter.lookup().is_none(),
        "a filter is still in use"
    );
    assert!(b.shared.filter.needs_build());
    // A write does not bring a filter back.
    b.set("s", "after", b"v").unwrap();
    assert!(b.shared.filter.lookup().is_none());
    let found = b.get_many("s", &keys).unwrap();
    assert!(found.iter().all(|(_, v)| v.is_some()));
    assert!(b.exists("s", "after").unwrap());
    assert_eq!(b.get("s", "never").unwrap(), None);
    // Without a filter, a build counts the keys first, and stops there.
    let built = b
        .shared
        .build_filter(&conn, SCAN_PAGE as usize, &mut || {})
        .unwrap();
    assert!(matches!(built, Built::TooManyKeys));
    assert!(b.shared.filter.lookup().is_none());
    // With room, the filter comes back, sized for the keys counted.
    let built = b
        .shared
        .build_filter(&conn, MAX_FILTERED_KEYS, &mut || {})
        .unwrap();
    let stored = keys.len() + 1;
    assert!(
        matches!(built, Built::Filter { keys, bytes } if keys == stored && bytes == Bloom::for_keys(stored, b.shared.filter_headroom()).bytes()),
        "not a filter for {stored} keys"
    );
    assert!(!absent_in_filter(&b, "s", "after"));
    assert!(keys.iter().all(|k| !absent_in_filter(&b, "s", k)));
}

#[test]
fn the_filter_keeps_room_for_twice_the_write_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let sized = |keys: usize| {
        let b = unfiltered_with(
            &dir,
            &SqliteOptions {
                write_buffer_keys: keys,
            },
        );
        build_filter(&b, &mut || {});
        b.shared.filter.bytes().unwrap()
    };
    // A fresh store's filter takes up to 3.67M new keys before its first rebuild.
    assert_eq!(sized(1_835_008), Bloom::for_keys(0, 3_670_016).bytes());
    assert!(sized(1_835_008) > sized(1_000));
    // Without a buffer (or a small one), the least room there is.
    assert_eq!(sized(0), Bloom::for_keys(0, 0).bytes());
    assert_eq!(sized(1_000), sized(0));
    // A huge buffer setting does not size the filter past what is ever filtered.
    assert_eq!(
        sized(usize::MAX),
        Bloom::for_keys(0, MAX_FILTERED_KEYS).bytes()
    );
}

#[test]
fn a_store_whose_size_holds_steady_gets_a_filter_of_the_same_size_at_each_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let b = unfiltered(&dir);
    let keys =
        |prefix: &str| -> Vec<String> { (0..20_000).map(|i| format!("{prefix}{i}")).collect() };
    let write = |keys: &[String]| {
        let pairs: Vec<(String, Vec<u8>)> =
            keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
        b.set_many("s", &pairs).unwrap();
        b.shared.merge_round().unwrap();
    };
    write(&keys("old/"));
    build_filter(&b, &mut || {});
    let first = b.shared.filter.bytes().unwrap();
    assert_eq!(
        first,
        Bloom::for_keys(20_000, b.shared.filter_headroom()).bytes()
    );
    // Marks expire as new ones come: as many keys as before, all of them new.
    b.delete_many("s", &keys("old/")).unwrap();
    write(&keys("new/"));
    build_filter(&b, &mut || {});
    assert_eq!(
        b.shared.filter.bytes(),
        Some(first),
        "sized for the deleted keys too"
    );
    assert!(keys("new/").iter().all(|k| !absent_in_filter(&b, "s", k)));
}

#[test]
fn a_scan_moves_past_keys_no_guest_could_write() {
    let dir = tempfile::tempdir().unwrap();
    let b = Arc::new(unfiltered(&dir));
    // A data file written by another tool: a full scan page of BLOB keys and keys that
    // are not UTF-8, before the one a guest wrote (store "t" sorts after "s").
    lock(&b.shared.writer)
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO spin_key_value (store, key, value)
             SELECT 's', CASE WHEN i % 2 = 0 THEN randomblob(16)
                              ELSE CAST(X'ff' || randomblob(16) AS TEXT) END, X'00' FROM n",
            params![SCAN_PAGE],
        )
        .unwrap();
    b.set("t", "kept", b"v").unwrap();
    let (done, built) = std::sync::mpsc::channel();
    let scanner = b.clone();
    std::thread::spawn(move || {
        build_filter(&scanner, &mut || {});
        let _ = done.send(());
    });
    built
        .recv_timeout(Duration::from_secs(60))
        .expect("the scan never finished");
    assert!(!absent_in_filter(&b, "t", "kept"));
    assert_eq!(b.get("t", "kept").unwrap().as_deref(), Some(&b"v"[..]));
}

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
