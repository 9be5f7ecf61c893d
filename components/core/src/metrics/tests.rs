//! Report parsing, storage and queries together.

use crate::OrgId;
use crate::metrics::query::*;
use crate::metrics::report::*;
use crate::metrics::store::*;
use crate::platform::kv::MemoryKv;
use serde_json::{Value, json};

/// One of Airbyte's mocked report answers (testdata/airbyte-reports.json).
fn vector(name: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/airbyte-reports.json"
    );
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
            let row =
                parse_row(level, Granularity::Hour, item).unwrap_or_else(|e| panic!("{file}: {e}"));
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
