//! The key filter: built from a scan, rebuilt as the store grows, given up past its size.

use super::*;

/// A file-backed store whose key filter only this test builds.
pub(super) fn unfiltered(dir: &tempfile::TempDir) -> SqliteBackend {
    unfiltered_with(dir, &SqliteOptions::default())
}

pub(super) fn unfiltered_with(dir: &tempfile::TempDir, options: &SqliteOptions) -> SqliteBackend {
    SqliteBackend::open_with(
        &dir.path().join("kv.sqlite"),
        options,
        RESTART_FRAMES,
        false,
    )
    .unwrap()
}

pub(super) fn build_filter(b: &SqliteBackend, scanned: &mut dyn FnMut()) {
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

pub(super) fn absent_in_filter(b: &SqliteBackend, store: &str, key: &str) -> bool {
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
    let pairs: Vec<(String, Vec<u8>)> = keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
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
    let pairs: Vec<(String, Vec<u8>)> = keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
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
