//! Unified metrics from TikTok's BASIC reports (tiktok-api.md §4): parsing, storage and
//! the derived figures.
//!
//! What we store are the summable base metrics only, per (advertiser, level, entity,
//! local date or hour). Every ratio (CTR, CPC, CPM, conversion rate, cost per
//! conversion, ROAS, frequency) is computed from sums at query time, one way for every
//! grouping, never by averaging TikTok's per-row ratios; a zero denominator gives null.
//!
//! Storage: one value per (advertiser, level, granularity, local date),
//! `org/{org}/m/{advertiser}/{level}/{day|hour}/{YYYY-MM-DD}`, holding every entity's row
//! of that date. A sync replaces a whole date at once, so re-running it never duplicates
//! a row and a revised figure overwrites the old one; a query of 90 days reads 90 values.
//!
//! Reach is unique users per row; summed over dates it is an upper bound (users reached
//! on two days count twice), and so is the frequency derived from it.

use crate::ApiError;
use crate::kv::get_json;
use crate::org::OrgId;
use chrono::{NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The summable metrics requested from TikTok and stored, in this order.
pub const BASE: [&str; 10] = [
    "impressions",
    "clicks",
    "spend",
    "reach",
    "conversion",
    "total_purchase_value",
    "video_play_actions",
    "video_watched_2s",
    "video_watched_6s",
    "likes",
];

/// Ratios computed from the sums: (name, numerator, denominator, scale).
pub const DERIVED: [(&str, &str, &str, f64); 8] = [
    ("ctr", "clicks", "impressions", 100.0),
    ("cpc", "spend", "clicks", 1.0),
    ("cpm", "spend", "impressions", 1000.0),
    ("conversion_rate", "conversion", "clicks", 100.0),
    ("cost_per_conversion", "spend", "conversion", 1.0),
    ("roas", "total_purchase_value", "spend", 1.0),
    ("frequency", "impressions", "reach", 1.0),
    (
        "video_watched_2s_rate",
        "video_watched_2s",
        "video_play_actions",
        100.0,
    ),
];

/// The metrics worth showing first for a campaign objective (TikTok's `objective_type`).
pub fn recommended(objective: &str) -> Option<&'static [&'static str]> {
    Some(match objective {
        "REACH" => &["impressions", "reach", "frequency", "cpm", "spend"],
        "TRAFFIC" => &["clicks", "ctr", "cpc", "impressions", "spend"],
        "VIDEO_VIEWS" => &[
            "video_play_actions",
            "video_watched_2s",
            "video_watched_6s",
            "video_watched_2s_rate",
            "spend",
        ],
        "ENGAGEMENT" => &["likes", "video_play_actions", "impressions", "spend"],
        "LEAD_GENERATION" | "APP_PROMOTION" => &[
            "conversion",
            "conversion_rate",
            "cost_per_conversion",
            "clicks",
            "spend",
        ],
        "WEB_CONVERSIONS" | "CONVERSIONS" | "PRODUCT_SALES" => &[
            "conversion",
            "cost_per_conversion",
            "total_purchase_value",
            "roas",
            "spend",
        ],
        _ => return None,
    })
}

/// A report level (TikTok's `data_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Advertiser,
    Campaign,
    Adgroup,
    Ad,
}

impl Level {
    pub const ALL: [Level; 4] = [
        Level::Advertiser,
        Level::Campaign,
        Level::Adgroup,
        Level::Ad,
    ];

    pub fn parse(s: &str) -> Result<Level, ApiError> {
        Ok(match s {
            "advertiser" => Level::Advertiser,
            "campaign" => Level::Campaign,
            "adgroup" => Level::Adgroup,
            "ad" => Level::Ad,
            _ => {
                return Err(ApiError::invalid(
                    "level",
                    "must be advertiser, campaign, adgroup or ad",
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Advertiser => "advertiser",
            Level::Campaign => "campaign",
            Level::Adgroup => "adgroup",
            Level::Ad => "ad",
        }
    }

    pub fn data_level(self) -> &'static str {
        match self {
            Level::Advertiser => "AUCTION_ADVERTISER",
            Level::Campaign => "AUCTION_CAMPAIGN",
            Level::Adgroup => "AUCTION_ADGROUP",
            Level::Ad => "AUCTION_AD",
        }
    }

    /// The ID dimension of a row at this level.
    pub fn id_dimension(self) -> &'static str {
        match self {
            Level::Advertiser => "advertiser_id",
            Level::Campaign => "campaign_id",
            Level::Adgroup => "adgroup_id",
            Level::Ad => "ad_id",
        }
    }

    /// The status filter that, set to `STATUS_ALL`, keeps deleted entities in.
    pub fn status_filter(self) -> Option<&'static str> {
        match self {
            Level::Advertiser => None,
            Level::Campaign => Some("campaign_status"),
            Level::Adgroup => Some("adgroup_status"),
            Level::Ad => Some("ad_status"),
        }
    }
}

/// Daily rows (`stat_time_day`) or hourly ones (`stat_time_hour`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Day,
    Hour,
}

