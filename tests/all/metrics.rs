//! metrics-fetch end to end: reports synced from tiktok-mock through the repository's
//! spin.toml on tiktok-edge, then queried as unified metrics.

use crate::common::world::{World, world};
use serde_json::{Map, Value, json};
use tiktok_edge_runtime::scheduler::{self, Schedule};
use tiktok_mock::model::{Entity, Kind};

/// Two campaigns, each with one ad group of three ads; the last ad is deleted (reports
/// must still count it). Returns the advertiser id.
fn seed_ads(w: &World) -> String {
    let advertiser = w.mock.mock.demo_advertiser().id;
    w.mock.mock.with_state(|s| {
        for c in 1..=2 {
            let (campaign, adgroup) = (format!("17000000000000{c}0"), format!("17000000000000{c}1"));
            let entity = |kind: Kind, fields: Value| {
                let mut fields: Map<String, Value> = fields.as_object().unwrap().clone();
                fields.insert("advertiser_id".into(), json!(advertiser));
                fields.insert("campaign_id".into(), json!(campaign));
                fields.entry("operation_status").or_insert(json!("ENABLE"));
                Entity { kind, fields }
            };
            s.entities.push(entity(Kind::Campaign, json!({"campaign_name": format!("C{c}")})));
            s.entities.push(entity(Kind::AdGroup, json!({"adgroup_id": adgroup})));
            for a in 1..=3 {
                let status = if c == 2 && a == 3 { "DELETE" } else { "ENABLE" };
                s.entities.push(entity(
                    Kind::Ad,
                    json!({"adgroup_id": adgroup, "ad_id": format!("17000000000000{c}{a}5"), "operation_status": status}),
                ));
            }
        }
    });
    advertiser
}

async fn connected(w: &World) -> (String, String) {
    let key = w.org("acme").await;
    let r = w.authorize("acme", &key, json!({}), "auto_approve").await;
    assert_eq!(r.status(), 200);
    (key, seed_ads(w))
}

fn report_requests(w: &World) -> usize {
    w.mock_paths()
        .iter()
        .filter(|p| p.ends_with("/report/integrated/get/"))
        .count()
}

async fn total(w: &World, key: &str, advertiser: &str, level: &str, from: &str, to: &str) -> Value {
    let (s, v) = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/metrics?advertiser={advertiser}&level={level}&from={from}&to={to}&group_by=total"),
            key,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v["rows"][0].clone()
}

#[tokio::test]
async fn a_95_day_sync_stores_every_level_consistently_and_syncing_again_changes_nothing() {
    let w = world().await;
    let (key, advertiser) = connected(&w).await;
    let (from, to) = ("2025-01-01", "2025-04-05");
    let body = json!({"advertiser_id": advertiser, "from": from, "to": to});
    let (s, report) = w
        .call(
            "POST",
            "/v1/orgs/acme/metrics/sync",
            &key,
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["timezone"], "America/Los_Angeles");
    for level in report["levels"].as_array().unwrap() {
        assert_eq!(level["status"], "ok", "{level}");
        assert_eq!(
            level["requests"], 4,
            "95 days are four 30-day windows: {level}"
        );
    }
    assert_eq!(report_requests(&w), 16);

    // Every level sums to the same totals (deleted ads included at each level).
    let advertiser_total = total(&w, &key, &advertiser, "advertiser", from, to).await;
    for level in ["campaign", "adgroup", "ad"] {
        let t = total(&w, &key, &advertiser, level, from, to).await;
        for m in ["impressions", "clicks", "spend", "conversion"] {
            let (a, b) = (
                advertiser_total[m].as_f64().unwrap(),
                t[m].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 0.01, "{level} {m}: {a} vs {b}");
        }
    }
    let (_, by_ad) = w
        .call("GET", &format!("/v1/orgs/acme/metrics?advertiser={advertiser}&level=ad&from={from}&to={to}&group_by=ad"), &key, None)
        .await;
    assert_eq!(
        by_ad["rows"].as_array().unwrap().len(),
        6,
        "the deleted ad is there too"
    );
    let ctr = advertiser_total["clicks"].as_f64().unwrap()
        / advertiser_total["impressions"].as_f64().unwrap()
        * 100.0;
    assert!(
        (advertiser_total["ctr"].as_f64().unwrap() - ctr).abs() < 0.001,
        "CTR from sums"
    );

    let (s, again) = w
        .call("POST", "/v1/orgs/acme/metrics/sync", &key, Some(body))
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        total(&w, &key, &advertiser, "ad", from, to).await,
        total(&w, &key, &advertiser, "ad", from, to).await
    );
    assert_eq!(
        total(&w, &key, &advertiser, "advertiser", from, to).await,
        advertiser_total,
        "no duplicate rows"
    );

    // CSV, one row per day.
    let r = w
        .http
        .get(w.edge.url(&format!("/v1/orgs/acme/metrics?advertiser={advertiser}&level=campaign&from=2025-01-01&to=2025-01-10")))
        .bearer_auth(&key)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.unwrap();
    assert!(csv.starts_with("date,impressions,clicks,spend,"), "{csv}");
    assert_eq!(csv.lines().count(), 11);

    let (_, status) = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/metrics/sync?advertiser={advertiser}"),
            &key,
            None,
        )
        .await;
    let syncs = status["syncs"].as_array().unwrap();
    assert_eq!(syncs.len(), 4, "{status}");
    assert!(
        syncs
            .iter()
            .all(|s| s["last_run"]["status"] == "ok" && s["synced_through"] == to)
    );
}

