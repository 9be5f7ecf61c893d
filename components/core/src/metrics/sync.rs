//! Syncing TikTok reports into stored metrics: chunked to TikTok's date windows, every
//! page, deleted entities included, incremental with a trailing lookback, resumable.
//!
//! Per (organization, advertiser, level, granularity) a state record remembers the last
//! date synced and the range still to fetch. A run works through that range chunk by
//! chunk (30 days daily, 1 day hourly; every page of 1,000 rows), stores each chunk's
//! dates whole (see [`crate::metrics::report`]) and records progress after each, so a run that
//! is cut off, rate limited or out of budget resumes where it stopped. A later run
//! fetches again from `lookback` days before the last synced date, because TikTok keeps
//! revising recent days (attribution, ≈ 11 h reporting lag).
//!
//! Dates are the advertiser's local dates: "today" is computed in its time zone, and
//! TikTok's `start_date`/`end_date` and `stat_time_day` are in that zone too.

use crate::ApiError;
use crate::metrics::report::{self, BASE, Granularity, Level};
use crate::metrics::store;
use crate::platform::env::Env;
use crate::platform::kv::{get_json, set_json};
use crate::tenancy::advertiser_access::AdvertiserAccess;
use crate::tenancy::connections;
use crate::tenancy::org_id::OrgId;
use crate::tiktok::client::Call;
use crate::tiktok::codes::{CodeClass, classify};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// Days a first sync fetches (`metrics_backfill_days`, default 30).
pub const BACKFILL_VARIABLE: &str = "metrics_backfill_days";
/// Days before the last synced date fetched again (`metrics_lookback_days`, default 3).
pub const LOOKBACK_VARIABLE: &str = "metrics_lookback_days";
/// Report requests per second this deployment allows itself per app (`metrics_qps`, default 5).
pub const QPS_VARIABLE: &str = "metrics_qps";
/// Levels the scheduled sync covers (`metrics_levels`, default all four).
pub const LEVELS_VARIABLE: &str = "metrics_levels";
/// Report requests one sync run of one level makes at most before it stops to resume later.
pub const MAX_REQUESTS_PER_RUN: u32 = 300;
/// Pages of one chunk at most (TikTok truncates reports at 20,000 ads anyway).
const MAX_PAGES: u64 = 1_000;
const PAGE_SIZE: u64 = 1_000;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Everything up to today is stored.
    Ok,
    /// Stopped at the request budget; the next run continues.
    Partial,
    /// TikTok kept refusing with rate-limit codes after our retries; the next run continues.
    RateLimited,
    /// TikTok refused the advertiser (40001 and kin): the connection lacks permission.
    PermissionDenied,
    /// The token is no longer valid: the advertiser must authorize again.
    ReauthorizationRequired,
    Error,
}

/// A range still to fetch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The first date not fetched yet.
    pub next: NaiveDate,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunInfo {
    pub at: i64,
    pub status: RunStatus,
    pub requests: u32,
    pub rows: u64,
    /// Rows TikTok sent that could not be read (missing ids or dates); skipped.
    #[serde(default)]
    pub skipped_rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What is known about one (advertiser, level, granularity).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncState {
    pub advertiser_id: String,
    pub level: Option<Level>,
    pub granularity: Option<Granularity>,
    pub timezone: Option<String>,
    /// Every date up to this one was fetched completely at least once.
    pub synced_through: Option<NaiveDate>,
    pub pending: Option<Pending>,
    pub last_run: Option<RunInfo>,
    /// Rows stored over all runs (re-fetched rows count again).
    #[serde(default)]
    pub rows_stored: u64,
}

fn state_key(org: &OrgId, advertiser: &str, level: Level, gran: Granularity) -> String {
    format!(
        "{}m/{advertiser}/{}/{}/state",
        org.key_prefix(),
        level.as_str(),
        gran.as_str()
    )
}

pub fn state(
    env: &Env,
    org: &OrgId,
    advertiser: &str,
    level: Level,
    gran: Granularity,
) -> Result<SyncState, ApiError> {
    Ok(
        get_json(env.kv, &state_key(org, advertiser, level, gran))?.unwrap_or(SyncState {
            advertiser_id: advertiser.to_string(),
            level: Some(level),
            granularity: Some(gran),
            ..SyncState::default()
        }),
    )
}

/// What a caller may choose for one sync.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub advertiser_id: String,
    /// Default: `metrics_levels` (all four).
    #[serde(default)]
    pub levels: Option<Vec<Level>>,
    #[serde(default)]
    pub granularity: Option<Granularity>,
    /// Fetch exactly this range (local dates), e.g. a backfill; default: incremental.
    #[serde(default)]
    pub from: Option<NaiveDate>,
    #[serde(default)]
    pub to: Option<NaiveDate>,
    /// Report requests this call may make per level (default and cap 300).
    #[serde(default)]
    pub max_requests: Option<u32>,
}

