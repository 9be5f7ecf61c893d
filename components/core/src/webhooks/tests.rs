//! Webhooks end to end against the memory store: receive, process, list, replay.

use crate::ApiError;
use crate::OrgId;
use crate::platform::kv::get_json;
use crate::platform::lease;
use crate::tenancy::connections;
use crate::testing::TestEnv;
use crate::webhooks::apps::*;
use crate::webhooks::deliveries::*;
use crate::webhooks::process::*;
use crate::webhooks::receive::*;
use crate::webhooks::signature::*;
use serde_json::{Value, json};

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/webhook-signatures.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("testdata/ is in the repository"))
        .unwrap()
}

#[test]
fn every_shared_signature_vector() {
    let v = vectors();
    let secret = v["client_secret"].as_str().unwrap().to_string();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let body = case["raw_body"].as_str().unwrap_or("").as_bytes();
        let header = case["header"].as_str();
        let secrets = vec![
            case["secret"]
                .as_str()
                .map_or(secret.clone(), str::to_string),
        ];
        let got = verify(
            header,
            body,
            &secrets,
            case["now"].as_i64().unwrap(),
            case["tolerance_s"].as_i64().unwrap(),
        );
        let expect = case["expect"].as_str().unwrap();
        match expect {
            e if e.starts_with("valid") => assert!(got.is_ok(), "{name}: {got:?}"),
            e if e.contains("outside tolerance") => {
                assert_eq!(got, Err(Rejection::OutsideTolerance), "{name}")
            }
            e if e.contains("malformed") => assert!(
                matches!(got, Err(Rejection::MalformedHeader(_))),
                "{name}: {got:?}"
            ),
            e if e.contains("no TikTok-Signature") => {
                assert_eq!(got, Err(Rejection::MissingHeader), "{name}")
            }
            _ => assert_eq!(got, Err(Rejection::SignatureMismatch), "{name}: {expect}"),
        }
        if let Some(expected) = case["expected_signature"].as_str() {
            let t = parse_header(header.unwrap()).unwrap().t;
            assert_eq!(sign(&secrets[0], t, body), expected, "{name}");
        }
    }
}

#[test]
fn tolerance_edges_are_inclusive_both_ways() {
    let secrets = vec!["s3cret".to_string()];
    let body = br#"{"event":"tiktok.ping"}"#;
    let at = |t: i64| format!("t={t},s={}", sign("s3cret", t, body));
    let now = 1_700_000_000;
    for (t, ok) in [
        (now - 300, true),
        (now - 301, false),
        (now + 300, true),
        (now + 301, false),
    ] {
        assert_eq!(
            verify(Some(&at(t)), body, &secrets, now, 300).is_ok(),
            ok,
            "t = now{:+}",
            t - now
        );
    }
}

#[test]
fn either_secret_verifies_during_rotation() {
    let body = b"{}";
    let now = 1_700_000_000;
    let secrets = vec!["new".to_string(), "old".to_string()];
    for s in ["new", "old"] {
        let h = format!("t={now},s={}", sign(s, now, body));
        assert!(verify(Some(&h), body, &secrets, now, 300).is_ok(), "{s}");
    }
    let h = format!("t={now},s={}", sign("retired", now, body));
    assert_eq!(
        verify(Some(&h), body, &secrets, now, 300),
        Err(Rejection::SignatureMismatch)
    );
}

#[test]
fn malformed_headers_are_named() {
    for h in [
        "",
        "t=1",
        "s=00",
        &format!("s={}", "a".repeat(64)),
        &format!("t=abc,s={}", "a".repeat(64)),
        &format!("t=1,t=2,s={}", "a".repeat(64)),
        &format!("t=1,s={}", "g".repeat(64)),
        &format!("t=-5,s={}", "a".repeat(64)),
        &"t=1,".repeat(400),
    ] {
        assert!(
            matches!(parse_header(h), Err(Rejection::MalformedHeader(_))),
            "{h:?}"
        );
    }
    let ok = parse_header(&format!(" s = {} , t=7, v1=x", "AB".repeat(32))).unwrap();
    assert_eq!(ok.t, 7, "spaces, case and unknown elements are tolerated");
}

fn test_env() -> TestEnv {
    let mut t = TestEnv::new();
    t.config
        .0
        .insert(APPS_VARIABLE.into(), "other:o1:o0, app-1:rotated".into());
    t
}

fn signed(t: &TestEnv, secret: &str, body: &[u8]) -> String {
    format!("t={},s={}", t.now.get(), sign(secret, t.now.get(), body))
}

