//! The pixel pipeline end to end against a scripted TikTok: ingest, then forward.

use crate::ApiError;
use crate::pixel::event::Context;
use crate::pixel::forward::*;
use crate::pixel::ingest::*;
use crate::pixel::queue::{Next, Queue, stats};
use crate::pixel::registry::PixelInput;
use crate::pixel::registry::{self, Pixel};
use crate::platform::env::Env;
use crate::platform::json_reader::Json;
use crate::platform::kv::KeyValue;
use crate::tenancy::org_id::OrgId;
use crate::tenancy::organizations::tests::org_with_key;
use crate::testing::TestEnv;
use crate::tiktok::client::fake::err;
use serde_json::Value;
use serde_json::json;

fn pixel(t: &TestEnv) -> Pixel {
    org_with_key(t, "acme");
    let input: PixelInput = serde_json::from_value(json!({
        "pixel_code": "CODE1", "allowed_origins": ["https://shop.example"],
        "access_token": "events-token", "default_country": "US"
    }))
    .unwrap();
    registry::create(&t.env(), &OrgId::parse("acme").unwrap(), input).unwrap()
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
    crate::pixel::ingest::ingest(env, pixel, &list, ctx)
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
        .set(t.now.get() + crate::pixel::queue::DEDUP_WINDOW_SECS + 1);
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
        crate::platform::crypto::sha256_hex(b"shopper@example.com")
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
    assert_eq!(sizes, [registry::MAX_BATCH, 200], "full batches");
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
    let Next::Batch(batch) = queue.next_batch(&head, tail, registry::MAX_BATCH).unwrap() else {
        panic!("events are queued");
    };
    assert_eq!(batch.events.len(), registry::MAX_BATCH);
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
    let input: PixelInput = serde_json::from_value(json!({"test_event_code": "TEST123"})).unwrap();
    let p = registry::update(&t.env(), &OrgId::parse("acme").unwrap(), &p.id, input).unwrap();
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
    let window = crate::pixel::queue::DEDUP_WINDOW_SECS;
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
    let window = crate::pixel::queue::DEDUP_WINDOW_SECS;
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
