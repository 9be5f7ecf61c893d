//! The HTTP surface of the `pixel-collector` component.
//!
//! | route | who |
//! |---|---|
//! | `GET /pixel.js[?pixel=px_…]` | browsers |
//! | `POST /pixel/events[?pixel=px_…]` (JSON or text/plain), `OPTIONS` for CORS | browsers from the pixel's allowed origins |
//! | `POST /pixel/flush` | admin (the host's scheduler, or a cron on Spin) |
//! | `GET/POST /v1/orgs/{org}/pixels`, `GET/PATCH …/{id}`, `GET …/{id}/stats` | admin or the org's key |
//! | `POST …/{id}/events` (server-side events) | admin or the org's key |
//! | `GET …/{id}/dead-letters`, `POST …/{id}/dead-letters/replay` | admin or the org's key |

use crate::ApiError;
use crate::pixel::event::Context;
use crate::pixel::forward;
use crate::pixel::ingest::{self, events_of};
use crate::pixel::queue::{self, Queue};
use crate::pixel::registry::{self, Pixel};
use crate::platform::crypto::sha256_hex;
use crate::platform::env::Env;
use crate::platform::http::{Request, Response, segments};
use crate::platform::json_reader::Json;
use crate::tenancy::access::{authorize_org, require_admin};
use serde::Deserialize;
use serde_json::json;

/// Largest body `POST /pixel/events` reads (1,000 events of about 1 KiB).
pub const MAX_EVENTS_BODY: usize = 1 << 20;

pub fn handle(env: &Env, req: &Request, script: &str) -> Result<Response, ApiError> {
    let path = segments(&req.path);
    let method = req.method.as_str();
    match path.as_slice() {
        ["pixel.js"] => match method {
            "GET" | "HEAD" => serve_script(env, req, script),
            _ => Ok(Response::method_not_allowed("GET")),
        },
        ["pixel", "events"] => match method {
            "POST" => collect(env, req),
            "OPTIONS" => preflight(env, req),
            _ => Ok(Response::method_not_allowed("POST, OPTIONS")),
        },
        ["pixel", "flush"] => {
            require_admin(env, req)?;
            match method {
                "POST" => Ok(Response::json(200, &forward::flush(env)?)),
                _ => Ok(Response::method_not_allowed("POST")),
            }
        }
        ["v1", "orgs", org, "pixels", rest @ ..] => {
            let org = authorize_org(env, req, org)?;
            manage(env, req, &org, rest)
        }
        _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
    }
}

fn serve_script(env: &Env, req: &Request, script: &str) -> Result<Response, ApiError> {
    // With ?pixel=, the pixel's settings are baked in and it starts by itself.
    let mut body = String::new();
    if let Some(id) = req.query_param("pixel") {
        let pixel = registry::find(env, &id)?;
        let cfg = json!({"id": pixel.id, "consent": pixel.consent_mode});
        body.push_str(&format!(
            "window.edge=window.edge||function(){{(edge.q=edge.q||[]).push(arguments)}};edge.cfg={cfg};\n"
        ));
    }
    body.push_str(script);
    let etag = format!("\"{}\"", &sha256_hex(body.as_bytes())[..16]);
    let headers = vec![
        (
            "content-type".to_string(),
            "application/javascript; charset=utf-8".to_string(),
        ),
        (
            "cache-control".to_string(),
            "public, max-age=300, stale-while-revalidate=86400".to_string(),
        ),
        ("etag".to_string(), etag.clone()),
        ("x-content-type-options".to_string(), "nosniff".to_string()),
    ];
    if req.header("if-none-match") == Some(etag.as_str()) {
        return Ok(Response {
            status: 304,
            headers,
            body: Vec::new(),
        });
    }
    Ok(Response {
        status: 200,
        headers,
        body: if req.method == "HEAD" {
            Vec::new()
        } else {
            body.into_bytes()
        },
    })
}

fn cors_headers(origin: &str) -> Vec<(String, String)> {
    vec![
        ("access-control-allow-origin".into(), origin.into()),
        (
            "access-control-allow-methods".into(),
            "POST, OPTIONS".into(),
        ),
        ("access-control-allow-headers".into(), "content-type".into()),
        ("access-control-max-age".into(), "600".into()),
        ("vary".into(), "Origin".into()),
    ]
}

/// The pixel a public request names: `?pixel=` or the body's `pixel_id`.
fn pixel_of(env: &Env, req: &Request, body: Option<&Json>) -> Result<Pixel, ApiError> {
    let id = req
        .query_param("pixel")
        .or_else(|| {
            body.and_then(|b| b.get("pixel_id"))
                .and_then(Json::as_str)
                .map(str::to_string)
        })
        .ok_or_else(|| {
            ApiError::invalid("pixel_id", "is required (query ?pixel= or body pixel_id)")
        })?;
    registry::find(env, &id)
}