#[test]
fn apps_come_from_the_deployment_app_and_webhook_apps() {
    let mut t = test_env();
    let apps = apps(&t.env()).unwrap();
    let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["app-1", "other"]);
    assert_eq!(apps[0].secrets, ["app-secret", "rotated"]);
    assert!(
        !format!("{apps:?}").contains("o1"),
        "secrets stay out of Debug"
    );
    for (name, bad) in [
        (TOLERANCE_VARIABLE, "abc"),
        (TOLERANCE_VARIABLE, "0"),
        (MAX_BODY_VARIABLE, "99999999"),
    ] {
        t.config.0.insert(name.into(), bad.into());
        let e = tolerance_secs(&t.env())
            .and(max_body(&t.env()).map(|_| 0))
            .unwrap_err();
        assert!(e.to_string().contains(name), "{name}={bad}: {e}");
        t.config.0.remove(name);
    }
    for bad in ["x", "bad name:s", ":s", "a:"] {
        t.config.0.insert(APPS_VARIABLE.into(), bad.into());
        assert!(
            matches!(
                crate::webhooks::apps::apps(&t.env()),
                Err(ApiError::Internal(_))
            ),
            "{bad}"
        );
    }
}

fn body(event: &str, open_id: &str, content: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"client_key": "app-1", "event": event, "create_time": 1_700_000_000,
        "user_openid": open_id, "content": content}),
    )
    .unwrap()
}

#[test]
fn a_bad_signature_stores_nothing_but_a_counter() {
    let t = test_env();
    let app = app(&t.env(), "app-1").unwrap();
    let b = body("tiktok.ping", "u", "{}");
    let before = t.kv.dump().len();
    let e = receive(&t.env(), &app, Some(&signed(&t, "wrong", &b)), &b).unwrap_err();
    assert_eq!(e.status(), 401);
    let e = receive(&t.env(), &app, None, &b).unwrap_err();
    assert_eq!(e.status(), 401);
    let keys: Vec<String> = t.kv.dump().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys.len(), before + 2, "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| !k.contains("/d/") && !k.contains("/log/"))
    );
    let s = stats(&t.env(), &app).unwrap();
    assert_eq!(s.counters["signature_mismatch"], 1);
    assert_eq!(s.counters["missing_signature"], 1);
    let big = vec![b' '; DEFAULT_MAX_BODY + 1];
    let e = receive(&t.env(), &app, Some(&signed(&t, "app-secret", &big)), &big).unwrap_err();
    assert_eq!(e.status(), 413);
}