impl Granularity {
    pub fn parse(s: &str) -> Result<Granularity, ApiError> {
        match s {
            "day" => Ok(Granularity::Day),
            "hour" => Ok(Granularity::Hour),
            _ => Err(ApiError::invalid("granularity", "must be day or hour")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Hour => "hour",
        }
    }

    pub fn dimension(self) -> &'static str {
        match self {
            Granularity::Day => "stat_time_day",
            Granularity::Hour => "stat_time_hour",
        }
    }

    /// The longest date range TikTok takes in one request with this time dimension.
    pub fn max_days(self) -> i64 {
        match self {
            Granularity::Day => 30,
            Granularity::Hour => 1,
        }
    }
}

/// A metric value as TikTok sends it: a string (`"14.68"`), a number, null or `"-"`.
pub fn parse_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() || s == "-" {
                None
            } else {
                s.parse::<f64>().ok().filter(|f| f.is_finite())
            }
        }
        _ => None,
    }
}

/// One parsed report row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub entity_id: String,
    pub date: NaiveDate,
    /// 0–23 for hourly rows.
    pub hour: Option<u8>,
    /// Values of [`BASE`], in order.
    pub values: Vec<Option<f64>>,
}

/// Parses one `data.list[]` item of a BASIC report.
pub fn parse_row(level: Level, gran: Granularity, item: &Value) -> Result<Row, String> {
    let dims = item
        .get("dimensions")
        .and_then(Value::as_object)
        .ok_or("row without dimensions")?;
    let entity_id = match dims.get(level.id_dimension()) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(format!("row without {}", level.id_dimension())),
    };
    let stamp = dims
        .get(gran.dimension())
        .and_then(Value::as_str)
        .ok_or_else(|| format!("row without {}", gran.dimension()))?;
    let (date, hour) = parse_stamp(stamp).ok_or_else(|| format!("bad time {stamp:?}"))?;
    let metrics = item.get("metrics").and_then(Value::as_object);
    let values = BASE
        .iter()
        .map(|m| metrics.and_then(|ms| ms.get(*m)).and_then(parse_value))
        .collect();
    Ok(Row {
        entity_id,
        date,
        hour: (gran == Granularity::Hour).then_some(hour),
        values,
    })
}

/// `"2025-12-03 00:00:00"` (or just the date) → date and hour.
fn parse_stamp(s: &str) -> Option<(NaiveDate, u8)> {
    let (date, time) = s.trim().split_once(' ').unwrap_or((s.trim(), "00:00:00"));
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let hour: u8 = time.split(':').next()?.parse().ok()?;
    (hour < 24).then_some((date, hour))
}

/// The advertiser's zone, from the IANA name TikTok reports.
pub fn zone(name: &str) -> Result<chrono_tz::Tz, ApiError> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        ApiError::Internal(format!(
            "the advertiser's time zone {name:?} is not a known IANA zone"
        ))
    })
}

/// Today's date in the advertiser's zone.
pub fn local_today(tz: chrono_tz::Tz, now: i64) -> NaiveDate {
    tz.timestamp_opt(now, 0)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or_else(|| {
            chrono::DateTime::from_timestamp(now, 0)
                .unwrap_or_default()
                .date_naive()
        })
}

/// All rows of one (advertiser, level, granularity, local date).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Bucket {
    pub columns: Vec<String>,
    /// Entity id (plus `|HH` for hourly rows) → values in `columns` order.
    pub rows: BTreeMap<String, Vec<Option<f64>>>,
    pub timezone: String,
    pub synced_at: i64,
}

