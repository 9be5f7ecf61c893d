//! `Idempotency-Key` for creates: the same key with the same body answers the first
//! result without calling TikTok again; the same key with another body is a 409.
//!
//! TikTok itself only refuses a repeated `request_id` (40050) and does not answer what it
//! created, so the record here is what makes a retry safe. The record is written
//! (pending) before TikTok is called, so two requests with one key at once cannot both
//! call; and TikTok's `request_id` is derived from the key, so even a retry after a crash
//! mid-call cannot create twice: TikTok refuses it and the caller is told to look the
//! object up.

use crate::ApiError;
use crate::platform::crypto::{random_bytes, sha256, sha256_hex};
use crate::platform::env::Env;
use crate::platform::kv::{create_json, get_json, update_json};
use crate::tenancy::org_id::OrgId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a key is remembered (as Stripe does: 24 h).
pub const RETENTION_SECONDS: i64 = 24 * 3600;
/// A pending record older than this belongs to a request that died; another may take over.
pub const PENDING_TIMEOUT_SECONDS: i64 = 120;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    /// Which attempt holds the record (a takeover gets a new one), so an attempt that
    /// fails removes only its own record.
    #[serde(default)]
    attempt: String,
    /// TikTok `request_id` sent with the create.
    request_id: String,
    started_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<Done>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Done {
    status: u16,
    response: Value,
    at: i64,
}

/// The outcome of an idempotent create.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u16,
    pub response: Value,
    /// True when this answers a repeated request from the record.
    pub replayed: bool,
}

