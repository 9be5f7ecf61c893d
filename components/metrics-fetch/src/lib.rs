//! The `metrics-fetch` component: bindings and routing only; logic lives in `tiktok-edge-core`.

tiktok_edge_guest::component_bindings!("tiktok:edge/metrics-fetch");

use exports::tiktok::edge::metrics::{self as wit, Guest as Capability};
use exports::wasi::http::incoming_handler::Guest as IncomingHandler;
use tiktok_edge_core::metrics::query::{self, GroupBy, Query};
use tiktok_edge_core::metrics::report::{Granularity, Level};
use tiktok_edge_core::metrics::sync::{self, RunStatus, SyncRequest};
use tiktok_edge_core::{OrgId, metrics::api};
use tiktok_edge_guest::env::with_env;
use tiktok_edge_guest::http::{Request, Response, serve};
use tiktok_edge_guest::tiktok::edge::types::{ComponentInfo, Error};
use tiktok_edge_guest::wasi::http::types::{IncomingRequest, ResponseOutparam};
use tiktok_edge_guest::{ApiError, info};

const NAME: &str = "metrics-fetch";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn level(l: wit::Level) -> Level {
    match l {
        wit::Level::Advertiser => Level::Advertiser,
        wit::Level::Campaign => Level::Campaign,
        wit::Level::Adgroup => Level::Adgroup,
        wit::Level::Ad => Level::Ad,
    }
}

fn wit_level(l: Level) -> wit::Level {
    match l {
        Level::Advertiser => wit::Level::Advertiser,
        Level::Campaign => wit::Level::Campaign,
        Level::Adgroup => wit::Level::Adgroup,
        Level::Ad => wit::Level::Ad,
    }
}

fn status(s: RunStatus) -> wit::SyncStatus {
    match s {
        RunStatus::Ok => wit::SyncStatus::Ok,
        RunStatus::Partial => wit::SyncStatus::Partial,
        RunStatus::RateLimited => wit::SyncStatus::RateLimited,
        RunStatus::PermissionDenied => wit::SyncStatus::PermissionDenied,
        RunStatus::ReauthorizationRequired => wit::SyncStatus::ReauthorizationRequired,
        RunStatus::Error => wit::SyncStatus::Error,
    }
}

fn date(field: &str, s: &str) -> Result<chrono::NaiveDate, ApiError> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| ApiError::invalid(field, "must be a date, YYYY-MM-DD"))
}

struct Component;

impl Capability for Component {
    fn info() -> Result<ComponentInfo, Error> {
        info::component_info(NAME, VERSION).map_err(Error::from)
    }

    fn sync(org: String, advertiser_id: String) -> Result<wit::SyncReport, Error> {
        let org = OrgId::parse(&org)?;
        let req = SyncRequest {
            advertiser_id,
            ..SyncRequest::default()
        };
        let r = with_env(|env| sync::sync(env, &org, &req))?;
        Ok(wit::SyncReport {
            advertiser_id: r.advertiser_id,
            timezone: r.timezone,
            levels: r
                .levels
                .into_iter()
                .map(|l| wit::LevelReport {
                    level: wit_level(l.level),
                    status: status(l.status),
                    requests: l.requests,
                    rows: l.rows,
                    synced_through: l.synced_through.map(|d| d.to_string()),
                    resume_from: l.resume_from.map(|d| d.to_string()),
                    error: l.error,
                })
                .collect(),
        })
    }

    fn query(
        org: String,
        advertiser_id: String,
        level_: wit::Level,
        from: String,
        to: String,
        group_by: wit::GroupBy,
    ) -> Result<Vec<wit::MetricRow>, Error> {
        let org = OrgId::parse(&org)?;
        let q = Query {
            advertiser: advertiser_id,
            level: level(level_),
            granularity: Granularity::Day,
            from: date("from", &from)?,
            to: date("to", &to)?,
            group_by: match group_by {
                wit::GroupBy::Day => GroupBy::Day,
                wit::GroupBy::Hour => GroupBy::Hour,
                wit::GroupBy::Entity => GroupBy::Entity,
                wit::GroupBy::EntityDay => GroupBy::EntityDay,
                wit::GroupBy::Total => GroupBy::Total,
            },
            entities: None,
        };
        let rows = with_env(|env| query::query(env.kv, &org, &q))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let metrics = r
                    .to_json()
                    .into_iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "date" | "hour" | "entity_id"))
                    .map(|(name, v)| wit::Metric {
                        name,
                        value: v.as_f64(),
                    })
                    .collect();
                wit::MetricRow {
                    date: r.date.map(|d| d.to_string()),
                    hour: r.hour,
                    entity_id: r.entity_id,
                    metrics,
                }
            })
            .collect())
    }
}

impl IncomingHandler for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        serve(request, out, route);
    }
}

fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/info/metrics-fetch") => Ok(Response::json(
            200,
            &info::to_json(&info::component_info(NAME, VERSION)?),
        )),
        (_, "/info/metrics-fetch") => Ok(Response::method_not_allowed("GET")),
        _ => with_env(|env| api::handle(env, req)),
    }
}

export!(Component);
