//! The mock's own API under `/_mock/`: inspect requests, inject faults, move the clock,
//! add advertisers and tokens, reset. Not part of TikTok's API.

use crate::Mock;
use crate::envelope::{Response, json_response};
use crate::model::{Fault, FaultKind};
use crate::request::Params;
use crate::state::State;
use serde_json::json;
use std::time::Duration;

fn bad(message: impl Into<String>) -> Response {
    json_response(400, &json!({"error": message.into()}))
}

/// `POST /_mock/webhooks/send {url, event, content?, user_openid?, max_attempts?, backoff_ms?}`:
/// signs and delivers a webhook with the app secret, retrying until a 200; answers with the attempts.
pub async fn send_webhook(mock: &Mock, body: &[u8]) -> Response {
    let p = match Params::from_json(body) {
        Ok(p) => p,
        Err(e) => return bad(e.message),
    };
    let parsed = (|| {
        let url = p.required_str("url").map_err(|e| e.message)?;
        if !url.starts_with("http://") {
            return Err("url must be an http:// URL".to_string());
        }
        let event = p.required_str("event").map_err(|e| e.message)?;
        let user = p
            .str("user_openid")
            .map_err(|e| e.message)?
            .unwrap_or_else(|| "act.mock-user".into());
        let attempts = p
            .u64("max_attempts")
            .map_err(|e| e.message)?
            .unwrap_or(5)
            .clamp(1, 20) as u32;
        let backoff = Duration::from_millis(
            p.u64("backoff_ms")
                .map_err(|e| e.message)?
                .unwrap_or(500)
                .min(60_000),
        );
        Ok((url, event, user, attempts, backoff))
    })();
    let (url, event, user, max_attempts, backoff) = match parsed {
        Ok(v) => v,
        Err(e) => return bad(e),
    };
    let content = p.get("content").cloned().unwrap_or(json!({}));
    let (client_key, secret, now) = mock.with_state(|s| {
        (
            s.config.app_id.clone(),
            s.config.app_secret.clone(),
            s.unix_now(),
        )
    });
    let delivery = crate::webhooks::delivery_body(&client_key, &event, now, &user, &content);
    let attempts =
        crate::webhooks::deliver(&url, &secret, delivery.clone(), max_attempts, backoff).await;
    let delivered = attempts.last().is_some_and(|a| a.status == 200);
    json_response(
        200,
        &json!({"delivered": delivered, "attempts": attempts, "body": String::from_utf8_lossy(&delivery)}),
    )
}

pub fn handle(
    mock: &Mock,
    method: &http::Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Response {
    let params = if method == http::Method::GET {
        Params::from_query(query)
    } else {
        match Params::from_json(body) {
            Ok(p) => p,
            Err(e) => return bad(e.message),
        }
    };
    let result = match (method.as_str(), path) {
        ("GET", "/_mock/requests") => Ok(mock.with_state(|s| json!({"requests": s.requests}))),
        ("POST", "/_mock/reset") => Ok(mock.with_state(|s| {
            *s = State::new(s.config.clone());
            json!({"reset": true})
        })),
        ("POST", "/_mock/inject") => inject(mock, &params),
        ("POST", "/_mock/clock") => params
            .u64("advance_seconds")
            .map_err(|e| e.message)
            .and_then(|v| v.ok_or_else(|| "advance_seconds is required".to_string()))
            .map(|secs| mock.with_state(|s| {
                s.clock_offset += Duration::from_secs(secs);
                json!({"clock_offset_seconds": s.clock_offset.as_secs()})
            })),
        ("POST", "/_mock/spark/post_code") => Ok(mock.with_state(|s| {
            let post = crate::creative::new_post_code(s);
            json!({"auth_code": post.code, "item_id": post.item_id, "identity_id": post.identity_id})
        })),
        ("GET", "/_mock/events") => Ok(mock.with_state(|s| {
            let source_id = params.str("event_source_id").ok().flatten();
            let events: Vec<_> = s
                .events
                .iter()
                .filter(|e| source_id.as_ref().is_none_or(|id| *id == e.source_id))
                .map(|e| {
                    json!({
                        "event_source": e.source, "event_source_id": e.source_id, "event": e.event,
                        "event_id": e.event_id, "test_event_code": e.test_event_code,
                        "duplicate": e.duplicate, "data": e.body,
                    })
                })
                .collect();
            json!({"events": events})
        })),
        ("GET", "/_mock/advertisers") => Ok(mock.with_state(|s| {
            json!({"advertisers": s.advertisers.iter().map(|a| json!({"advertiser_id": a.id, "name": a.name, "currency": a.currency, "timezone": a.timezone})).collect::<Vec<_>>()})
        })),
        ("POST", "/_mock/advertisers") => (|| {
            let name = params.required_str("name").map_err(|e| e.message)?;
            let currency = params.str("currency").map_err(|e| e.message)?.unwrap_or_else(|| "USD".into());
            let timezone = params.str("timezone").map_err(|e| e.message)?.unwrap_or_else(|| "UTC".into());
            Ok(mock.with_state(|s| {
                let a = s.add_advertiser(&name, &currency, &timezone);
                json!({"advertiser_id": a.id})
            }))
        })(),
        ("POST", "/_mock/tokens") => (|| {
            let ids = params.str_list("advertiser_ids").map_err(|e| e.message)?.ok_or("advertiser_ids is required")?;
            Ok(json!({"access_token": mock.token_for(&ids)}))
        })(),
        _ => return json_response(404, &json!({"error": format!("no mock admin route {method} {path}")})),
    };
    match result {
        Ok(v) => json_response(200, &v),
        Err(e) => bad(e),
    }
}

/// `POST /_mock/inject {count, path?, code?, message?, http_status?, delay_ms?}`.
fn inject(mock: &Mock, p: &Params) -> Result<serde_json::Value, String> {
    let count = p
        .u64("count")
        .map_err(|e| e.message)?
        .unwrap_or(1)
        .min(10_000);
    let path = p.str("path").map_err(|e| e.message)?.unwrap_or_default();
    let delay = Duration::from_millis(
        p.u64("delay_ms")
            .map_err(|e| e.message)?
            .unwrap_or(0)
            .min(600_000),
    );
    let kind = match (
        p.u64("code").map_err(|e| e.message)?,
        p.u64("http_status").map_err(|e| e.message)?,
    ) {
        (Some(_), Some(_)) => return Err("give `code` or `http_status`, not both".into()),
        (Some(code), None) => FaultKind::Code {
            code: code as i64,
            message: p
                .str("message")
                .map_err(|e| e.message)?
                .unwrap_or_else(|| "Injected error.".into()),
        },
        (None, Some(status)) if (400..=599).contains(&status) => FaultKind::Http {
            status: status as u16,
        },
        (None, Some(_)) => return Err("http_status must be 400-599".into()),
        (None, None) if !delay.is_zero() => FaultKind::DelayOnly,
        (None, None) => return Err("give `code`, `http_status` or `delay_ms`".into()),
    };
    mock.with_state(|s| {
        for _ in 0..count {
            s.faults.push_back(Fault {
                path: path.clone(),
                kind: kind.clone(),
                delay,
            });
        }
        Ok(json!({"queued": s.faults.len()}))
    })
}
