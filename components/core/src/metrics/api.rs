//! The HTTP surface of the `metrics-fetch` component.
//!
//! | route | who |
//! |---|---|
//! | `GET /v1/orgs/{org}/metrics?advertiser=&level=&from=&to=[&group_by=&granularity=&entity_ids=]` (JSON, or CSV with `Accept: text/csv`) | admin or the org's key |
//! | `POST /v1/orgs/{org}/metrics/sync` `{advertiser_id, levels?, granularity?, from?, to?, max_requests?}` | admin or the org's key |
//! | `GET /v1/orgs/{org}/metrics/sync?advertiser=` (last run, rows, errors, progress) | admin or the org's key |
//! | `GET /v1/orgs/{org}/metrics/recommended?objective=` | admin or the org's key |
//! | `POST /v1/admin/tasks/metrics-sync` (every organization's advertisers) | admin (the host's scheduler) |

use crate::ApiError;
use crate::metrics::query::{self, GroupBy, Query};
use crate::metrics::report::{self, Granularity, Level};
use crate::metrics::sync::{self, SyncRequest};
use crate::platform::env::Env;
use crate::platform::http::{Request, Response, segments};
use crate::tenancy::access::{authorize_org, require_admin};
use crate::tenancy::org_id::OrgId;
use chrono::NaiveDate;
use serde_json::{Value, json};

pub fn handle(env: &Env, req: &Request) -> Result<Response, ApiError> {
    let path = segments(&req.path);
    let method = req.method.as_str();
    match path.as_slice() {
        ["v1", "admin", "tasks", "metrics-sync"] => {
            require_admin(env, req)?;
            match method {
                "POST" => Ok(Response::json(200, &sync::sync_all(env)?)),
                _ => Ok(Response::method_not_allowed("POST")),
            }
        }
        ["v1", "orgs", org, "metrics", rest @ ..] => {
            let org = authorize_org(env, req, org)?;
            match (rest, method) {
                ([], "GET") => query(env, req, &org),
                ([], _) => Ok(Response::method_not_allowed("GET")),
                (["sync"], "POST") => {
                    let body: SyncRequest = req.json()?;
                    Ok(Response::json(200, &sync::sync(env, &org, &body)?))
                }
                (["sync"], "GET") => status(env, req, &org),
                (["sync"], _) => Ok(Response::method_not_allowed("GET, POST")),
                (["recommended"], "GET") => {
                    let objective = req
                        .query_param("objective")
                        .ok_or_else(|| ApiError::invalid("objective", "is required"))?;
                    let list = report::recommended(&objective).ok_or_else(|| {
                        ApiError::invalid(
                            "objective",
                            "must be one of REACH, TRAFFIC, VIDEO_VIEWS, ENGAGEMENT, LEAD_GENERATION, APP_PROMOTION, WEB_CONVERSIONS, CONVERSIONS, PRODUCT_SALES",
                        )
                    })?;
                    Ok(Response::json(
                        200,
                        &json!({"objective": objective, "metrics": list}),
                    ))
                }
                (["recommended"], _) => Ok(Response::method_not_allowed("GET")),
                _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
            }
        }
        _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
    }
}

fn required(req: &Request, name: &str) -> Result<String, ApiError> {
    req.query_param(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::invalid(name, "is required"))
}

fn date(req: &Request, name: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(&required(req, name)?, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(name, "must be a date, YYYY-MM-DD"))
}

fn advertiser(req: &Request) -> Result<String, ApiError> {
    let a = required(req, "advertiser")?;
    if a.len() > 32 || !a.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(
            "advertiser",
            "must be TikTok's numeric id",
        ));
    }
    Ok(a)
}

fn query(env: &Env, req: &Request, org: &OrgId) -> Result<Response, ApiError> {
    let advertiser = advertiser(req)?;
    let level = Level::parse(&required(req, "level")?)?;
    let granularity = match req.query_param("granularity") {
        Some(g) => Granularity::parse(&g)?,
        None => Granularity::Day,
    };
    let group_by = match req.query_param("group_by") {
        Some(g) => GroupBy::parse(&g, level)?,
        None => GroupBy::Day,
    };
    let entities = req.query_param("entity_ids").map(|ids| {
        ids.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    let q = Query {
        advertiser: advertiser.clone(),
        level,
        granularity,
        from: date(req, "from")?,
        to: date(req, "to")?,
        group_by,
        entities,
    };
    let rows = query::query(env.kv, org, &q)?;
    let st = sync::state(env, org, &advertiser, level, granularity)?;
    let wants_csv = req.header("accept").is_some_and(|a| a.contains("text/csv"));
    if wants_csv {
        return Ok(Response {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/csv; charset=utf-8".into()),
                (
                    "content-disposition".into(),
                    format!(
                        "attachment; filename=\"tiktok-{advertiser}-{}-{}-{}.csv\"",
                        level.as_str(),
                        q.from,
                        q.to
                    ),
                ),
            ],
            body: query::to_csv(&rows).into_bytes(),
        });
    }
    let rows: Vec<Value> = rows.iter().map(|r| Value::Object(r.to_json())).collect();
    Ok(Response::json(
        200,
        &json!({
            "advertiser_id": advertiser,
            "level": level,
            "granularity": granularity,
            "from": q.from.to_string(),
            "to": q.to.to_string(),
            // Dates are the advertiser's local dates in this zone.
            "timezone": st.timezone,
            "synced_through": st.synced_through,
            "rows": rows,
        }),
    ))
}

fn status(env: &Env, req: &Request, org: &OrgId) -> Result<Response, ApiError> {
    let advertiser = advertiser(req)?;
    let mut states = Vec::new();
    for level in Level::ALL {
        for gran in [Granularity::Day, Granularity::Hour] {
            let st = sync::state(env, org, &advertiser, level, gran)?;
            if st.last_run.is_some() || st.pending.is_some() {
                states.push(st);
            }
        }
    }
    Ok(Response::json(
        200,
        &json!({"advertiser_id": advertiser, "syncs": states}),
    ))
}
