//! The backend's behaviour: reads, writes, limits, group commit, checkpoints and
//! reopening; the key filter ([`key_filter`]); the write buffer and its merges, crashes
//! ([`write_buffer`]).

mod key_filter;
mod write_buffer;

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
    let b = Arc::new(SqliteBackend::open_with(&path, &SqliteOptions::default(), 64, true).unwrap());
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