#[tokio::test]
async fn refusals_bad_queries_and_other_orgs_get_clear_answers() {
    let w = world().await;
    let (key, advertiser) = connected(&w).await;
    w.inject(json!({"count": 1, "path": "/report/integrated/get/", "code": 40001, "message": "No permission to operate advertiser."}))
        .await;
    let (s, report) = w
        .call(
            "POST",
            "/v1/orgs/acme/metrics/sync",
            &key,
            Some(json!({"advertiser_id": advertiser, "levels": ["ad"]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        report["levels"][0]["status"], "permission_denied",
        "{report}"
    );
    assert!(
        report["levels"][0]["error"]
            .as_str()
            .unwrap()
            .contains("40001")
    );
    // Nothing fetched yet: the next run starts the same range again, and completes.
    let (_, report) = w
        .call(
            "POST",
            "/v1/orgs/acme/metrics/sync",
            &key,
            Some(json!({"advertiser_id": advertiser, "levels": ["ad"]})),
        )
        .await;
    assert_eq!(report["levels"][0]["status"], "ok", "{report}");

    for (query, field) in [
        ("level=ad&from=2025-01-01&to=2025-01-02", "advertiser"),
        (
            "advertiser=x1&level=ad&from=2025-01-01&to=2025-01-02",
            "advertiser",
        ),
        (
            &format!("advertiser={advertiser}&level=creative&from=2025-01-01&to=2025-01-02")
                as &str,
            "level",
        ),
        (
            &format!("advertiser={advertiser}&level=ad&from=2025-13-01&to=2025-01-02"),
            "from",
        ),
        (
            &format!("advertiser={advertiser}&level=ad&from=2025-01-03&to=2025-01-02"),
            "to",
        ),
        (
            &format!("advertiser={advertiser}&level=ad&from=2020-01-01&to=2025-01-02"),
            "from",
        ),
        (
            &format!(
                "advertiser={advertiser}&level=ad&from=2025-01-01&to=2025-01-02&group_by=campaign"
            ),
            "group_by",
        ),
    ] {
        let (s, v) = w
            .call("GET", &format!("/v1/orgs/acme/metrics?{query}"), &key, None)
            .await;
        assert_eq!(
            (s, v["error"]["field"].as_str()),
            (400, Some(field)),
            "{query}: {v}"
        );
    }
    let (s, v) = w
        .call(
            "POST",
            "/v1/orgs/acme/metrics/sync",
            &key,
            Some(json!({"advertiser_id": advertiser, "levels": ["ad"], "extra": 1})),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    let other = w.org("other").await;
    let (s, _) = w
        .call("GET", &format!("/v1/orgs/acme/metrics?advertiser={advertiser}&level=ad&from=2025-01-01&to=2025-01-02"), &other, None)
        .await;
    assert_eq!(s, 403);
    let (s, v) = w
        .call(
            "POST",
            "/v1/orgs/other/metrics/sync",
            &other,
            Some(json!({"advertiser_id": advertiser})),
        )
        .await;
    assert_eq!(
        s, 404,
        "another org's advertiser is not connected to it: {v}"
    );
    let (_, v) = w
        .call(
            "GET",
            "/v1/orgs/acme/metrics/recommended?objective=REACH",
            &key,
            None,
        )
        .await;
    assert_eq!(v["metrics"][0], "impressions");
}

#[tokio::test]
async fn the_scheduled_task_syncs_every_connected_advertiser() {
    let w = world().await;
    let (key, advertiser) = connected(&w).await;
    let schedule = Schedule {
        name: "metrics".into(),
        path: "/v1/admin/tasks/metrics-sync".into(),
        method: "POST".into(),
        every_secs: 3600,
        headers: [(
            "authorization".to_string(),
            "Bearer {{ admin_token }}".to_string(),
        )]
        .into(),
    };
    let (status, body) = scheduler::run_once(&w.edge.app, &schedule).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let levels = v["synced"][0]["report"]["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 4, "{v}");
    assert!(levels.iter().all(|l| l["status"] == "ok"), "{v}");
    let (_, status) = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/metrics/sync?advertiser={advertiser}"),
            &key,
            None,
        )
        .await;
    assert!(status["syncs"][0]["synced_through"].is_string(), "{status}");
    let (s, _) = w
        .call("POST", "/v1/admin/tasks/metrics-sync", &key, None)
        .await;
    assert_eq!(s, 403, "an org key is not the admin token");
}
