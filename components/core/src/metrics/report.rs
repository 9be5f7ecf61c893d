//! TikTok's BASIC reports (tiktok-api.md §4) parsed into unified rows: the summable base
//! metrics per (advertiser, level, entity, local date or hour), the derived ratios by
//! name, and what to show first per campaign objective.

use crate::ApiError;
use chrono::{NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
