//! Stored metrics: one value per (advertiser, level, granularity, local date),
//! `org/{org}/m/{advertiser}/{level}/{day|hour}/{YYYY-MM-DD}`, holding every entity's row
//! of that date. A sync replaces a whole date at once, so re-running it never duplicates
//! a row and a revised figure overwrites the old one; a query of 90 days reads 90 values.

use crate::ApiError;
use crate::metrics::report::{BASE, Granularity, Level, Row};
use crate::platform::kv::get_json;
use crate::tenancy::org_id::OrgId;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// Stores parsed rows: each date's bucket replaced whole.
pub fn store(
    kv: &dyn crate::platform::kv::KeyValue,
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
    kv: &dyn crate::platform::kv::KeyValue,
    org: &OrgId,
    advertiser: &str,
    level: Level,
    gran: Granularity,
    date: NaiveDate,
) -> Result<Option<Bucket>, ApiError> {
    get_json(kv, &bucket_key(org, advertiser, level, gran, date))
}