/// A browser's origin must be allowed; requests without `Origin` (servers, beacons from
/// the same origin) pass.
fn check_origin(req: &Request, pixel: &Pixel) -> Result<Option<String>, Response> {
    match req.header("origin") {
        None => Ok(None),
        Some(origin) if pixel.allows_origin(origin) => Ok(Some(origin.to_string())),
        Some(origin) => {
            let mut r = Response::error(&ApiError::Forbidden(format!(
                "origin {origin} may not send events to pixel {}; add it to the pixel's allowed_origins",
                pixel.id
            )));
            r.headers.push(("vary".into(), "Origin".into()));
            Err(r)
        }
    }
}

fn preflight(env: &Env, req: &Request) -> Result<Response, ApiError> {
    let pixel = pixel_of(env, req, None)?;
    match check_origin(req, &pixel) {
        Ok(origin) => {
            let mut r = Response::no_content();
            if let Some(origin) = origin {
                r.headers = cors_headers(&origin);
            }
            Ok(r)
        }
        Err(r) => Ok(r),
    }
}

fn client_context(env: &Env, req: &Request) -> Context {
    Context {
        ip: req.header("spin-client-addr").and_then(|a| {
            a.parse::<std::net::SocketAddr>()
                .ok()
                .map(|s| s.ip().to_string())
                .or_else(|| a.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string()))
        }),
        user_agent: req.header("user-agent").map(str::to_string),
        now: env.now,
    }
}

fn parse_body(req: &Request) -> Result<Json<'_>, ApiError> {
    if req.body.len() > MAX_EVENTS_BODY {
        return Err(ApiError::PayloadTooLarge(MAX_EVENTS_BODY as u64));
    }
    match req.header("content-type").map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }) {
        None => {}
        Some(t) if t == "application/json" || t == "text/plain" || t.is_empty() => {}
        Some(t) => {
            return Err(ApiError::invalid(
                "content-type",
                format!("{t} is not accepted; send application/json or text/plain"),
            ));
        }
    }
    Json::parse(&req.body)
        .map_err(|e| ApiError::invalid("body", format!("is not valid JSON ({e})")))
}

fn collect(env: &Env, req: &Request) -> Result<Response, ApiError> {
    let body = parse_body(req)?;
    let pixel = pixel_of(env, req, Some(&body))?;
    let origin = match check_origin(req, &pixel) {
        Ok(o) => o,
        Err(r) => return Ok(r),
    };
    let report = ingest::ingest(env, &pixel, events_of(&body)?, &client_context(env, req))?;
    let mut r = Response::json(200, &report);
    if let Some(origin) = origin {
        r.headers.extend(cors_headers(&origin));
    }
    Ok(r)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    ids: Option<Vec<u64>>,
}

fn manage(
    env: &Env,
    req: &Request,
    org: &crate::OrgId,
    rest: &[&str],
) -> Result<Response, ApiError> {
    let method = req.method.as_str();
    match (rest, method) {
        ([], "GET") => Ok(Response::json(
            200,
            &json!({"pixels": registry::list(env, org)?}),
        )),
        ([], "POST") => Ok(Response::json(
            201,
            &registry::create(env, org, req.json()?)?,
        )),
        ([], _) => Ok(Response::method_not_allowed("GET, POST")),
        ([id], "GET") => Ok(Response::json(200, &registry::get(env, org, id)?)),
        ([id], "PATCH") => Ok(Response::json(
            200,
            &registry::update(env, org, id, req.json()?)?,
        )),
        ([_], _) => Ok(Response::method_not_allowed("GET, PATCH")),
        ([id, "stats"], "GET") => Ok(Response::json(
            200,
            &queue::stats(env, &registry::get(env, org, id)?)?,
        )),
        ([id, "events"], "POST") => {
            let pixel = registry::get(env, org, id)?;
            let body = parse_body(req)?;
            // Server-side events carry the shopper's IP and user agent in `user`.
            let ctx = Context {
                ip: None,
                user_agent: None,
                now: env.now,
            };
            Ok(Response::json(
                200,
                &ingest::ingest(env, &pixel, events_of(&body)?, &ctx)?,
            ))
        }
        ([id, "dead-letters"], "GET") => {
            let pixel = registry::get(env, org, id)?;
            let after = req
                .query_param("after")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let limit = req
                .query_param("limit")
                .map(|l| {
                    l.parse::<usize>()
                        .ok()
                        .filter(|l| (1..=1000).contains(l))
                        .ok_or_else(|| ApiError::invalid("limit", "must be 1-1000"))
                })
                .transpose()?
                .unwrap_or(100);
            let letters = Queue::new(env.kv, &pixel.id).dead_letters(after, limit)?;
            Ok(Response::json(200, &json!({"dead_letters": letters})))
        }
        ([id, "dead-letters", "replay"], "POST") => {
            let pixel = registry::get(env, org, id)?;
            let body: ReplayRequest = req.json()?;
            let replayed = Queue::new(env.kv, &pixel.id).replay(body.ids.as_deref())?;
            Ok(Response::json(200, &json!({"replayed": replayed})))
        }
        _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
    }
}
