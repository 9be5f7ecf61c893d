//! Taking events in (`POST /pixel/events`): parse, validate and hash each event
//! ([`crate::pixel::event`]), drop duplicates of (pixel, event, event_id) seen within
//! 48 h, and store the rest before answering ([`crate::pixel::queue`]).

use crate::ApiError;
use crate::pixel::event::{self, Context};
use crate::pixel::queue::{Queue, QueuedEvent, stat};
use crate::pixel::registry::Pixel;
use crate::platform::crypto::random_bytes;
use crate::platform::env::Env;
use crate::platform::json_reader::Json;
use serde::Serialize;
use std::borrow::Cow;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RejectedEvent {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// The answer to an ingest request.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    /// Stored, to be sent to TikTok.
    pub accepted: usize,
    /// Already accepted within 48 h (same event and event_id); not stored again.
    pub deduplicated: usize,
    pub rejected: Vec<RejectedEvent>,
    /// The event_id of each event, by index (generated when the event had none), so the
    /// TikTok browser pixel can send the same one.
    pub event_ids: Vec<Option<String>>,
}

/// The events of a body: a list, `{"events": [...]}`, or one event object.
pub fn events_of<'a, 'b>(body: &'a Json<'b>) -> Result<&'a [Json<'b>], ApiError> {
    match body {
        Json::Array(list) => Ok(list),
        Json::Object(map) => match map.get("events") {
            Some(Json::Array(list)) => Ok(list),
            Some(_) => Err(ApiError::invalid("events", "must be a list of events")),
            None => Ok(std::slice::from_ref(body)),
        },
        _ => Err(ApiError::invalid(
            "body",
            "must be an event, a list of events, or {\"events\": [...]}",
        )),
    }
}

pub fn ingest(
    env: &Env,
    pixel: &Pixel,
    list: &[Json],
    ctx: &Context,
) -> Result<IngestReport, ApiError> {
    if list.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "must contain at least one event",
        ));
    }
    if list.len() > pixel.max_batch {
        return Err(ApiError::invalid(
            "events",
            format!(
                "at most {} events per request for this pixel",
                pixel.max_batch
            ),
        ));
    }
    let queue = Queue::new(env.kv, &pixel.id);
    let rules = pixel.rules();
    let mut report = IngestReport {
        accepted: 0,
        deduplicated: 0,
        rejected: Vec::new(),
        event_ids: Vec::with_capacity(list.len()),
    };
    let mut prepared: Vec<event::Prepared> = Vec::with_capacity(list.len());
    let mut urls = event::PageUrls::default();
    for (index, raw) in list.iter().enumerate() {
        // Copied only to give an event without an id one ([`event::prepare`] takes the
        // fields it knows, so the rest, such as a body's `pixel_id`, are left behind).
        let event = match raw {
            Json::Object(map) if matches!(map.get("event_id"), None | Some(Json::Null)) => {
                let mut map = map.clone();
                map.insert(
                    "event_id",
                    Json::String(format!("edge-{}", hex::encode(random_bytes::<12>()?)).into()),
                );
                Cow::Owned(Json::Object(map))
            }
            _ => Cow::Borrowed(raw),
        };
        report.event_ids.push(
            event
                .get("event_id")
                .and_then(Json::as_str)
                .map(str::to_string),
        );
        match event::prepare(&event, &rules, ctx, &mut urls) {
            Ok(data) => prepared.push(data),
            Err(r) => report.rejected.push(RejectedEvent {
                index,
                field: r.field,
                reason: r.reason,
            }),
        }
    }
    let names: Vec<(&str, &str)> = prepared
        .iter()
        .map(|p| (p.event.as_str(), p.event_id.as_str()))
        .collect();
    let sightings = queue.first_sightings(&names, env.now)?;
    let mut accepted = Vec::with_capacity(prepared.len());
    for (data, &new) in prepared.into_iter().zip(&sightings.fresh) {
        if new {
            accepted.push(QueuedEvent {
                data,
                received_at: env.now,
            });
        } else {
            report.deduplicated += 1;
        }
    }
    queue.accept(&accepted, sightings)?;
    report.accepted = accepted.len();
    queue.count(stat::REJECTED, report.rejected.len() as i64)?;
    queue.count(stat::DEDUPLICATED, report.deduplicated as i64)?;
    Ok(report)
}
