//! Receiving a delivery: verified, stored and logged before the 200, duplicates answered
//! as such.

use crate::ApiError;
use crate::platform::crypto::sha256_hex;
use crate::platform::env::Env;
use crate::platform::kv::{create_json, get_json, set_json};
use crate::webhooks::apps::{WebhookApp, max_body, tolerance_secs};
use crate::webhooks::deliveries::{Delivery, Status, count, key, log_key, record_key, stat};
use crate::webhooks::signature::{Rejection, verify};
use base64::Engine;
use serde::Serialize;
use serde_json::{Value, json};

/// What `POST /webhooks/tiktok/{app}` answers.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Receipt {
    pub received: bool,
    pub duplicate: bool,
    pub id: String,
}

/// A refused delivery: 401 with the reason, nothing stored, a counter moved.
pub fn reject(env: &Env, app: &WebhookApp, why: Rejection) -> ApiError {
    if let Err(e) = count(env.kv, &app.name, why.code(), 1) {
        return e;
    }
    ApiError::Unauthorized(why.message())
}

/// Verifies and stores one delivery; answers only once it is stored.
pub fn receive(
    env: &Env,
    app: &WebhookApp,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Receipt, ApiError> {
    let limit = max_body(env)?;
    if body.len() > limit {
        count(env.kv, &app.name, stat::TOO_LARGE, 1)?;
        return Err(ApiError::PayloadTooLarge(limit as u64));
    }
    let signed_at = verify(signature, body, &app.secrets, env.now, tolerance_secs(env)?)
        .map_err(|why| reject(env, app, why))?;
    let parsed = parse_body(&app.name, body);
    let id = format!("wh_{}", &parsed.identity[..32]);
    let rkey = record_key(&app.name, &id);

    if let Some(existing) = get_json::<Delivery>(env.kv, &rkey)? {
        return duplicate(env, app, existing);
    }
    let seq = env.kv.increment(&key(&app.name, "seq"), 1)? as u64;
    let (raw_body, raw_body_base64) = match std::str::from_utf8(body) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    };
    let delivery = Delivery {
        id: id.clone(),
        app: app.name.clone(),
        seq,
        status: Status::Received,
        received_at: env.now,
        signed_at,
        raw_body,
        raw_body_base64,
        event: parsed.event,
        client_key: parsed.client_key,
        create_time: parsed.create_time,
        user_openid: parsed.user_openid,
        content: parsed.content,
        parse_error: parsed.parse_error,
        duplicates: 0,
        attempts: 0,
        processed_at: None,
        outcome: None,
        error: None,
        orgs: Vec::new(),
    };
    if !create_json(env.kv, &rkey, &delivery)? {
        // The same delivery, arriving twice at once: the other request stored it. Our
        // log slot stays empty; processing skips it.
        env.kv.set(&log_key(&app.name, seq), b"")?;
        let existing = get_json::<Delivery>(env.kv, &rkey)?
            .ok_or_else(|| ApiError::Storage("a delivery vanished while stored".into()))?;
        return duplicate(env, app, existing);
    }
    env.kv.set(&log_key(&app.name, seq), id.as_bytes())?;
    count(env.kv, &app.name, stat::RECEIVED, 1)?;
    Ok(Receipt {
        received: true,
        duplicate: false,
        id,
    })
}

/// A delivery stored before. If it was never logged (the receiver died between storing
/// and logging, so it was never acknowledged), it is logged now, so it is processed.
fn duplicate(env: &Env, app: &WebhookApp, mut existing: Delivery) -> Result<Receipt, ApiError> {
    count(env.kv, &app.name, stat::DUPLICATE, 1)?;
    if existing.status == Status::Received {
        let logged = env.kv.get(&log_key(&app.name, existing.seq))?;
        if logged.as_deref() != Some(existing.id.as_bytes()) {
            existing.seq = env.kv.increment(&key(&app.name, "seq"), 1)? as u64;
            set_json(env.kv, &record_key(&app.name, &existing.id), &existing)?;
            env.kv
                .set(&log_key(&app.name, existing.seq), existing.id.as_bytes())?;
        }
    }
    crate::platform::kv::update_json(
        env.kv,
        &record_key(&app.name, &existing.id),
        |d: Option<Delivery>| {
            Ok(match d {
                Some(mut d) => {
                    d.duplicates = d.duplicates.saturating_add(1);
                    (Some(d), ())
                }
                None => (None, ()),
            })
        },
    )?;
    Ok(Receipt {
        received: true,
        duplicate: true,
        id: existing.id,
    })
}

/// The parsed form of a body, and the identity that makes retries duplicates.
struct Parsed {
    event: Option<String>,
    client_key: Option<String>,
    create_time: Option<i64>,
    user_openid: Option<String>,
    content: Option<Value>,
    parse_error: Option<String>,
    identity: String,
}

fn parse_body(app: &str, body: &[u8]) -> Parsed {
    let mut p = Parsed {
        event: None,
        client_key: None,
        create_time: None,
        user_openid: None,
        content: None,
        parse_error: None,
        identity: String::new(),
    };
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            p.parse_error = Some("the body is JSON but not an object".into());
            p.identity = sha256_hex(&[app.as_bytes(), b"\0raw\0", body].concat());
            return p;
        }
        Err(e) => {
            p.parse_error = Some(format!("the body is not JSON: {e}"));
            p.identity = sha256_hex(&[app.as_bytes(), b"\0raw\0", body].concat());
            return p;
        }
    };
    let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_string);
    p.event = text("event");
    p.client_key = text("client_key");
    p.user_openid = text("user_openid");
    p.create_time = object.get("create_time").and_then(Value::as_i64);
    let content_text = match object.get("content") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v) => {
                p.content = Some(v);
                s.clone()
            }
            Err(e) => {
                p.parse_error = Some(format!("content is not JSON: {e}"));
                s.clone()
            }
        },
        // Some senders put the object in directly; keep it as it is.
        Some(other) => {
            p.content = Some(other.clone());
            other.to_string()
        }
        None => String::new(),
    };
    if p.event.is_none() {
        p.parse_error = Some("the body has no event".into());
    }
    let identity = json!([
        app,
        p.client_key,
        p.event,
        p.create_time,
        p.user_openid,
        content_text
    ]);
    p.identity = sha256_hex(identity.to_string().as_bytes());
    p
}
