//! Queries over stored metrics: sums per grouping, and every ratio computed from the sums
//! (never by averaging TikTok's per-row ratios; a zero denominator gives null), as JSON
//! rows or CSV.
//!
//! Reach is unique users per row; summed over dates it is an upper bound (users reached
//! on two days count twice), and so is the frequency derived from it.

use crate::ApiError;
use crate::metrics::report::{BASE, DERIVED, Granularity, Level};
use crate::metrics::store::{Bucket, bucket_key};
use crate::tenancy::org_id::OrgId;
use chrono::NaiveDate;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

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
pub(super) fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Reads the stored buckets of the range and sums them by `group_by`.
pub fn query(
    kv: &dyn crate::platform::kv::KeyValue,
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