#[test]
fn a_retry_resigned_later_is_a_duplicate_and_processed_once() {
    let t = test_env();
    let app = app(&t.env(), "app-1").unwrap();
    let b = body("video.publish.completed", "u", r#"{"share_id":"v1"}"#);
    let first = receive(&t.env(), &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
    assert!(!first.duplicate);
    t.now.set(t.now.get() + 60);
    let again = receive(&t.env(), &app, Some(&signed(&t, "rotated", &b)), &b).unwrap();
    assert_eq!((again.duplicate, &again.id), (true, &first.id));
    let r = process(&t.env()).unwrap();
    assert_eq!((r.processed, r.dead), (1, 0));
    assert_eq!(process(&t.env()).unwrap().processed, 0, "nothing left");
    let d = get_app_delivery(&t.env(), &app, &first.id).unwrap();
    assert_eq!(d.status, Status::Processed);
    assert_eq!(
        d.content,
        Some(json!({"share_id": "v1"})),
        "content parsed from its string"
    );
    assert_eq!((d.attempts, d.duplicates), (1, 1));
    let late = receive(&t.env(), &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
    assert!(late.duplicate);
    assert_eq!(
        process(&t.env()).unwrap().processed,
        0,
        "a processed delivery stays processed"
    );
}

#[test]
fn authorization_removed_revokes_the_creator_connection_of_every_org_holding_it() {
    let t = test_env();
    let env = t.env();
    let (a, _) = crate::tenancy::connections::testing::creator_connection(&t, "org-a", "open-9");
    let (b, _) = crate::tenancy::connections::testing::creator_connection(&t, "org-b", "open-9");
    let (c, _) =
        crate::tenancy::connections::testing::creator_connection(&t, "org-c", "open-other");
    let app = app(&env, "app-1").unwrap();
    let bd = body("authorization.removed", "open-9", r#"{"reason":1}"#);
    let r = receive(&env, &app, Some(&signed(&t, "app-secret", &bd)), &bd).unwrap();
    assert_eq!(process(&env).unwrap().processed, 1);
    for (org, id, revoked) in [
        ("org-a", &a, true),
        ("org-b", &b, true),
        ("org-c", &c, false),
    ] {
        let org = OrgId::parse(org).unwrap();
        let conn = connections::get(&env, &org, id).unwrap();
        assert_eq!(
            conn.status == connections::Status::Revoked,
            revoked,
            "{org:?}"
        );
        assert_eq!(
            connections::tokens(&env, &org, id).is_err(),
            revoked,
            "token deleted"
        );
        let listed = list_org(
            &env,
            &org,
            &Filter {
                limit: 10,
                ..Filter::default()
            },
        )
        .unwrap();
        assert_eq!(listed.deliveries.len(), usize::from(revoked), "{org:?}");
    }
    let d = get_org_delivery(&env, &OrgId::parse("org-a").unwrap(), &r.id).unwrap();
    assert_eq!(
        d.outcome.unwrap()["connections"].as_array().unwrap().len(),
        2
    );
    assert!(get_org_delivery(&env, &OrgId::parse("org-c").unwrap(), &r.id).is_err());
    let conn = connections::get(&env, &OrgId::parse("org-a").unwrap(), &a).unwrap();
    assert!(conn.last_error.unwrap().contains("user disconnected"));
}

#[test]
fn junk_and_unknown_bodies_are_kept_and_junk_dead_letters_replay() {
    let t = test_env();
    let env = t.env();
    let app = app(&env, "app-1").unwrap();
    let junk: &[u8] = b"\xff\xfenot json";
    let r1 = receive(&env, &app, Some(&signed(&t, "app-secret", junk)), junk).unwrap();
    let odd = body("ads.something_new", "u", "not json {");
    let r2 = receive(&env, &app, Some(&signed(&t, "app-secret", &odd)), &odd).unwrap();
    let r = process(&env).unwrap();
    assert_eq!((r.processed, r.dead), (1, 1));
    let d1 = get_app_delivery(&env, &app, &r1.id).unwrap();
    assert_eq!(d1.status, Status::Dead);
    assert!(
        d1.raw_body_base64.is_some(),
        "invalid UTF-8 kept exactly, as base64"
    );
    let d2 = get_app_delivery(&env, &app, &r2.id).unwrap();
    assert_eq!(d2.status, Status::Processed);
    assert!(d2.parse_error.unwrap().contains("content is not JSON"));
    assert_eq!(d2.raw_body.unwrap().as_bytes(), odd.as_slice());
    assert_eq!(stats(&env, &app).unwrap().dead_letters, 1);
    assert_eq!(
        replay(&env, &app, None).unwrap(),
        std::slice::from_ref(&r1.id)
    );
    assert_eq!(process(&env).unwrap().dead, 1, "still junk: dead again");
    assert!(
        replay(&env, &app, Some(vec![r2.id])).is_err(),
        "only dead letters replay"
    );
}

#[test]
fn listing_filters_by_event_and_time_newest_first_with_a_cursor() {
    let t = test_env();
    let app = app(&t.env(), "app-1").unwrap();
    for i in 0..5 {
        t.now.set(1_700_000_000 + i * 10);
        let event = if i % 2 == 0 {
            "tiktok.ping"
        } else {
            "video.upload.failed"
        };
        let b = body(event, &format!("u{i}"), "{}");
        receive(&t.env(), &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
    }
    let env = t.env();
    let all = list_app(
        &env,
        &app,
        &Filter {
            limit: 2,
            ..Filter::default()
        },
    )
    .unwrap();
    assert_eq!(all.deliveries.len(), 2);
    assert_eq!(all.deliveries[0].user_openid.as_deref(), Some("u4"));
    let rest = list_app(
        &env,
        &app,
        &Filter {
            limit: 10,
            cursor: all.next_cursor,
            ..Filter::default()
        },
    )
    .unwrap();
    assert_eq!(rest.deliveries.len(), 3);
    assert_eq!(rest.next_cursor, None);
    let pings = list_app(
        &env,
        &app,
        &Filter {
            limit: 10,
            event: Some("tiktok.ping".into()),
            since: Some(1_700_000_010),
            ..Filter::default()
        },
    )
    .unwrap();
    let who: Vec<_> = pings
        .deliveries
        .iter()
        .map(|d| d.user_openid.clone().unwrap())
        .collect();
    assert_eq!(who, ["u4", "u2"]);
}

#[test]
fn a_processor_killed_between_marking_and_logging_still_lists_the_delivery() {
    let t = test_env();
    let env = t.env();
    let app = app(&env, "app-1").unwrap();
    let b = body("tiktok.ping", "u", "{}");
    let r = receive(&env, &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
    let mut d: Delivery = get_json(env.kv, &record_key("app-1", &r.id))
        .unwrap()
        .unwrap();
    d.orgs = vec!["acme".into()];
    let org = OrgId::parse("acme").unwrap();
    attribute(&env, &d).unwrap();
    // The crash: the run took its slot and marked the delivery; its log write was lost.
    env.kv.delete(&org_log_key(&org, 1)).unwrap();
    attribute(&env, &d).unwrap();
    attribute(&env, &d).unwrap();
    assert_eq!(
        env.kv.get(&org_log_key(&org, 1)).unwrap(),
        Some(format!("app-1/{}", r.id).into_bytes())
    );
    assert_eq!(
        env.kv
            .increment(&format!("{}wh/seq", org.key_prefix()), 0)
            .unwrap(),
        1,
        "one slot, however often processing runs"
    );
}

/// Three deliveries stored, as a crash leaves them: the first two receivers died
/// before logging, the third answered.
fn two_receivers_killed(t: &TestEnv) {
    let env = t.env();
    let app = app(&env, "app-1").unwrap();
    for user in ["u1", "u2", "u3"] {
        let b = body("tiktok.ping", user, "{}");
        receive(&env, &app, Some(&signed(t, "app-secret", &b)), &b).unwrap();
    }
    env.kv.delete(&log_key("app-1", 1)).unwrap();
    env.kv.delete(&log_key("app-1", 2)).unwrap();
}

#[test]
fn receivers_killed_together_cost_one_wait_not_one_each() {
    let t = test_env();
    two_receivers_killed(&t);
    let env = t.env();
    assert_eq!(
        process(&env).unwrap().processed,
        0,
        "a fresh gap is waited for"
    );
    t.now.set(t.now.get() + GAP_SECS + 1);
    assert_eq!(
        process(&t.env()).unwrap().processed,
        1,
        "both dead slots are skipped after the one wait"
    );
}

#[test]
fn a_crash_that_also_kills_the_processing_run_costs_one_wait_not_two() {
    let t = test_env();
    two_receivers_killed(&t);
    // The run processing the log died too, holding its lease.
    let env = t.env();
    assert!(lease::take(env.kv, "wh/app-1/lease", "dead-run", env.now, LEASE_SECS).unwrap());
    assert_eq!(process(&env).unwrap().busy, 1);
    t.now.set(t.now.get() + LEASE_SECS.max(GAP_SECS) + 1);
    assert_eq!(
        process(&t.env()).unwrap().processed,
        1,
        "the dead receivers' slots aged while the dead run's lease ran out"
    );
}

#[test]
fn a_receiver_that_died_before_logging_is_healed_by_the_retry() {
    let t = test_env();
    let env = t.env();
    let app = app(&env, "app-1").unwrap();
    let b = body("tiktok.ping", "u", "{}");
    let r = receive(&env, &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
    // Simulate the crash: the record is stored, its log slot never written.
    env.kv.delete(&log_key("app-1", 1)).unwrap();
    assert_eq!(
        process(&env).unwrap().processed,
        0,
        "a fresh gap is waited for"
    );
    t.now.set(t.now.get() + GAP_SECS + 1);
    let env = t.env();
    assert_eq!(
        process(&env).unwrap().processed,
        0,
        "the gap is skipped once old"
    );
    let again = receive(&env, &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
    assert!(again.duplicate);
    assert_eq!(
        process(&env).unwrap().processed,
        1,
        "logged again by the retry, then processed"
    );
    assert_eq!(
        get_app_delivery(&env, &app, &r.id).unwrap().status,
        Status::Processed
    );
}

#[test]
fn two_runs_at_once_do_not_both_process() {
    let t = test_env();
    let env = t.env();
    let app = app(&env, "app-1").unwrap();
    let b = body("tiktok.ping", "u", "{}");
    receive(&env, &app, Some(&signed(&t, "app-secret", &b)), &b).unwrap();
    assert!(lease::take(env.kv, "wh/app-1/lease", "other-run", env.now, 30).unwrap());
    let r = process(&env).unwrap();
    assert_eq!((r.processed, r.busy), (0, 1));
}