/// The levels the scheduled sync covers.
pub fn configured_levels(env: &Env) -> Result<Vec<Level>, ApiError> {
    match env.var(LEVELS_VARIABLE)? {
        None => Ok(Level::ALL.to_vec()),
        Some(v) => v
            .split(',')
            .map(|l| {
                Level::parse(l.trim()).map_err(|_| {
                    ApiError::Internal(format!(
                        "variable {LEVELS_VARIABLE}: {l:?} is not advertiser, campaign, adgroup or ad"
                    ))
                })
            })
            .collect(),
    }
}

/// The advertiser's IANA zone: from the connection, else asked of TikTok.
fn timezone(env: &Env, access: &AdvertiserAccess) -> Result<String, ApiError> {
    if let Some(tz) = &access.advertiser.timezone {
        return Ok(tz.clone());
    }
    let id = &access.advertiser.advertiser_id;
    let reply = access.call(
        env,
        Call::get("/advertiser/info/")
            .query("advertiser_ids", json!([id]).to_string())
            .query("fields", json!(["timezone"]).to_string()),
    )?;
    reply.data["list"][0]["timezone"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::Internal(format!("TikTok reported no time zone for advertiser {id}"))
        })
}

/// The outcome of syncing one level.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LevelReport {
    pub level: Level,
    pub granularity: Granularity,
    pub status: RunStatus,
    pub requests: u32,
    pub rows: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synced_through: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SyncReport {
    pub advertiser_id: String,
    pub timezone: String,
    pub levels: Vec<LevelReport>,
}

/// Syncs one advertiser of `org` now.
pub fn sync(env: &Env, org: &OrgId, req: &SyncRequest) -> Result<SyncReport, ApiError> {
    if let (Some(from), Some(to)) = (req.from, req.to)
        && to < from
    {
        return Err(ApiError::invalid("to", "must not be before from"));
    }
    if req.from.is_some() != req.to.is_some() {
        return Err(ApiError::invalid("from", "from and to go together"));
    }
    let budget = match req.max_requests {
        None => MAX_REQUESTS_PER_RUN,
        Some(n @ 1..=MAX_REQUESTS_PER_RUN) => n,
        Some(_) => {
            return Err(ApiError::invalid(
                "max_requests",
                format!("must be from 1 to {MAX_REQUESTS_PER_RUN}"),
            ));
        }
    };
    let access = AdvertiserAccess::load(env, org, &req.advertiser_id)?;
    let tz_name = timezone(env, &access)?;
    let tz = report::zone(&tz_name)?;
    let today = report::local_today(tz, env.now);
    if req.to.is_some_and(|to| to > today) {
        return Err(ApiError::invalid(
            "to",
            format!("must not be after the advertiser's today ({today}, {tz_name})"),
        ));
    }
    let gran = req.granularity.unwrap_or(Granularity::Day);
    let levels = match &req.levels {
        Some(l) if l.is_empty() => return Err(ApiError::invalid("levels", "must not be empty")),
        Some(l) => l.clone(),
        None => configured_levels(env)?,
    };
    let settings = Settings {
        backfill: env.int_var(BACKFILL_VARIABLE, 30, 1..=1095)?,
        lookback: env.int_var(LOOKBACK_VARIABLE, 3, 0..=364)?,
        pause: Duration::from_millis((1000 / env.int_var(QPS_VARIABLE, 5, 1..=1000)?) as u64),
        budget,
    };
    let mut reports = Vec::new();
    for level in levels {
        reports.push(sync_level(
            env, &access, level, gran, &tz_name, today, req, &settings,
        )?);
    }
    Ok(SyncReport {
        advertiser_id: req.advertiser_id.clone(),
        timezone: tz_name,
        levels: reports,
    })
}

