//! Pixels (tiktok-api.md §6) and the Events API 2.0 (`POST /event/track/`, §3).

use crate::envelope::{Reply, paginate};
use crate::model::{Pixel, StoredEvent, Token};
use crate::oauth::covers;
use crate::request::{Params, paging};
use crate::state::State;
use serde_json::{Value, json};
use std::time::Duration;

/// TikTok deduplicates (event_source_id, event, event_id) for 48 hours.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(48 * 3600);
/// Most events the mock keeps for listing.
pub const MAX_STORED_EVENTS: usize = 200_000;
/// More events than this in one request fail the whole request.
pub const MAX_EVENTS: usize = 1000;

/// Standard event names (tiktok-api.md §3.5); offline events must use one of them.
pub const STANDARD_EVENTS: &[&str] = &[
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "ApplicationApproval",
    "ClickButton",
    "CompletePayment",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Download",
    "FindLocation",
    "InitiateCheckout",
    "Lead",
    "PlaceAnOrder",
    "Purchase",
    "Schedule",
    "Search",
    "StartTrial",
    "SubmitApplication",
    "SubmitForm",
    "Subscribe",
    "ViewContent",
    "Pageview",
    "PageView",
];

/// `GET /pixel/list/?advertiser_id=…` (page_size 1–20).
pub fn pixel_list(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let (page, page_size) = paging(p, 20)?;
    let pixels: Vec<Value> = s
        .pixels
        .iter()
        .filter(|px| px.advertiser_id == advertiser_id)
        .map(Pixel::to_json)
        .collect();
    let (pixels, page_info) = paginate(&pixels, page, page_size);
    Ok(Reply::ok(json!({"pixels": pixels, "page_info": page_info})))
}

/// `POST /pixel/create/ {advertiser_id, pixel_name, request_id?}`.
pub fn pixel_create(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let name = p.required_str("pixel_name")?;
    if name.chars().count() > 128 {
        return Err(Reply::param(
            "pixel_name: Length must be between 1 and 128.",
        ));
    }
    s.idempotent(&advertiser_id, p, |s| {
        let pixel = s.add_pixel(&advertiser_id, &name);
        Ok(json!({"pixel_id": pixel.id, "pixel_code": pixel.code, "pixel_name": pixel.name}))
    })
}

fn is_sha256_hex(v: &str) -> bool {
    v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks one event; the error names the field the way TikTok does (`Batch.3.user.email: …`).
fn check_event(source: &str, i: usize, e: &Value) -> Result<(), Reply> {
    let at = |field: &str, what: &str| Reply::param(format!("Batch.{i}.{field}: {what}"));
    let obj = e.as_object().ok_or_else(|| at("", "Not a valid object."))?;
    let event = obj
        .get("event")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| at("event", "Missing data for required field."))?;
    if event.len() > 100 {
        return Err(at("event", "Length must be between 1 and 100."));
    }
    if source == "offline" && !STANDARD_EVENTS.contains(&event) {
        return Err(at("event", "Offline events must be standard events."));
    }
    match obj.get("event_time") {
        None => return Err(at("event_time", "Missing data for required field.")),
        Some(t) if t.as_u64().is_none() => return Err(at("event_time", "Not a valid integer.")),
        _ => {}
    }
    if let Some(id) = obj.get("event_id")
        && !id.is_string()
    {
        return Err(at("event_id", "Not a valid string."));
    }
    if let Some(user) = obj.get("user") {
        let user = user
            .as_object()
            .ok_or_else(|| at("user", "Not a valid object."))?;
        for field in ["email", "phone", "external_id"] {
            let values: Vec<&Value> = match user.get(field) {
                None | Some(Value::Null) => continue,
                Some(Value::Array(items)) => items.iter().collect(),
                Some(v) => vec![v],
            };
            for v in values {
                let s = v
                    .as_str()
                    .ok_or_else(|| at(&format!("user.{field}"), "Not a valid string."))?;
                // TikTok's own doc example sends a plain external_id (tiktok-api.md, vectors caveat), so
                // only email and phone must be digests; a plain external_id is accepted.
                if field != "external_id" && !is_sha256_hex(s) {
                    return Err(at(
                        &format!("user.{field}"),
                        "Must be SHA-256 hashed (64 hexadecimal characters).",
                    ));
                }
            }
        }
    }
    if let Some(props) = obj.get("properties") {
        let props = props
            .as_object()
            .ok_or_else(|| at("properties", "Not a valid object."))?;
        if let Some(v) = props.get("value")
            && !v.is_number()
        {
            return Err(at("properties.value", "Not a valid number."));
        }
        if let Some(c) = props.get("currency")
            && !c
                .as_str()
                .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(at(
                "properties.currency",
                "Not a valid ISO 4217 currency code.",
            ));
        }
        if let Some(contents) = props.get("contents") {
            let contents = contents
                .as_array()
                .ok_or_else(|| at("properties.contents", "Not a valid list."))?;
            for (j, c) in contents.iter().enumerate() {
                if let Some(id) = c.get("content_id")
                    && !id.is_string()
                {
                    return Err(at(
                        &format!("properties.contents.{j}.content_id"),
                        "Not a valid string.",
                    ));
                }
                for n in ["price", "quantity"] {
                    if let Some(v) = c.get(n)
                        && !v.is_number()
                    {
                        return Err(at(
                            &format!("properties.contents.{j}.{n}"),
                            "Not a valid number.",
                        ));
                    }
                }
            }
        }
    }
    if source == "crm"
        && obj
            .get("lead")
            .and_then(|l| l.get("lead_id"))
            .and_then(Value::as_str)
            .is_none()
    {
        return Err(at("lead.lead_id", "Missing data for required field."));
    }
    Ok(())
}

