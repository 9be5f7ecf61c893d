//! `GET /report/integrated/get/` (tiktok-api.md §4): deterministic synthetic BASIC reports.
//!
//! Every ad gets seeded metrics per day (or hour); ad groups, campaigns and the advertiser
//! are the sums of their ads, so levels agree with each other. Values are strings, as in
//! TikTok's examples, and dates are the advertiser's local dates.

use crate::envelope::Reply;
use crate::model::{Entity, Kind, Token};
use crate::request::{Params, paging};
use crate::state::State;
use crate::time::{format_date, parse_date};
use serde_json::{Map, Value, json};

pub const BASE_METRICS: &[&str] = &[
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

#[derive(Default, Clone, Copy)]
struct Totals([f64; 10]);

impl Totals {
    fn add(&mut self, other: &Totals) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
    fn get(&self, name: &str) -> Option<f64> {
        BASE_METRICS
            .iter()
            .position(|m| *m == name)
            .map(|i| self.0[i])
    }
}

/// splitmix64: the same inputs give the same numbers on every run.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn seeded(seed: u64, ad_id: &str, slot: i64) -> Totals {
    let mut h = mix(seed ^ slot as u64);
    for b in ad_id.bytes() {
        h = mix(h ^ u64::from(b));
    }
    let mut next = |n: u64| {
        h = mix(h);
        h % n
    };
    let impressions = 200.0 + next(5000) as f64;
    let clicks = (impressions * (5 + next(25)) as f64 / 1000.0).floor();
    let spend = (impressions / 1000.0 * (200 + next(1000)) as f64 / 100.0 * 100.0).round() / 100.0;
    let reach = (impressions * (60 + next(35)) as f64 / 100.0).floor();
    let conversion = (clicks * next(10) as f64 / 100.0).floor();
    let value = conversion * (10 + next(90)) as f64;
    let plays = (impressions * (30 + next(50)) as f64 / 100.0).floor();
    let w2 = (plays * (40 + next(40)) as f64 / 100.0).floor();
    let w6 = (w2 * (30 + next(50)) as f64 / 100.0).floor();
    let likes = (plays * next(5) as f64 / 100.0).floor();
    Totals([
        impressions,
        clicks,
        spend,
        reach,
        conversion,
        value,
        plays,
        w2,
        w6,
        likes,
    ])
}

fn ratio(a: f64, b: f64, scale: f64) -> String {
    if b == 0.0 {
        "0.00".into()
    } else {
        format!("{:.2}", a / b * scale)
    }
}

fn metric_value(s: &State, name: &str, t: &Totals, entity: Option<&Entity>) -> Option<Value> {
    if let Some(v) = t.get(name) {
        return Some(json!(
            if name == "spend" || name == "total_purchase_value" {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }
        ));
    }
    let g = |n| t.get(n).unwrap_or(0.0);
    let derived = match name {
        "ctr" => ratio(g("clicks"), g("impressions"), 100.0),
        "cpc" => ratio(g("spend"), g("clicks"), 1.0),
        "cpm" => ratio(g("spend"), g("impressions"), 1000.0),
        "conversion_rate" => ratio(g("conversion"), g("clicks"), 100.0),
        "cost_per_conversion" => ratio(g("spend"), g("conversion"), 1.0),
        "frequency" => ratio(g("impressions"), g("reach"), 1.0),
        attribute => {
            let e = entity?;
            if let Some(v) = e.fields.get(attribute) {
                return Some(json!(
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                ));
            }
            // A parent's attribute (`campaign_name` on an ad row) comes from the parent.
            let parent_kind = match attribute {
                "campaign_name" | "objective_type" => Kind::Campaign,
                "adgroup_name" => Kind::AdGroup,
                _ => return None,
            };
            let parent_id = e.fields.get(parent_kind.id_field())?.as_str()?;
            let parent = s
                .entities
                .iter()
                .find(|p| p.kind == parent_kind && p.id() == parent_id)?;
            return parent.fields.get(attribute).cloned();
        }
    };
    Some(json!(derived))
}

fn str_list(p: &Params, key: &str) -> Result<Option<Vec<String>>, Reply> {
    p.str_list(key)
}