struct Settings {
    backfill: i64,
    lookback: i64,
    pause: Duration,
    budget: u32,
}

#[allow(clippy::too_many_arguments)]
fn sync_level(
    env: &Env,
    access: &AdvertiserAccess,
    level: Level,
    gran: Granularity,
    tz_name: &str,
    today: NaiveDate,
    req: &SyncRequest,
    settings: &Settings,
) -> Result<LevelReport, ApiError> {
    let org = &access.org;
    let advertiser = &access.advertiser.advertiser_id;
    let key = state_key(org, advertiser, level, gran);
    let mut st = state(env, org, advertiser, level, gran)?;
    st.timezone = Some(tz_name.to_string());
    let days = |n: i64| chrono::Days::new(n.max(0) as u64);
    // What to fetch: an explicit range; else an unfinished range; else incremental.
    let pending = match (req.from, req.to, st.pending.clone()) {
        (Some(from), Some(to), _) => Pending {
            from,
            to,
            next: from,
        },
        (_, _, Some(p)) => {
            // Continue, and reach today too (a backfill that resumes days later).
            Pending {
                to: p.to.max(today),
                ..p
            }
        }
        _ => {
            let from = match st.synced_through {
                None => today - days(settings.backfill - 1),
                Some(done) => done.min(today) - days(settings.lookback),
            };
            Pending {
                from,
                to: today,
                next: from,
            }
        }
    };
    st.pending = Some(pending.clone());
    set_json(env.kv, &key, &st)?;

    let mut run = RunInfo {
        at: env.now,
        status: RunStatus::Ok,
        requests: 0,
        rows: 0,
        skipped_rows: 0,
        error: None,
    };
    let mut next = pending.next;
    let mut first_skip: Option<String> = None;
    while next <= pending.to {
        let end = (next + days(gran.max_days() - 1)).min(pending.to);
        match fetch_chunk(
            env,
            access,
            level,
            gran,
            next,
            end,
            settings,
            &mut run,
            &mut first_skip,
        ) {
            Ok(rows) => {
                let stored = store::store(
                    env.kv,
                    org,
                    advertiser,
                    level,
                    gran,
                    store::buckets(rows, tz_name, env.now),
                )?;
                run.rows += stored as u64;
                st.rows_stored += stored as u64;
                next = end + days(1);
                st.pending = Some(Pending {
                    next,
                    ..pending.clone()
                });
                set_json(env.kv, &key, &st)?;
            }
            Err(stop) => {
                run.status = stop.status;
                run.error = stop.error;
                break;
            }
        }
    }
    if next > pending.to {
        st.pending = None;
        st.synced_through = Some(st.synced_through.map_or(pending.to, |d| d.max(pending.to)));
    }
    if run.error.is_none() {
        run.error = first_skip.map(|e| format!("skipped unreadable rows, e.g.: {e}"));
    }
    st.last_run = Some(run.clone());
    set_json(env.kv, &key, &st)?;
    Ok(LevelReport {
        level,
        granularity: gran,
        status: run.status,
        requests: run.requests,
        rows: run.rows,
        synced_through: st.synced_through,
        resume_from: st.pending.as_ref().map(|p| p.next),
        error: run.error,
    })
}

struct Stop {
    status: RunStatus,
    error: Option<String>,
}