/// `POST /event/track/`: validates all events first (one bad event or more than 1,000 fail
/// the whole request), then keeps each one not seen in the last 48 hours.
pub fn track(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let source = p.required_str("event_source")?;
    if !matches!(source.as_str(), "web" | "app" | "offline" | "crm") {
        return Err(Reply::param(
            "event_source: Must be one of: web, app, offline, crm.",
        ));
    }
    let source_id = p.required_str("event_source_id")?;
    if source == "web" {
        let pixel = s.pixels.iter().find(|px| px.code == source_id);
        if !pixel.is_some_and(|px| token.advertiser_ids.contains(&px.advertiser_id)) {
            return Err(Reply::error(
                40001,
                format!(
                    "No permission to operate pixel code: {source_id}. You must be an admin or operator of this advertiser account."
                ),
            ));
        }
    }
    let test_event_code = p.str("test_event_code")?;
    let data = match p.get("data") {
        Some(Value::Array(d)) => d,
        Some(_) => return Err(Reply::param("data: Not a valid list.")),
        None => return Err(Reply::param("data: Missing data for required field.")),
    };
    if data.is_empty() || data.len() > MAX_EVENTS {
        return Err(Reply::param(format!(
            "data: Length must be between 1 and {MAX_EVENTS}."
        )));
    }
    for (i, e) in data.iter().enumerate() {
        check_event(&source, i, e)?;
    }
    let now = s.now();
    for e in data {
        let event = e["event"].as_str().unwrap_or_default().to_string();
        let event_id = e
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut stored = StoredEvent {
            source: source.clone(),
            source_id: source_id.clone(),
            event,
            event_id,
            test_event_code: test_event_code.clone(),
            duplicate: false,
            body: e.clone(),
            received: now,
        };
        if let Some(key) = stored.key() {
            let (newest, count) = s.event_index.entry(key).or_insert((now, 0));
            // Within the window of the newest stored copy: of any stored copy.
            stored.duplicate = *count > 0 && now.duration_since(*newest) <= DEDUP_WINDOW;
            *newest = now;
            *count += 1;
        }
        s.events.push(stored);
    }
    // Keep memory bounded: the oldest events go first.
    if s.events.len() > MAX_STORED_EVENTS {
        let excess = s.events.len() - MAX_STORED_EVENTS;
        for old in s.events.drain(..excess) {
            let Some(key) = old.key() else { continue };
            if let Some((_, count)) = s.event_index.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    s.event_index.remove(&key);
                }
            }
        }
    }
    Ok(Reply::ok(json!({})))
}