pub fn bucket_key(
    org: &OrgId,
    advertiser: &str,
    level: Level,
    gran: Granularity,
    date: NaiveDate,
) -> String {
    format!(
        "{}m/{advertiser}/{}/{}/{date}",
        org.key_prefix(),
        level.as_str(),
        gran.as_str()
    )
}

/// Groups rows into date buckets (a later row for the same key replaces an earlier one).
pub fn buckets(rows: Vec<Row>, timezone: &str, now: i64) -> BTreeMap<NaiveDate, Bucket> {
    let mut out: BTreeMap<NaiveDate, Bucket> = BTreeMap::new();
    for row in rows {
        let b = out.entry(row.date).or_insert_with(|| Bucket {
            columns: BASE.iter().map(|s| s.to_string()).collect(),
            rows: BTreeMap::new(),
            timezone: timezone.to_string(),
            synced_at: now,
        });
        let key = match row.hour {
            Some(h) => format!("{}|{h:02}", row.entity_id),
            None => row.entity_id,
        };
        b.rows.insert(key, row.values);
    }
    out
}

/// How query results are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Hour,
    Entity,
    EntityDay,
    Total,
}

impl GroupBy {
    pub fn parse(s: &str, level: Level) -> Result<GroupBy, ApiError> {
        Ok(match s {
            "day" | "date" => GroupBy::Day,
            "hour" => GroupBy::Hour,
            "total" => GroupBy::Total,
            "entity" => GroupBy::Entity,
            "entity,day" | "day,entity" => GroupBy::EntityDay,
            other if other == level.as_str() => GroupBy::Entity,
            other
                if other == format!("{},day", level.as_str())
                    || other == format!("day,{}", level.as_str()) =>
            {
                GroupBy::EntityDay
            }
            _ => {
                return Err(ApiError::invalid(
                    "group_by",
                    format!(
                        "must be day, hour, total, {0} (or entity), or {0},day",
                        level.as_str()
                    ),
                ));
            }
        })
    }
}

/// A metrics query.
#[derive(Debug, Clone)]
pub struct Query {
    pub advertiser: String,
    pub level: Level,
    pub granularity: Granularity,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub group_by: GroupBy,
    /// Restrict to these entities.
    pub entities: Option<Vec<String>>,
}

/// The longest range one query reads.
pub const MAX_QUERY_DAYS: i64 = 366;

/// One output row: its group keys, sums and derived figures.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRow {
    pub date: Option<NaiveDate>,
    pub hour: Option<u8>,
    pub entity_id: Option<String>,
    pub sums: Vec<Option<f64>>,
}

impl OutRow {
    fn get(&self, name: &str) -> Option<f64> {
        let i = BASE.iter().position(|m| *m == name)?;
        self.sums[i]
    }

    /// The row as JSON: keys, base sums, then derived metrics (null on a zero
    /// denominator or a missing part).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(d) = self.date {
            m.insert("date".into(), json!(d.to_string()));
        }
        if let Some(h) = self.hour {
            m.insert("hour".into(), json!(h));
        }
        if let Some(e) = &self.entity_id {
            m.insert("entity_id".into(), json!(e));
        }
        for (name, v) in BASE.iter().zip(&self.sums) {
            m.insert((*name).into(), json!(v.map(round)));
        }
        for (name, num, den, scale) in DERIVED {
            let v = match (self.get(num), self.get(den)) {
                (Some(n), Some(d)) if d != 0.0 => Some(round(n / d * scale)),
                _ => None,
            };
            m.insert(name.into(), json!(v));
        }
        m
    }
}

