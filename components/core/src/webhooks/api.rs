//! The HTTP surface of the `webhook-receiver` component.
//!
//! | route | who |
//! |---|---|
//! | `POST /webhooks/tiktok/{app}` | TikTok (verified by `TikTok-Signature`) |
//! | `POST /webhooks/process` | admin (the host's scheduler, or a cron on Spin) |
//! | `GET /webhooks/apps`, `GET /webhooks/apps/{app}/stats` | admin |
//! | `GET /webhooks/apps/{app}/deliveries[?event=&status=&since=&until=&cursor=&limit=]`, `GET …/{id}` | admin |
//! | `POST /webhooks/apps/{app}/dead-letters/replay` `{"ids": [...]}` (all when absent) | admin |
//! | `GET /v1/orgs/{org}/webhooks/deliveries[?…]`, `GET …/{id}` | admin or the org's key |

use crate::ApiError;
use crate::platform::env::Env;
use crate::platform::http::{Request, Response, segments};
use crate::tenancy::access::{authorize_org, require_admin};
use crate::webhooks::deliveries::{self, Filter, Status};
use crate::webhooks::{apps, process, receive};
use serde::Deserialize;
use serde_json::json;

pub fn handle(env: &Env, req: &Request) -> Result<Response, ApiError> {
    let path = segments(&req.path);
    let method = req.method.as_str();
    match path.as_slice() {
        ["webhooks", "tiktok", app] => match method {
            "POST" => {
                // Unknown apps are a 404 before anything is read or counted.
                let app = apps::app(env, app)?;
                let receipt =
                    receive::receive(env, &app, req.header("tiktok-signature"), &req.body)?;
                Ok(Response::json(200, &receipt))
            }
            _ => Ok(Response::method_not_allowed("POST")),
        },
        ["webhooks", "process"] => {
            require_admin(env, req)?;
            match method {
                "POST" => Ok(Response::json(200, &process::process(env)?)),
                _ => Ok(Response::method_not_allowed("POST")),
            }
        }
        ["webhooks", "apps", rest @ ..] => {
            require_admin(env, req)?;
            admin(env, req, rest)
        }
        ["v1", "orgs", org, "webhooks", rest @ ..] => {
            let org = authorize_org(env, req, org)?;
            match (rest, method) {
                (["deliveries"], "GET") => Ok(Response::json(
                    200,
                    &deliveries::list_org(env, &org, &filter(req)?)?,
                )),
                (["deliveries", id], "GET") => Ok(Response::json(
                    200,
                    &deliveries::get_org_delivery(env, &org, id)?,
                )),
                (["deliveries"] | ["deliveries", _], _) => Ok(Response::method_not_allowed("GET")),
                _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
            }
        }
        _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    ids: Option<Vec<String>>,
}

fn admin(env: &Env, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    let method = req.method.as_str();
    match (rest, method) {
        ([], "GET") => {
            let apps: Vec<_> = apps::apps(env)?
                .iter()
                .map(|a| deliveries::stats(env, a))
                .collect::<Result<_, _>>()?;
            Ok(Response::json(200, &json!({"apps": apps})))
        }
        ([app, "stats"], "GET") => Ok(Response::json(
            200,
            &deliveries::stats(env, &apps::app(env, app)?)?,
        )),
        ([app, "deliveries"], "GET") => Ok(Response::json(
            200,
            &deliveries::list_app(env, &apps::app(env, app)?, &filter(req)?)?,
        )),
        ([app, "deliveries", id], "GET") => Ok(Response::json(
            200,
            &deliveries::get_app_delivery(env, &apps::app(env, app)?, id)?,
        )),
        ([app, "dead-letters", "replay"], "POST") => {
            let app = apps::app(env, app)?;
            let body: ReplayRequest = if req.body.is_empty() {
                ReplayRequest::default()
            } else {
                req.json()?
            };
            let replayed = process::replay(env, &app, body.ids)?;
            Ok(Response::json(200, &json!({"replayed": replayed})))
        }
        ([] | [_, "stats" | "deliveries"] | [_, "deliveries", _], _) => {
            Ok(Response::method_not_allowed("GET"))
        }
        ([_, "dead-letters", "replay"], _) => Ok(Response::method_not_allowed("POST")),
        _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
    }
}

/// Listing filters from the query string; each bad one is named.
fn filter(req: &Request) -> Result<Filter, ApiError> {
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        req.query_param(name)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| ApiError::invalid(name, "must be a non-negative whole number"))
            })
            .transpose()
    };
    let status = match req.query_param("status").as_deref() {
        None => None,
        Some("received") => Some(Status::Received),
        Some("processed") => Some(Status::Processed),
        Some("dead") => Some(Status::Dead),
        Some(_) => {
            return Err(ApiError::invalid(
                "status",
                "must be received, processed or dead",
            ));
        }
    };
    let limit = match number("limit")? {
        None => 50,
        Some(n @ 1..=200) => n as usize,
        Some(_) => return Err(ApiError::invalid("limit", "must be from 1 to 200")),
    };
    Ok(Filter {
        event: req.query_param("event").filter(|e| !e.is_empty()),
        status,
        since: number("since")?,
        until: number("until")?,
        cursor: number("cursor")?.map(|c| c as u64),
        limit,
    })
}