/// The statuses a `*_status` filter asks for; deleted entities are excluded unless `STATUS_ALL`.
fn include_deleted(p: &Params) -> Result<bool, Reply> {
    let Some(filters) = p.get("filtering") else {
        return Ok(false);
    };
    let filters = filters
        .as_array()
        .ok_or_else(|| Reply::param("filtering: Not a valid list."))?;
    for f in filters {
        let field = f.get("field_name").and_then(Value::as_str).ok_or_else(|| {
            Reply::param("filtering.field_name: Missing data for required field.")
        })?;
        if field.ends_with("_status") {
            let value = f
                .get("filter_value")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let values: Vec<String> = serde_json::from_str(value).map_err(|_| {
                Reply::param("filtering.filter_value: Must be a JSON array string.")
            })?;
            if values.iter().any(|v| v == "STATUS_ALL") {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

pub fn integrated_get(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    crate::oauth::covers(token, &advertiser_id)?;
    match p.required_str("report_type")?.as_str() {
        "BASIC" => {}
        "AUDIENCE" | "PLAYABLE_MATERIAL" | "CATALOG" | "BC" | "TT_SHOP" => {
            return Err(Reply::error(
                40008,
                "tiktok-mock serves BASIC reports only.",
            ));
        }
        _ => {
            return Err(Reply::param(
                "report_type: Must be one of: BASIC, AUDIENCE, PLAYABLE_MATERIAL, CATALOG, BC, TT_SHOP.",
            ));
        }
    }
    let (level, id_dim) = match p.required_str("data_level")?.as_str() {
        "AUCTION_ADVERTISER" => (None, "advertiser_id"),
        "AUCTION_CAMPAIGN" => (Some(Kind::Campaign), "campaign_id"),
        "AUCTION_ADGROUP" => (Some(Kind::AdGroup), "adgroup_id"),
        "AUCTION_AD" => (Some(Kind::Ad), "ad_id"),
        _ => {
            return Err(Reply::param(
                "data_level: Must be one of: AUCTION_ADVERTISER, AUCTION_CAMPAIGN, AUCTION_ADGROUP, AUCTION_AD.",
            ));
        }
    };
    let dimensions = str_list(p, "dimensions")?
        .ok_or_else(|| Reply::param("dimensions: Missing data for required field."))?;
    let day = dimensions.iter().any(|d| d == "stat_time_day");
    let hour = dimensions.iter().any(|d| d == "stat_time_hour");
    for d in &dimensions {
        if d != id_dim && d != "stat_time_day" && d != "stat_time_hour" {
            return Err(Reply::param(format!(
                "dimensions: {d} is not valid with this data_level."
            )));
        }
    }
    if day && hour {
        return Err(Reply::param(
            "dimensions: stat_time_day and stat_time_hour cannot be combined.",
        ));
    }
    let metrics =
        str_list(p, "metrics")?.unwrap_or_else(|| vec!["spend".into(), "impressions".into()]);
    let lifetime = p.str("query_lifetime")?.is_some_and(|v| v == "true");
    let (start, end) = if lifetime {
        (None, None)
    } else {
        let start = parse_date(&p.required_str("start_date")?)
            .ok_or_else(|| Reply::param("start_date: Not a valid date (YYYY-MM-DD)."))?;
        let end = parse_date(&p.required_str("end_date")?)
            .ok_or_else(|| Reply::param("end_date: Not a valid date (YYYY-MM-DD)."))?;
        if end < start {
            return Err(Reply::param(
                "end_date: Must not be earlier than start_date.",
            ));
        }
        let (max, what) = if hour {
            (1, "1 day with stat_time_hour")
        } else if day {
            (30, "30 days with stat_time_day")
        } else {
            (365, "365 days")
        };
        if end - start + 1 > max {
            return Err(Reply::param(format!(
                "start_date, end_date: The time range is limited to {what}."
            )));
        }
        (Some(start), Some(end))
    };
    let (page, page_size) = paging(p, 1000)?;
    let deleted = include_deleted(p)?;

    let ads: Vec<&Entity> = s
        .entities
        .iter()
        .filter(|e| e.kind == Kind::Ad && e.advertiser_id() == advertiser_id)
        .collect();
    let targets: Vec<Option<&Entity>> = match level {
        None => vec![None],
        Some(kind) => s
            .entities
            .iter()
            .filter(|e| {
                e.kind == kind && e.advertiser_id() == advertiser_id && (deleted || !e.deleted())
            })
            .map(Some)
            .collect(),
    };
    // Time slots: days, hours of one day, or the whole range at once.
    let slots: Vec<(String, Vec<i64>)> = match (start, end) {
        // Hourly ranges are one day (checked above).
        (Some(a), Some(_)) if hour => (0..24)
            .map(|h| (format!("{} {h:02}:00:00", format_date(a)), vec![a * 24 + h]))
            .collect(),
        (Some(a), Some(b)) if day => (a..=b)
            .map(|d| {
                (
                    format!("{} 00:00:00", format_date(d)),
                    (0..24).map(|h| d * 24 + h).collect(),
                )
            })
            .collect(),
        (Some(a), Some(b)) => vec![(String::new(), (a * 24..(b + 1) * 24).collect())],
        _ => vec![(
            String::new(),
            (0..24 * 30).map(|h| 20_000 * 24 + h).collect(),
        )],
    };
    // The ads under each target, found once (not per slot).
    let members: Vec<Vec<&Entity>> = targets
        .iter()
        .map(|target| {
            ads.iter()
                .copied()
                .filter(|ad| match target {
                    None => true,
                    Some(t) => ad.fields.get(t.kind.id_field()) == t.fields.get(t.kind.id_field()),
                })
                .collect()
        })
        .collect();
    // Rows run slot by slot, target by target; only the requested page is computed (an
    // ad-level month of 1,000 ads is 30,000 rows, each summing 24 hours).
    let total = slots.len() * targets.len();
    let first = ((page - 1) * page_size) as usize;
    let wanted: Vec<usize> = if first < total {
        (first..(first + page_size as usize).min(total)).collect()
    } else {
        // Past the end: still check the metric names on the first row.
        (0..total.min(1)).collect()
    };
    let mut rows = Vec::new();
    for idx in wanted {
        let (label, hours) = &slots[idx / targets.len()];
        let (target, members) = (&targets[idx % targets.len()], &members[idx % targets.len()]);
        {
            let mut totals = Totals::default();
            for ad in members {
                for h in hours {
                    totals.add(&seeded(s.config.seed, ad.id(), *h));
                }
            }
            let mut dims = Map::new();
            dims.insert(
                id_dim.into(),
                json!(
                    target
                        .map(|t| t.id().to_string())
                        .unwrap_or_else(|| advertiser_id.clone())
                ),
            );
            if day {
                dims.insert("stat_time_day".into(), json!(label));
            }
            if hour {
                dims.insert("stat_time_hour".into(), json!(label));
            }
            let mut values = Map::new();
            for m in &metrics {
                let v = metric_value(s, m, &totals, *target)
                    .ok_or_else(|| Reply::param(format!("metrics: {m} is not a valid metric.")))?;
                values.insert(m.clone(), v);
            }
            rows.push(json!({"dimensions": dims, "metrics": values}));
        }
    }
    let list = if first < total { rows } else { Vec::new() };
    let page_info = crate::envelope::page_info(page, page_size, total);
    Ok(Reply::ok(json!({"list": list, "page_info": page_info})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_metrics_are_deterministic_and_plausible() {
        let a = seeded(1, "7123", 100);
        assert_eq!(a.0, seeded(1, "7123", 100).0);
        assert_ne!(a.0, seeded(2, "7123", 100).0);
        let g = |n| a.get(n).unwrap();
        assert!(
            g("clicks") <= g("impressions")
                && g("reach") <= g("impressions")
                && g("conversion") <= g("clicks")
        );
    }

    #[test]
    fn ratios_of_zero_are_zero_not_nan() {
        assert_eq!(ratio(1.0, 0.0, 100.0), "0.00");
        assert_eq!(ratio(1.0, 4.0, 100.0), "25.00");
    }
}