/// Money and ratios to 4 decimals; counts come out whole.
fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Reads the stored buckets of the range and sums them by `group_by`.
pub fn query(
    kv: &dyn crate::kv::KeyValue,
    org: &OrgId,
    q: &Query,
) -> Result<Vec<OutRow>, ApiError> {
    if q.to < q.from {
        return Err(ApiError::invalid("to", "must not be before from"));
    }
    let days = (q.to - q.from).num_days() + 1;
    if days > MAX_QUERY_DAYS {
        return Err(ApiError::invalid(
            "from",
            format!("the range is limited to {MAX_QUERY_DAYS} days"),
        ));
    }
    if q.group_by == GroupBy::Hour && q.granularity != Granularity::Hour {
        return Err(ApiError::invalid("group_by", "hour needs granularity=hour"));
    }
    let dates: Vec<NaiveDate> = q.from.iter_days().take(days as usize).collect();
    let keys: Vec<String> = dates
        .iter()
        .map(|d| bucket_key(org, &q.advertiser, q.level, q.granularity, *d))
        .collect();
    // A row of the answer: (day, hour, entity), each set only when grouped by it.
    type Group = (Option<NaiveDate>, Option<u8>, Option<String>);
    let mut groups: BTreeMap<Group, Vec<Option<f64>>> = BTreeMap::new();
    for chunk in dates.iter().zip(keys).collect::<Vec<_>>().chunks(100) {
        let keys: Vec<String> = chunk.iter().map(|(_, k)| k.clone()).collect();
        for ((date, _), value) in chunk.iter().zip(kv.get_many(&keys)?) {
            let Some(bytes) = value else { continue };
            let bucket: Bucket = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::Storage(format!("metrics for {date} are unreadable: {e}"))
            })?;
            let index: Vec<Option<usize>> = BASE
                .iter()
                .map(|m| bucket.columns.iter().position(|c| c == m))
                .collect();
            for (key, values) in &bucket.rows {
                let (entity, hour) = match key.split_once('|') {
                    Some((e, h)) => (e, h.parse::<u8>().ok()),
                    None => (key.as_str(), None),
                };
                if q.entities
                    .as_ref()
                    .is_some_and(|ids| !ids.iter().any(|i| i == entity))
                {
                    continue;
                }
                let group = match q.group_by {
                    GroupBy::Day => (Some(**date), None, None),
                    GroupBy::Hour => (Some(**date), hour, None),
                    GroupBy::Entity => (None, None, Some(entity.to_string())),
                    GroupBy::EntityDay => (Some(**date), None, Some(entity.to_string())),
                    GroupBy::Total => (None, None, None),
                };
                let sums = groups
                    .entry(group)
                    .or_insert_with(|| vec![None; BASE.len()]);
                for (sum, i) in sums.iter_mut().zip(&index) {
                    if let Some(v) = i.and_then(|i| values.get(i).copied().flatten()) {
                        *sum = Some(sum.unwrap_or(0.0) + v);
                    }
                }
            }
        }
    }
    Ok(groups
        .into_iter()
        .map(|((date, hour, entity_id), sums)| OutRow {
            date,
            hour,
            entity_id,
            sums,
        })
        .collect())
}