/// Every page of one date window.
#[allow(clippy::too_many_arguments)]
fn fetch_chunk(
    env: &Env,
    access: &AdvertiserAccess,
    level: Level,
    gran: Granularity,
    from: NaiveDate,
    to: NaiveDate,
    settings: &Settings,
    run: &mut RunInfo,
    first_skip: &mut Option<String>,
) -> Result<Vec<report::Row>, Stop> {
    let mut rows = Vec::new();
    let mut page = 1u64;
    loop {
        if run.requests >= settings.budget {
            return Err(Stop {
                status: RunStatus::Partial,
                error: Some(format!(
                    "stopped after {} report requests; the next run resumes at {from}",
                    run.requests
                )),
            });
        }
        if run.requests > 0 {
            env.transport.sleep(settings.pause);
        }
        run.requests += 1;
        let mut call = Call::get("/report/integrated/get/")
            .query("advertiser_id", access.advertiser.advertiser_id.clone())
            .query("report_type", "BASIC")
            .query("data_level", level.data_level())
            .query(
                "dimensions",
                json!([level.id_dimension(), gran.dimension()]).to_string(),
            )
            .query("metrics", json!(BASE).to_string())
            .query("start_date", from.to_string())
            .query("end_date", to.to_string())
            .query("page", page.to_string())
            .query("page_size", PAGE_SIZE.to_string());
        if let Some(field) = level.status_filter() {
            call = call.query(
                "filtering",
                json!([{"field_name": field, "filter_type": "IN", "filter_value": "[\"STATUS_ALL\"]"}])
                    .to_string(),
            );
        }
        let reply = access
            .call(env, call)
            .map_err(|e| stop_for(env, access, e))?;
        let list = reply.data["list"].as_array().cloned().unwrap_or_default();
        for item in &list {
            match report::parse_row(level, gran, item) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    run.skipped_rows += 1;
                    first_skip.get_or_insert(e);
                }
            }
        }
        let total_pages = reply.data["page_info"]["total_page"].as_u64().unwrap_or(1);
        if list.is_empty() || page >= total_pages || page >= MAX_PAGES {
            return Ok(rows);
        }
        page += 1;
    }
}

/// Why a run stops on a TikTok error; permission refusals are noted on the connection.
fn stop_for(env: &Env, access: &AdvertiserAccess, e: ApiError) -> Stop {
    let status = match &e {
        ApiError::Upstream(u) => match classify(u.code) {
            CodeClass::RateLimited => RunStatus::RateLimited,
            CodeClass::Permission => RunStatus::PermissionDenied,
            CodeClass::Reauthorize => RunStatus::ReauthorizationRequired,
            _ => RunStatus::Error,
        },
        _ => RunStatus::Error,
    };
    if status == RunStatus::PermissionDenied {
        let message = e.to_string();
        let _ = connections::update(env, &access.org, &access.connection_id, |c| {
            c.last_error = Some(format!("reports: {message}"));
        });
    }
    Stop {
        status,
        error: Some(e.to_string()),
    }
}