/// The header value checked: 1–255 visible ASCII characters.
pub fn parse_key(header: Option<&str>) -> Result<Option<String>, ApiError> {
    match header {
        None => Ok(None),
        Some(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        Some(_) => Err(ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// A TikTok `request_id`: decimal digits (the form TikTok's examples use), from `seed`.
fn request_id(seed: &[u8]) -> String {
    let d = sha256(seed);
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) >> 1;
    n.to_string()
}

/// Runs `create` once per (org, scope, key). `create` gets the TikTok `request_id` to
/// send and answers (status, response). Without a key it runs with a fresh `request_id`.
///
/// Failures are not remembered: nothing was created, so the same key may be retried.
pub fn run(
    env: &Env,
    org: &OrgId,
    scope: &str,
    key: Option<&str>,
    body: &Value,
    create: impl FnOnce(&str) -> Result<(u16, Value), ApiError>,
) -> Result<Outcome, ApiError> {
    run_with(env, org, scope, key, body, PENDING_TIMEOUT_SECONDS, create)
}

/// [`run`] for creates that may legitimately take `pending_timeout` seconds (uploads):
/// an attempt is only taken over once that much time has passed.
pub fn run_with(
    env: &Env,
    org: &OrgId,
    scope: &str,
    key: Option<&str>,
    body: &Value,
    pending_timeout: i64,
    create: impl FnOnce(&str) -> Result<(u16, Value), ApiError>,
) -> Result<Outcome, ApiError> {
    let Some(key) = key else {
        let (status, response) = create(&request_id(&random_bytes::<16>()?))?;
        return Ok(Outcome {
            status,
            response,
            replayed: false,
        });
    };
    let record_key = format!(
        "org/{org}/idem/{}",
        sha256_hex(format!("{scope}\n{key}").as_bytes())
    );
    let fingerprint = sha256_hex(
        format!(
            "{scope}\n{}",
            serde_json::to_string(body).expect("JSON serializes")
        )
        .as_bytes(),
    );
    let fresh = Record {
        fingerprint: fingerprint.clone(),
        request_id: request_id(format!("{org}\n{scope}\n{key}").as_bytes()),
        attempt: hex::encode(random_bytes::<12>()?),
        started_at: env.now,
        done: None,
    };
    if !create_json(env.kv, &record_key, &fresh)? {
        // Someone used the key before: replay, refuse, or take over a dead attempt.
        let taken = update_json(env.kv, &record_key, |r: Option<Record>| {
            let Some(r) = r else {
                return Ok((Some(fresh.clone()), None));
            };
            let expired =
                r.done.as_ref().map_or(r.started_at, |d| d.at) < env.now - RETENTION_SECONDS;
            if expired {
                return Ok((Some(fresh.clone()), None));
            }
            if r.fingerprint != fingerprint {
                return Err(ApiError::Conflict(
                    "this Idempotency-Key was used with a different request; use a new key".into(),
                ));
            }
            if let Some(done) = &r.done {
                return Ok((None, Some(done.clone())));
            }
            if r.started_at > env.now - pending_timeout {
                return Err(ApiError::Conflict(
                    "a request with this Idempotency-Key is still in progress; retry shortly"
                        .into(),
                ));
            }
            // The first attempt died mid-call; keep its request_id so TikTok can refuse
            // a second create (40050).
            Ok((
                Some(Record {
                    started_at: env.now,
                    attempt: fresh.attempt.clone(),
                    ..r
                }),
                None,
            ))
        })?;
        if let Some(done) = taken {
            return Ok(Outcome {
                status: done.status,
                response: done.response,
                replayed: true,
            });
        }
    }
    let record: Record = get_json(env.kv, &record_key)?
        .ok_or_else(|| ApiError::Storage(format!("{record_key} vanished")))?;
    if record.attempt != fresh.attempt {
        return Err(ApiError::Conflict(
            "a request with this Idempotency-Key is still in progress; retry shortly".into(),
        ));
    }
    match create(&record.request_id) {
        Ok((status, response)) => {
            let done = Done {
                status,
                response: response.clone(),
                at: env.now,
            };
            update_json(env.kv, &record_key, |r: Option<Record>| {
                let mut r = r.unwrap_or_else(|| record.clone());
                r.done = Some(done.clone());
                Ok((Some(r), ()))
            })?;
            Ok(Outcome {
                status,
                response,
                replayed: false,
            })
        }
        Err(e) => {
            // Only our own record: a slow attempt that failed after another took over
            // must not erase the other's.
            let current: Option<Record> = get_json(env.kv, &record_key)?;
            if current.is_some_and(|r| r.attempt == fresh.attempt && r.done.is_none()) {
                env.kv.delete(&record_key)?;
            }
            match e {
                ApiError::Upstream(u) if u.code == 40050 => Err(ApiError::Conflict(format!(
                    "an earlier attempt with this Idempotency-Key reached TikTok, which refused to create again (request_id {}); list to find what it created",
                    record.request_id
                ))),
                e => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestEnv;
    use serde_json::json;
    use std::cell::Cell;

    fn org() -> OrgId {
        OrgId::parse("acme").unwrap()
    }

    #[test]
    fn the_same_key_and_body_replays_without_a_second_call() {
        let t = TestEnv::new();
        let calls = Cell::new(0);
        let create = |rid: &str| {
            calls.set(calls.get() + 1);
            Ok((201, json!({"id": calls.get(), "rid": rid})))
        };
        let body = json!({"name": "x"});
        let a = run(&t.env(), &org(), "c", Some("k1"), &body, create).unwrap();
        let b = run(&t.env(), &org(), "c", Some("k1"), &body, create).unwrap();
        assert_eq!(calls.get(), 1);
        assert!(!a.replayed && b.replayed);
        assert_eq!(a.response, b.response);
        assert_eq!(b.status, 201);
        // Keys are per scope and per org.
        run(&t.env(), &org(), "other", Some("k1"), &body, create).unwrap();
        let other_org = OrgId::parse("globex").unwrap();
        run(&t.env(), &other_org, "c", Some("k1"), &body, create).unwrap();
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn the_same_key_with_another_body_is_a_conflict() {
        let t = TestEnv::new();
        run(&t.env(), &org(), "c", Some("k"), &json!({"a": 1}), |_| {
            Ok((201, json!({})))
        })
        .unwrap();
        let e = run(&t.env(), &org(), "c", Some("k"), &json!({"a": 2}), |_| {
            panic!("no call")
        })
        .unwrap_err();
        assert_eq!(e.status(), 409);
    }

    #[test]
    fn a_key_in_flight_is_a_conflict_until_it_times_out_then_keeps_its_request_id() {
        let t = TestEnv::new();
        let body = json!({});
        let mut first_rid = String::new();
        // The first attempt dies inside the call (the record stays pending).
        let e = run(&t.env(), &org(), "c", Some("k"), &body, |rid| {
            first_rid = rid.to_string();
            let e = run(&t.env(), &org(), "c", Some("k"), &body, |_| {
                panic!("no call")
            })
            .unwrap_err();
            assert_eq!(e.status(), 409, "concurrent use");
            Err(ApiError::Storage("simulated".into()))
        });
        assert!(e.is_err());
        // Failures are not remembered: the same key may be retried.
        let out = run(&t.env(), &org(), "c", Some("k"), &body, |rid| {
            assert_eq!(rid, first_rid, "the same TikTok request_id");
            Ok((201, json!({"ok": true})))
        })
        .unwrap();
        assert!(!out.replayed);
    }

    #[test]
    fn a_stale_pending_record_is_taken_over_and_tiktoks_duplicate_refusal_is_explained() {
        let t = TestEnv::new();
        let body = json!({});
        // Simulate a crash: a pending record left behind.
        let key = format!("org/acme/idem/{}", sha256_hex(b"c\nk"));
        let rid = request_id(b"acme\nc\nk");
        crate::platform::kv::set_json(
            &t.kv,
            &key,
            &Record {
                attempt: "crashed".into(),
                fingerprint: sha256_hex(b"c\n{}"),
                request_id: rid.clone(),
                started_at: t.now.get(),
                done: None,
            },
        )
        .unwrap();
        let e = run(&t.env(), &org(), "c", Some("k"), &body, |_| {
            panic!("in progress")
        })
        .unwrap_err();
        assert_eq!(e.status(), 409);
        t.now.set(t.now.get() + PENDING_TIMEOUT_SECONDS + 1);
        let e = run(&t.env(), &org(), "c", Some("k"), &body, |sent| {
            assert_eq!(sent, rid);
            Err(ApiError::from(crate::tiktok::codes::TikTokError {
                code: 40050,
                message: "Duplicated request".into(),
                request_id: "r".into(),
            }))
        })
        .unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("reached TikTok"), "{e}");
    }

    #[test]
    fn a_slow_attempt_that_fails_after_a_takeover_leaves_the_other_attempts_record() {
        let t = TestEnv::new();
        let body = json!({});
        let e = run_with(&t.env(), &org(), "c", Some("k"), &body, 60, |_| {
            t.now.set(t.now.get() + 61);
            let second = run_with(&t.env(), &org(), "c", Some("k"), &body, 60, |_| {
                Ok((201, json!("second")))
            })
            .unwrap();
            assert!(!second.replayed);
            Err(ApiError::Storage("the first attempt fails late".into()))
        });
        assert!(e.is_err());
        let replay = run(&t.env(), &org(), "c", Some("k"), &body, |_| {
            panic!("no call")
        })
        .unwrap();
        assert_eq!((replay.replayed, replay.response), (true, json!("second")));
    }

    #[test]
    fn records_expire_after_a_day() {
        let t = TestEnv::new();
        let body = json!({});
        run(&t.env(), &org(), "c", Some("k"), &body, |_| {
            Ok((201, json!(1)))
        })
        .unwrap();
        t.now.set(t.now.get() + RETENTION_SECONDS + 1);
        let out = run(&t.env(), &org(), "c", Some("k"), &json!({"new": 1}), |_| {
            Ok((201, json!(2)))
        })
        .unwrap();
        assert_eq!((out.replayed, out.response), (false, json!(2)));
    }

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert_eq!(
            parse_key(Some("abc-123")).unwrap().as_deref(),
            Some("abc-123")
        );
        assert_eq!(parse_key(None).unwrap(), None);
        for bad in ["", "has space", "ключ"] {
            assert_eq!(parse_key(Some(bad)).unwrap_err().status(), 400, "{bad:?}");
        }
        assert!(parse_key(Some(&"k".repeat(256))).is_err());
    }
}