/// CSV of query rows: the group columns, then base and derived metrics.
pub fn to_csv(rows: &[OutRow]) -> String {
    let mut header: Vec<&str> = Vec::new();
    if rows.iter().any(|r| r.date.is_some()) {
        header.push("date");
    }
    if rows.iter().any(|r| r.hour.is_some()) {
        header.push("hour");
    }
    if rows.iter().any(|r| r.entity_id.is_some()) {
        header.push("entity_id");
    }
    header.extend(BASE);
    header.extend(DERIVED.iter().map(|d| d.0));
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        let m = r.to_json();
        let line: Vec<String> = header
            .iter()
            .map(|h| match m.get(*h) {
                Some(Value::String(s)) => csv_field(s),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            })
            .collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

fn csv_field(s: &str) -> String {
    // Quote what needs it; neutralize spreadsheet formulas in text cells.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Stores parsed rows: each date's bucket replaced whole.
pub fn store(
    kv: &dyn crate::kv::KeyValue,
    org: &OrgId,
    advertiser: &str,
    level: Level,
    gran: Granularity,
    buckets: BTreeMap<NaiveDate, Bucket>,
) -> Result<usize, ApiError> {
    let mut rows = 0;
    let mut entries = Vec::with_capacity(buckets.len());
    for (date, bucket) in buckets {
        rows += bucket.rows.len();
        entries.push((
            bucket_key(org, advertiser, level, gran, date),
            serde_json::to_vec(&bucket).expect("buckets serialize"),
        ));
    }
    for chunk in entries.chunks(50) {
        kv.set_many(chunk)?;
    }
    Ok(rows)
}

/// Reads one bucket (tests and tools).
pub fn bucket(
    kv: &dyn crate::kv::KeyValue,
    org: &OrgId,
    advertiser: &str,
    level: Level,
    gran: Granularity,
    date: NaiveDate,
) -> Result<Option<Bucket>, ApiError> {
    get_json(kv, &bucket_key(org, advertiser, level, gran, date))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;

    /// One of Airbyte's mocked report answers (testdata/airbyte-reports.json).
    fn vector(name: &str) -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/airbyte-reports.json");
        let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        all[name.trim_end_matches(".json")].clone()
    }

    #[test]
    fn values_arrive_as_strings_numbers_null_or_dash() {
        assert_eq!(parse_value(&json!("14.68")), Some(14.68));
        assert_eq!(parse_value(&json!(36)), Some(36.0));
        assert_eq!(parse_value(&json!(1.52)), Some(1.52));
        assert_eq!(parse_value(&json!(null)), None);
        assert_eq!(parse_value(&json!("-")), None);
        assert_eq!(parse_value(&json!(" 7 ")), Some(7.0));
        assert_eq!(parse_value(&json!("NaN")), None);
        assert_eq!(parse_value(&json!("abc")), None);
        assert_eq!(parse_value(&json!({"x": 1})), None);
    }

    #[test]
    fn airbyte_report_vectors_parse() {
        for (file, level) in [
            ("ads_reports_hourly.json", Level::Ad),
            ("campaigns_reports_hourly.json", Level::Campaign),
        ] {
            let v = vector(file);
            let list = v["data"]["list"].as_array().unwrap();
            assert!(!list.is_empty(), "{file}");
            for item in list {
                let row = parse_row(level, Granularity::Hour, item)
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                assert!(row.hour.is_some());
                let impressions = row.values[0];
                let raw = &item["metrics"]["impressions"];
                assert_eq!(impressions, parse_value(raw), "{file}");
            }
        }
        // Airbyte's advertiser fixture carries no advertiser_id dimension: such rows are
        // refused by name (and skipped and counted by the sync), never stored under "".
        let adv = vector("advertisers_reports_hourly.json");
        let e = parse_row(
            Level::Advertiser,
            Granularity::Hour,
            &adv["data"]["list"][0],
        )
        .unwrap_err();
        assert!(e.contains("advertiser_id"), "{e}");
        let first = &vector("ads_reports_hourly.json")["data"]["list"][0];
        let row = parse_row(Level::Ad, Granularity::Hour, first).unwrap();
        assert_eq!(row.entity_id, "11111111");
        assert_eq!(
            (row.date.to_string(), row.hour),
            ("2024-01-01".into(), Some(9))
        );
        assert_eq!(
            row.values[0],
            Some(5830.0),
            "impressions arrive as a string"
        );
        assert_eq!(
            row.values[6 + 2],
            parse_value(&first["metrics"]["video_watched_6s"]),
            "and as a number"
        );
    }

    #[test]
    fn rows_without_their_keys_are_refused_by_name() {
        let no_id = json!({"dimensions": {"stat_time_day": "2024-01-01 00:00:00"}, "metrics": {}});
        assert!(
            parse_row(Level::Ad, Granularity::Day, &no_id)
                .unwrap_err()
                .contains("ad_id")
        );
        let bad_time =
            json!({"dimensions": {"ad_id": "1", "stat_time_day": "yesterday"}, "metrics": {}});
        assert!(parse_row(Level::Ad, Granularity::Day, &bad_time).is_err());
        let numeric_id = json!({"dimensions": {"campaign_id": 1714125042508817u64, "stat_time_day": "2024-01-01 00:00:00"}});
        assert_eq!(
            parse_row(Level::Campaign, Granularity::Day, &numeric_id)
                .unwrap()
                .entity_id,
            "1714125042508817"
        );
    }

    #[test]
    fn local_dates_follow_the_advertisers_zone_across_midnight() {
        // 2024-03-10 07:30 UTC: still the 9th in Los Angeles (UTC-8), already the 10th in Tokyo.
        let now = chrono::NaiveDate::from_ymd_opt(2024, 3, 10)
            .unwrap()
            .and_hms_opt(7, 30, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        assert_eq!(
            local_today(zone("America/Los_Angeles").unwrap(), now).to_string(),
            "2024-03-09"
        );
        assert_eq!(
            local_today(zone("Asia/Tokyo").unwrap(), now).to_string(),
            "2024-03-10"
        );
        // 2024-03-10 15:30 UTC: the 10th in LA, the 11th in Tokyo.
        assert_eq!(
            local_today(zone("Asia/Tokyo").unwrap(), now + 8 * 3600).to_string(),
            "2024-03-11"
        );
        assert!(zone("Mars/Olympus").is_err());
    }

    fn row(entity: &str, date: &str, impressions: f64, clicks: f64, spend: f64, value: f64) -> Row {
        let mut values = vec![None; BASE.len()];
        values[0] = Some(impressions);
        values[1] = Some(clicks);
        values[2] = Some(spend);
        values[5] = Some(value);
        Row {
            entity_id: entity.into(),
            date: date.parse().unwrap(),
            hour: None,
            values,
        }
    }

    #[test]
    fn derived_metrics_come_from_sums_not_averaged_ratios() {
        let kv = MemoryKv::new();
        let org = OrgId::parse("acme").unwrap();
        // Ad a: CTR 10% on 100 impressions; ad b: CTR 1% on 10,000. The average of the
        // ratios would be 5.5%; the true CTR is 110 / 10,100.
        let rows = vec![
            row("a", "2024-01-01", 100.0, 10.0, 5.0, 0.0),
            row("b", "2024-01-01", 10_000.0, 100.0, 0.0, 0.0),
        ];
        store(
            &kv,
            &org,
            "adv",
            Level::Ad,
            Granularity::Day,
            buckets(rows, "UTC", 0),
        )
        .unwrap();
        let q = Query {
            advertiser: "adv".into(),
            level: Level::Ad,
            granularity: Granularity::Day,
            from: "2024-01-01".parse().unwrap(),
            to: "2024-01-01".parse().unwrap(),
            group_by: GroupBy::Total,
            entities: None,
        };
        let out = query(&kv, &org, &q).unwrap();
        let m = out[0].to_json();
        assert_eq!(m["ctr"], json!(round(110.0 / 10_100.0 * 100.0)));
        assert_eq!(m["cpc"], json!(round(5.0 / 110.0)));
        assert_eq!(m["roas"], json!(0.0), "no value over some spend is 0");
        assert_eq!(
            m["conversion_rate"],
            Value::Null,
            "conversions were never reported"
        );
        let by_ad = query(
            &kv,
            &org,
            &Query {
                group_by: GroupBy::Entity,
                ..q.clone()
            },
        )
        .unwrap();
        let b = by_ad
            .iter()
            .find(|r| r.entity_id.as_deref() == Some("b"))
            .unwrap()
            .to_json();
        assert_eq!(
            b["roas"],
            Value::Null,
            "zero spend: null, not NaN or infinity"
        );
        assert!(serde_json::to_string(&b).unwrap().contains("\"roas\":null"));
    }

    #[test]
    fn storing_a_date_again_replaces_it_instead_of_adding() {
        let kv = MemoryKv::new();
        let org = OrgId::parse("acme").unwrap();
        let day = "2024-01-01";
        for spend in [5.0, 7.5] {
            let rows = vec![row("a", day, 100.0, 10.0, spend, 0.0)];
            store(
                &kv,
                &org,
                "adv",
                Level::Ad,
                Granularity::Day,
                buckets(rows, "UTC", 0),
            )
            .unwrap();
        }
        let b = bucket(
            &kv,
            &org,
            "adv",
            Level::Ad,
            Granularity::Day,
            day.parse().unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(b.rows.len(), 1);
        assert_eq!(b.rows["a"][2], Some(7.5), "the revised value wins");
    }

    #[test]
    fn csv_has_one_header_and_escapes_text() {
        let r = OutRow {
            date: None,
            hour: None,
            entity_id: Some("=cmd,1".into()),
            sums: vec![Some(1.0); BASE.len()],
        };
        let csv = to_csv(&[r]);
        let mut lines = csv.lines();
        assert!(lines.next().unwrap().starts_with("entity_id,impressions,"));
        assert!(lines.next().unwrap().starts_with("\"'=cmd,1\",1.0,"));
    }

    #[test]
    fn recommended_metrics_exist_and_are_all_known() {
        for objective in [
            "REACH",
            "TRAFFIC",
            "VIDEO_VIEWS",
            "ENGAGEMENT",
            "LEAD_GENERATION",
            "APP_PROMOTION",
            "WEB_CONVERSIONS",
            "PRODUCT_SALES",
        ] {
            for m in recommended(objective).unwrap() {
                assert!(
                    BASE.contains(m) || DERIVED.iter().any(|d| d.0 == *m),
                    "{objective}: {m}"
                );
            }
        }
        assert!(recommended("NOPE").is_none());
    }
}