/// Syncs every active advertiser connection of every organization (the scheduled task).
pub fn sync_all(env: &Env) -> Result<Value, ApiError> {
    let mut results = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for org in crate::tenancy::organizations::org_ids(env)? {
        for c in connections::list(env, &org)? {
            if c.status != connections::Status::Active
                || c.kind != crate::tenancy::connections::Kind::Advertiser
            {
                continue;
            }
            for a in &c.advertisers {
                if !seen.insert((org.as_str().to_string(), a.advertiser_id.clone())) {
                    continue;
                }
                let req = SyncRequest {
                    advertiser_id: a.advertiser_id.clone(),
                    ..SyncRequest::default()
                };
                let outcome = match sync(env, &org, &req) {
                    Ok(r) => json!({"org": org.as_str(), "report": r}),
                    // Another connection acts for this advertiser now, or it needs
                    // re-authorization: reported, and the others still run.
                    Err(e) => {
                        json!({"org": org.as_str(), "advertiser_id": a.advertiser_id, "error": e.to_string()})
                    }
                };
                results.push(outcome);
            }
        }
    }
    Ok(json!({"synced": results}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::query;
    use crate::platform::outbound::OutgoingRequest;
    use crate::tenancy::connections::testing::advertiser_connection;
    use crate::testing::TestEnv;
    use crate::tiktok::client::fake::{FakeTransport, err, ok};

    /// 2024-03-10 07:30 UTC: the 9th in Los Angeles, the 10th in Tokyo.
    const NOW: i64 = 1_710_055_800;

    fn params(r: &OutgoingRequest) -> std::collections::HashMap<String, String> {
        url::Url::parse(&r.url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    /// A TikTok whose reports have `entities` rows per date (ids 1..), impressions =
    /// 100 + day of month + `bump`, paged like TikTok.
    fn reports(entities: usize, bump: f64) -> impl Fn(&OutgoingRequest) -> Value {
        move |r| {
            let p = params(r);
            let from: NaiveDate = p["start_date"].parse().unwrap();
            let to: NaiveDate = p["end_date"].parse().unwrap();
            let dims: Vec<String> = serde_json::from_str(&p["dimensions"]).unwrap();
            let (page, size): (usize, usize) =
                (p["page"].parse().unwrap(), p["page_size"].parse().unwrap());
            let hours: Vec<u32> = if dims[1] == "stat_time_hour" {
                (0..24).collect()
            } else {
                vec![0]
            };
            let mut rows = Vec::new();
            for d in from.iter_days().take_while(|d| *d <= to) {
                for h in &hours {
                    for e in 1..=entities {
                        rows.push(json!({"dimensions": {dims[0].clone(): e.to_string(), dims[1].clone(): format!("{d} {h:02}:00:00")},
                            "metrics": {"impressions": format!("{}", 100.0 + f64::from(chrono::Datelike::day(&d)) + bump), "spend": "1.50", "clicks": 3, "reach": "-"}}));
                    }
                }
            }
            let total_page = rows.len().div_ceil(size).max(1);
            let list: Vec<Value> = rows
                .into_iter()
                .skip((page - 1) * size)
                .take(size)
                .collect();
            ok(
                json!({"list": list, "page_info": {"page": page, "page_size": size, "total_page": total_page}}),
            )
        }
    }

    fn setup(entities: usize) -> TestEnv {
        let mut t = TestEnv::new();
        t.tiktok = FakeTransport::with(reports(entities, 0.0));
        t.now.set(NOW);
        t.config.0.insert(QPS_VARIABLE.into(), "1000".into());
        advertiser_connection(
            &t,
            "acme",
            &[("111", "America/Los_Angeles"), ("222", "Asia/Tokyo")],
        );
        t
    }

    fn org() -> OrgId {
        OrgId::parse("acme").unwrap()
    }

    fn req(advertiser: &str, level: Level) -> SyncRequest {
        SyncRequest {
            advertiser_id: advertiser.into(),
            levels: Some(vec![level]),
            ..SyncRequest::default()
        }
    }

    fn sent_ranges(t: &TestEnv) -> Vec<(String, String, String)> {
        t.tiktok
            .sent
            .borrow()
            .iter()
            .map(|r| {
                let p = params(r);
                (
                    p["start_date"].clone(),
                    p["end_date"].clone(),
                    p["page"].clone(),
                )
            })
            .collect()
    }

    fn total(t: &TestEnv, advertiser: &str, level: Level, from: &str, to: &str) -> Map {
        let q = query::Query {
            advertiser: advertiser.into(),
            level,
            granularity: Granularity::Day,
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            group_by: query::GroupBy::Total,
            entities: None,
        };
        query::query(&t.kv, &org(), &q)
            .unwrap()
            .first()
            .map(|r| r.to_json())
            .unwrap_or_default()
    }
    type Map = serde_json::Map<String, Value>;

    #[test]
    fn a_95_day_range_is_four_requests_and_syncing_it_again_adds_nothing() {
        let t = setup(1);
        let r = SyncRequest {
            from: Some("2023-12-01".parse().unwrap()),
            to: Some("2024-03-04".parse().unwrap()),
            ..req("111", Level::Advertiser)
        };
        let report = sync(&t.env(), &org(), &r).unwrap();
        assert_eq!(report.levels[0].status, RunStatus::Ok);
        let ranges: Vec<_> = sent_ranges(&t)
            .into_iter()
            .map(|(a, b, _)| (a, b))
            .collect();
        assert_eq!(
            ranges,
            [
                ("2023-12-01".into(), "2023-12-30".into()),
                ("2023-12-31".into(), "2024-01-29".into()),
                ("2024-01-30".into(), "2024-02-28".into()),
                ("2024-02-29".into(), "2024-03-04".into()),
            ]
        );
        let sent = t.tiktok.sent.borrow()[0].clone();
        let p = params(&sent);
        assert_eq!(p["data_level"], "AUCTION_ADVERTISER");
        assert!(
            !p.contains_key("filtering"),
            "no status filter at advertiser level"
        );
        let first = total(&t, "111", Level::Advertiser, "2023-12-01", "2024-03-04");
        sync(&t.env(), &org(), &r).unwrap();
        assert_eq!(
            total(&t, "111", Level::Advertiser, "2023-12-01", "2024-03-04"),
            first,
            "same rows, no duplicates"
        );
        assert_eq!(first["spend"], json!(1.5 * 95.0));
        assert_eq!(first["reach"], Value::Null, "\"-\" is no value, not zero");
    }

    #[test]
    fn hourly_reports_are_fetched_a_day_at_a_time_and_kept_by_hour() {
        let t = setup(2);
        let r = SyncRequest {
            granularity: Some(Granularity::Hour),
            from: Some("2024-01-01".parse().unwrap()),
            to: Some("2024-01-03".parse().unwrap()),
            ..req("111", Level::Campaign)
        };
        let report = sync(&t.env(), &org(), &r).unwrap();
        assert_eq!(
            (report.levels[0].requests, report.levels[0].rows),
            (3, 3 * 24 * 2)
        );
        assert!(
            sent_ranges(&t).iter().all(|(a, b, _)| a == b),
            "one day per request"
        );
        let q = query::Query {
            advertiser: "111".into(),
            level: Level::Campaign,
            granularity: Granularity::Hour,
            from: "2024-01-02".parse().unwrap(),
            to: "2024-01-02".parse().unwrap(),
            group_by: query::GroupBy::Hour,
            entities: None,
        };
        let rows = query::query(&t.kv, &org(), &q).unwrap();
        assert_eq!(rows.len(), 24);
        assert_eq!(rows[5].hour, Some(5));
        assert_eq!(
            rows[5].to_json()["impressions"],
            json!(2.0 * 102.0),
            "two campaigns in hour 5"
        );
    }

    #[test]
    fn every_page_is_fetched_and_deleted_entities_are_asked_for() {
        let t = setup(100);
        let r = SyncRequest {
            from: Some("2024-01-01".parse().unwrap()),
            to: Some("2024-01-25".parse().unwrap()),
            ..req("111", Level::Ad)
        };
        let report = sync(&t.env(), &org(), &r).unwrap();
        assert_eq!(report.levels[0].rows, 2_500);
        let pages: Vec<_> = sent_ranges(&t).into_iter().map(|(_, _, p)| p).collect();
        assert_eq!(pages, ["1", "2", "3"]);
        let p = params(&t.tiktok.sent.borrow()[0]);
        assert!(p["filtering"].contains("ad_status") && p["filtering"].contains("STATUS_ALL"));
        assert_eq!(p["page_size"], "1000");
        let by_ad = query::query(
            &t.kv,
            &org(),
            &query::Query {
                advertiser: "111".into(),
                level: Level::Ad,
                granularity: Granularity::Day,
                from: "2024-01-01".parse().unwrap(),
                to: "2024-01-25".parse().unwrap(),
                group_by: query::GroupBy::Entity,
                entities: None,
            },
        )
        .unwrap();
        assert_eq!(by_ad.len(), 100);
    }

    #[test]
    fn later_runs_fetch_again_from_the_lookback_and_revised_values_win() {
        let mut t = setup(1);
        t.config.0.insert(BACKFILL_VARIABLE.into(), "10".into());
        let first = sync(&t.env(), &org(), &req("111", Level::Campaign)).unwrap();
        // Los Angeles' today is the 9th: ten days up to it.
        assert_eq!(
            sent_ranges(&t),
            [("2024-02-29".into(), "2024-03-09".into(), "1".into())]
        );
        assert_eq!(
            first.levels[0].synced_through,
            Some("2024-03-09".parse().unwrap())
        );
        t.tiktok = FakeTransport::with(reports(1, 1000.0));
        t.now.set(NOW + 2 * 86_400);
        sync(&t.env(), &org(), &req("111", Level::Campaign)).unwrap();
        // Three days before the 9th, up to LA's today: 07:30 UTC on the 12th is 00:30 there,
        // since daylight saving time began on the 10th (UTC-7 now, not UTC-8).
        assert_eq!(
            sent_ranges(&t),
            [("2024-03-06".into(), "2024-03-12".into(), "1".into())],
            "three days back"
        );
        let revised = total(&t, "111", Level::Campaign, "2024-03-09", "2024-03-09");
        assert_eq!(revised["impressions"], json!(1109.0));
        let kept = total(&t, "111", Level::Campaign, "2024-03-05", "2024-03-05");
        assert_eq!(
            kept["impressions"],
            json!(105.0),
            "outside the lookback: untouched"
        );
    }

    #[test]
    fn today_is_the_advertisers_today() {
        let t = setup(1);
        for (advertiser, today) in [("111", "2024-03-09"), ("222", "2024-03-10")] {
            t.tiktok.sent.borrow_mut().clear();
            let report = sync(&t.env(), &org(), &req(advertiser, Level::Advertiser)).unwrap();
            assert_eq!(sent_ranges(&t).last().unwrap().1, today, "{advertiser}");
            assert_eq!(
                report.timezone,
                if advertiser == "111" {
                    "America/Los_Angeles"
                } else {
                    "Asia/Tokyo"
                }
            );
        }
        let r = SyncRequest {
            from: Some("2024-03-10".parse().unwrap()),
            to: Some("2024-03-10".parse().unwrap()),
            ..req("111", Level::Ad)
        };
        let e = sync(&t.env(), &org(), &r).unwrap_err();
        assert!(e.to_string().contains("2024-03-09"), "{e}");
    }

    #[test]
    fn an_interrupted_backfill_resumes_where_it_stopped() {
        let t = setup(1);
        let r = SyncRequest {
            from: Some("2023-12-01".parse().unwrap()),
            to: Some("2024-03-04".parse().unwrap()),
            ..req("111", Level::Ad)
        };
        // The first window answers; the second fails (500 on every retry).
        let good = reports(1, 0.0);
        let first_call = std::cell::Cell::new(true);
        let t2 = TestEnv {
            tiktok: FakeTransport::with(move |req| {
                if first_call.replace(false) {
                    good(req)
                } else {
                    err(50000, "System error")
                }
            }),
            ..t
        };
        let report = sync(&t2.env(), &org(), &r).unwrap();
        let l = &report.levels[0];
        assert_eq!(
            (l.status, l.resume_from),
            (RunStatus::Error, Some("2023-12-31".parse().unwrap()))
        );
        assert!(l.error.as_deref().unwrap().contains("50000"));
        // The next incremental run picks the backfill up at its second window.
        let t3 = TestEnv {
            tiktok: FakeTransport::with(reports(1, 0.0)),
            ..t2
        };
        let report = sync(&t3.env(), &org(), &req("111", Level::Ad)).unwrap();
        assert_eq!(report.levels[0].status, RunStatus::Ok);
        assert_eq!(sent_ranges(&t3)[0].0, "2023-12-31");
        assert_eq!(
            sent_ranges(&t3).last().unwrap().1,
            "2024-03-09",
            "and goes on to today"
        );
        let st = state(&t3.env(), &org(), "111", Level::Ad, Granularity::Day).unwrap();
        assert_eq!(
            (st.pending, st.synced_through),
            (None, Some("2024-03-09".parse().unwrap()))
        );
    }

    #[test]
    fn refusals_stop_with_a_status_that_says_why() {
        for (code, status) in [
            (40001, RunStatus::PermissionDenied),
            (40105, RunStatus::ReauthorizationRequired),
            (40100, RunStatus::RateLimited),
        ] {
            let mut t = setup(1);
            t.tiktok = FakeTransport::with(move |_| err(code, "refused"));
            let report = sync(&t.env(), &org(), &req("111", Level::Ad)).unwrap();
            assert_eq!(report.levels[0].status, status, "{code}");
            let st = state(&t.env(), &org(), "111", Level::Ad, Granularity::Day).unwrap();
            assert_eq!(st.last_run.unwrap().status, status);
            assert!(st.pending.is_some(), "{code}: the range stays to do");
            let c = &crate::tenancy::connections::list(&t.env(), &org()).unwrap()[0];
            match code {
                40001 => assert!(c.last_error.as_deref().unwrap().contains("reports")),
                40105 => assert_eq!(
                    c.status,
                    crate::tenancy::connections::Status::ReauthorizationRequired
                ),
                _ => assert_eq!(c.status, crate::tenancy::connections::Status::Active),
            }
        }
    }

    #[test]
    fn rate_limits_back_off_and_requests_are_paced() {
        let mut t = setup(1);
        t.config.0.insert(QPS_VARIABLE.into(), "4".into());
        t.script(vec![
            json!({"code": 40100, "message": "Too many requests", "request_id": "r", "data": {}}),
        ]);
        let r = SyncRequest {
            from: Some("2024-01-01".parse().unwrap()),
            to: Some("2024-02-29".parse().unwrap()),
            ..req("111", Level::Advertiser)
        };
        let report = sync(&t.env(), &org(), &r).unwrap();
        assert_eq!(report.levels[0].status, RunStatus::Ok);
        let slept = t.tiktok.slept.borrow().clone();
        assert!(
            slept.len() >= 2,
            "a backoff after 40100 and a pause between windows: {slept:?}"
        );
        assert!(
            slept.contains(&Duration::from_millis(250)),
            "4 QPS: 250 ms apart: {slept:?}"
        );
    }

    #[test]
    fn bad_requests_are_named() {
        let t = setup(1);
        let cases = [
            (
                SyncRequest {
                    from: Some("2024-01-02".parse().unwrap()),
                    to: Some("2024-01-01".parse().unwrap()),
                    ..req("111", Level::Ad)
                },
                "to",
            ),
            (
                SyncRequest {
                    from: Some("2024-01-02".parse().unwrap()),
                    ..req("111", Level::Ad)
                },
                "from",
            ),
            (
                SyncRequest {
                    max_requests: Some(0),
                    ..req("111", Level::Ad)
                },
                "max_requests",
            ),
            (
                SyncRequest {
                    levels: Some(vec![]),
                    ..req("111", Level::Ad)
                },
                "levels",
            ),
            (req("abc", Level::Ad), "advertiser_id"),
        ];
        for (r, field) in cases {
            match sync(&t.env(), &org(), &r) {
                Err(ApiError::InvalidInput(f)) => assert_eq!(f.field, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(matches!(
            sync(&t.env(), &org(), &req("333", Level::Ad)),
            Err(ApiError::NotFound(_))
        ));
        assert!(t.tiktok.sent.borrow().is_empty());
    }
}
