//! Campaigns, ad groups and ads in the mock (tiktok-api.md §5).

use serde_json::{Value, json};
use tiktok_mock::{MockConfig, MockServer};

struct Api {
    m: MockServer,
    token: String,
    advertiser: String,
}

impl Api {
    async fn new() -> Self {
        let m = MockServer::start(MockConfig {
            qps_per_endpoint: None,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let advertiser = m.mock.demo_advertiser().id;
        let token = m.mock.token_for(std::slice::from_ref(&advertiser));
        Api {
            token,
            advertiser,
            m,
        }
    }

    async fn post(&self, path: &str, mut body: Value) -> Value {
        body["advertiser_id"] = json!(self.advertiser);
        let r = reqwest::Client::new()
            .post(format!("{}/open_api/v1.3{path}", self.m.url()))
            .header("Access-Token", &self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Value {
        let mut q = vec![("advertiser_id", self.advertiser.clone())];
        q.extend(query.iter().cloned());
        let r = reqwest::Client::new()
            .get(format!("{}/open_api/v1.3{path}", self.m.url()))
            .header("Access-Token", &self.token)
            .query(&q)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn campaign(&self, name: &str) -> String {
        let v = self.post("/campaign/create/", json!({"campaign_name": name, "objective_type": "TRAFFIC", "budget_mode": "BUDGET_MODE_DAY", "budget": 50})).await;
        assert_eq!(v["code"], 0, "{v}");
        v["data"]["campaign_id"].as_str().unwrap().to_string()
    }
}

fn assert_param_error(v: &Value, field: &str) {
    assert_eq!(v["code"], 40002, "{v}");
    assert!(v["message"].as_str().unwrap().starts_with(field), "{v}");
}

#[tokio::test]
async fn campaign_create_validates_objective_and_budget() {
    let api = Api::new().await;
    let v = api.post("/campaign/create/", json!({"campaign_name": "c", "objective_type": "TRAFFIC", "budget_mode": "BUDGET_MODE_DAY", "budget": 50})).await;
    assert_eq!(v["code"], 0);
    let c = &v["data"];
    assert!(c["campaign_id"].is_string(), "ids are strings");
    assert_eq!(
        (
            c["operation_status"].as_str(),
            c["secondary_status"].as_str()
        ),
        (Some("ENABLE"), Some("CAMPAIGN_STATUS_ENABLE"))
    );
    assert_param_error(
        &api.post(
            "/campaign/create/",
            json!({"campaign_name": "c", "objective_type": "SALES_NOW"}),
        )
        .await,
        "objective_type",
    );
    assert_param_error(&api.post("/campaign/create/", json!({"campaign_name": "c", "objective_type": "REACH", "budget_mode": "BUDGET_MODE_DAY", "budget": 49.99})).await, "budget");
    assert_param_error(
        &api.post(
            "/campaign/create/",
            json!({"campaign_name": "c", "objective_type": "REACH", "budget_mode": "DAILY"}),
        )
        .await,
        "budget_mode",
    );
    assert_param_error(
        &api.post("/campaign/create/", json!({"objective_type": "REACH"}))
            .await,
        "campaign_name",
    );
    let once = json!({"campaign_name": "c", "objective_type": "REACH", "request_id": "req-1"});
    assert_eq!(api.post("/campaign/create/", once.clone()).await["code"], 0);
    assert_eq!(api.post("/campaign/create/", once).await["code"], 40050);
}

#[tokio::test]
async fn budget_mode_is_immutable_and_budgets_keep_their_minimum() {
    let api = Api::new().await;
    let id = api.campaign("c").await;
    assert_param_error(
        &api.post(
            "/campaign/update/",
            json!({"campaign_id": id, "budget_mode": "BUDGET_MODE_TOTAL"}),
        )
        .await,
        "budget_mode",
    );
    assert_param_error(
        &api.post(
            "/campaign/update/",
            json!({"campaign_id": id, "budget": 10}),
        )
        .await,
        "budget",
    );
    let v = api
        .post(
            "/campaign/update/",
            json!({"campaign_id": id, "budget": 75, "campaign_name": "renamed"}),
        )
        .await;
    assert_eq!(
        (
            v["code"].as_i64(),
            v["data"]["budget"].as_f64(),
            v["data"]["campaign_name"].as_str()
        ),
        (Some(0), Some(75.0), Some("renamed"))
    );
}

#[tokio::test]
async fn status_updates_take_1_to_20_ids_and_delete_is_final() {
    let api = Api::new().await;
    let a = api.campaign("a").await;
    let b = api.campaign("b").await;
    let v = api
        .post(
            "/campaign/status/update/",
            json!({"campaign_ids": [a], "operation_status": "DELETE"}),
        )
        .await;
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["campaign_list"][0]["status"], "DELETE");
    assert_param_error(
        &api.post(
            "/campaign/status/update/",
            json!({"campaign_ids": [a], "operation_status": "ENABLE"}),
        )
        .await,
        "campaign_ids",
    );
    let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
    assert_eq!(
        api.post(
            "/campaign/status/update/",
            json!({"campaign_ids": many, "operation_status": "DISABLE"})
        )
        .await["code"],
        40011
    );
    assert_param_error(
        &api.post(
            "/campaign/status/update/",
            json!({"campaign_ids": [], "operation_status": "DISABLE"}),
        )
        .await,
        "campaign_ids",
    );

    let listed = api.get("/campaign/get/", &[]).await;
    let ids: Vec<&str> = listed["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["campaign_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [b.as_str()],
        "deleted campaigns are left out by default"
    );
    let all = api
        .get(
            "/campaign/get/",
            &[(
                "filtering",
                json!({"secondary_status": "CAMPAIGN_STATUS_ALL"}).to_string(),
            )],
        )
        .await;
    assert_eq!(all["data"]["page_info"]["total_number"], 2);
}

#[tokio::test]
async fn get_filters_by_ids_and_pages() {
    let api = Api::new().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(api.campaign(&format!("c{i}")).await);
    }
    let page = api
        .get(
            "/campaign/get/",
            &[("page", "2".into()), ("page_size", "2".into())],
        )
        .await;
    assert_eq!(
        page["data"]["page_info"],
        json!({"page": 2, "page_size": 2, "total_number": 5, "total_page": 3})
    );
    assert_eq!(page["data"]["list"].as_array().unwrap().len(), 2);
    let one = api
        .get(
            "/campaign/get/",
            &[("filtering", json!({"campaign_ids": [ids[3]]}).to_string())],
        )
        .await;
    assert_eq!(one["data"]["list"][0]["campaign_id"], ids[3]);
    assert_param_error(
        &api.get("/campaign/get/", &[("page_size", "1001".into())])
            .await,
        "page_size",
    );
    assert_param_error(
        &api.get("/campaign/get/", &[("filtering", "[1]".into())])
            .await,
        "filtering",
    );
}

#[tokio::test]
async fn ad_groups_and_ads_hang_under_their_parents() {
    let api = Api::new().await;
    let campaign = api.campaign("c").await;
    let adgroup = json!({"campaign_id": campaign, "adgroup_name": "g", "budget_mode": "BUDGET_MODE_TOTAL", "budget": 100,
        "schedule_type": "SCHEDULE_START_END", "schedule_start_time": "2030-01-01 00:00:00", "schedule_end_time": "2030-01-10 00:00:00",
        "billing_event": "CPC", "optimization_goal": "CLICK"});
    assert_param_error(
        &api.post("/adgroup/create/", adgroup.clone()).await,
        "budget",
    );
    let mut ok = adgroup.clone();
    ok["budget"] = json!(180);
    let v = api.post("/adgroup/create/", ok).await;
    assert_eq!(v["code"], 0, "9 days x $20 = $180 lifetime minimum: {v}");
    let adgroup_id = v["data"]["adgroup_id"].as_str().unwrap().to_string();
    let mut orphan = adgroup.clone();
    orphan["campaign_id"] = json!("123");
    assert_eq!(api.post("/adgroup/create/", orphan).await["code"], 40007);

    let ads = api.post("/ad/create/", json!({"adgroup_id": adgroup_id, "creatives": [{"ad_name": "a1", "ad_format": "SINGLE_VIDEO"}, {"ad_name": "a2", "ad_format": "SINGLE_VIDEO"}]})).await;
    assert_eq!(ads["code"], 0, "{ads}");
    assert_eq!(ads["data"]["ad_ids"].as_array().unwrap().len(), 2);
    assert_param_error(
        &api.post(
            "/ad/create/",
            json!({"adgroup_id": adgroup_id, "creatives": [{"ad_format": "SINGLE_VIDEO"}]}),
        )
        .await,
        "creatives.0.ad_name",
    );
    let listed = api
        .get(
            "/ad/get/",
            &[(
                "filtering",
                json!({"adgroup_ids": [adgroup_id]}).to_string(),
            )],
        )
        .await;
    assert_eq!(listed["data"]["page_info"]["total_number"], 2);
    let first_ad = ads["data"]["ad_ids"][0].as_str().unwrap();
    let renamed = api.post("/ad/update/", json!({"creatives": [{"ad_id": first_ad, "ad_name": "renamed", "ad_text": "new text"}]})).await;
    assert_eq!(
        renamed["data"]["creatives"][0]["ad_name"], "renamed",
        "{renamed}"
    );
    assert_eq!(
        api.post(
            "/ad/update/",
            json!({"creatives": [{"ad_id": "404", "ad_name": "x"}]})
        )
        .await["code"],
        40007
    );
    assert_param_error(
        &api.post(
            "/ad/update/",
            json!({"creatives": [{"ad_id": first_ad, "ad_name": ""}]}),
        )
        .await,
        "creatives.0.ad_name",
    );

    let partial = api.post("/adgroup/status/update/", json!({"adgroup_ids": [adgroup_id, "999"], "operation_status": "DISABLE", "allow_partial_success": true})).await;
    assert_eq!(partial["code"], 0);
    assert_eq!(partial["data"]["adgroup_ids"], json!([adgroup_id]));
    assert_eq!(partial["data"]["error_list"][0]["adgroup_id"], "999");
}

#[tokio::test]
async fn reports_are_deterministic_sums_with_tiktoks_limits() {
    let api = Api::new().await;
    let campaign = api.campaign("c").await;
    let g = api.post("/adgroup/create/", json!({"campaign_id": campaign, "adgroup_name": "g", "budget_mode": "BUDGET_MODE_DAY", "budget": 20, "billing_event": "CPC", "optimization_goal": "CLICK"})).await;
    let adgroup = g["data"]["adgroup_id"].as_str().unwrap().to_string();
    let ads = api.post("/ad/create/", json!({"adgroup_id": adgroup, "creatives": [{"ad_name": "a", "ad_format": "SINGLE_VIDEO"}, {"ad_name": "b", "ad_format": "SINGLE_VIDEO"}]})).await;
    assert_eq!(ads["code"], 0);
    let report =
        |level: &'static str, dims: &'static str, start: &'static str, end: &'static str| {
            let api = &api;
            async move {
                api.get(
                    "/report/integrated/get/",
                    &[
                        ("report_type", "BASIC".into()),
                        ("data_level", level.into()),
                        ("dimensions", dims.into()),
                        (
                            "metrics",
                            r#"["spend","impressions","clicks","ctr","campaign_name"]"#.into(),
                        ),
                        ("start_date", start.into()),
                        ("end_date", end.into()),
                        ("page_size", "1000".into()),
                    ],
                )
                .await
            }
        };
    let by_ad = report(
        "AUCTION_AD",
        r#"["ad_id","stat_time_day"]"#,
        "2025-12-01",
        "2025-12-03",
    )
    .await;
    assert_eq!(by_ad["code"], 0, "{by_ad}");
    assert_eq!(
        by_ad["data"]["page_info"]["total_number"], 6,
        "2 ads x 3 days"
    );
    let row = &by_ad["data"]["list"][0];
    assert_eq!(row["dimensions"]["stat_time_day"], "2025-12-01 00:00:00");
    assert!(
        row["metrics"]["spend"].as_str().unwrap().contains('.'),
        "metric values are strings: {row}"
    );
    assert_eq!(row["metrics"]["campaign_name"], "c");
    let again = report(
        "AUCTION_AD",
        r#"["ad_id","stat_time_day"]"#,
        "2025-12-01",
        "2025-12-03",
    )
    .await;
    assert_eq!(by_ad["data"], again["data"], "same seed, same numbers");

    let by_campaign = report(
        "AUCTION_CAMPAIGN",
        r#"["campaign_id","stat_time_day"]"#,
        "2025-12-01",
        "2025-12-01",
    )
    .await;
    let sum: u64 = by_ad["data"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dimensions"]["stat_time_day"] == "2025-12-01 00:00:00")
        .map(|r| {
            r["metrics"]["impressions"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        by_campaign["data"]["list"][0]["metrics"]["impressions"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        sum,
        "levels add up"
    );

    assert_param_error(
        &report(
            "AUCTION_AD",
            r#"["ad_id","stat_time_day"]"#,
            "2025-11-01",
            "2025-12-01",
        )
        .await,
        "start_date, end_date",
    );
    assert_param_error(
        &report(
            "AUCTION_AD",
            r#"["ad_id","stat_time_hour"]"#,
            "2025-12-01",
            "2025-12-02",
        )
        .await,
        "start_date, end_date",
    );
    let hourly = report(
        "AUCTION_AD",
        r#"["ad_id","stat_time_hour"]"#,
        "2025-12-01",
        "2025-12-01",
    )
    .await;
    assert_eq!(hourly["data"]["page_info"]["total_number"], 48);
    assert_param_error(
        &report(
            "AUCTION_AD",
            r#"["campaign_id"]"#,
            "2025-12-01",
            "2025-12-01",
        )
        .await,
        "dimensions",
    );
    assert_param_error(
        &report("AUCTION_AD", r#"["ad_id"]"#, "2025-12-01", "2025-02-30").await,
        "end_date",
    );
}

/// TikTok's documented examples (testdata/tiktok-doc-examples.json).
fn doc_examples() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/tiktok-doc-examples.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("testdata/ is in the repository"))
        .unwrap()
}

fn keys(v: &Value) -> std::collections::BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[tokio::test]
async fn responses_carry_every_field_of_tiktoks_documented_examples() {
    let docs = doc_examples();
    let api = Api::new().await;
    let id = api.campaign("c").await;

    let got = api.get("/campaign/get/", &[]).await;
    let example = &docs["campaign_get"]["response"];
    assert_eq!(keys(&got), keys(example), "envelope");
    assert_eq!(keys(&got["data"]), keys(&example["data"]));
    assert_eq!(
        keys(&got["data"]["page_info"]),
        keys(&example["data"]["page_info"])
    );
    let missing: Vec<_> = keys(&example["data"]["list"][0])
        .difference(&keys(&got["data"]["list"][0]))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "campaign fields missing: {missing:?}");

    let status = api
        .post(
            "/campaign/status/update/",
            json!({"campaign_ids": [id], "operation_status": "DISABLE"}),
        )
        .await;
    for key in keys(&docs["campaign_status_update"]["response"]["data"]) {
        assert!(
            status["data"].get(&key).is_some(),
            "status/update lacks {key}: {status}"
        );
    }

    let g = api.post("/adgroup/create/", json!({"campaign_id": id, "adgroup_name": "g", "budget_mode": "BUDGET_MODE_DAY", "budget": 20, "billing_event": "CPM", "optimization_goal": "REACH"})).await;
    let ad = api.post("/ad/create/", json!({"adgroup_id": g["data"]["adgroup_id"], "creatives": [{"ad_name": "a", "ad_format": "SINGLE_VIDEO"}]})).await;
    assert_eq!(ad["code"], 0);
    let report = api
        .get(
            "/report/integrated/get/",
            &[
                ("report_type", "BASIC".into()),
                ("data_level", "AUCTION_AD".into()),
                ("dimensions", r#"["ad_id","stat_time_day"]"#.into()),
                ("metrics", r#"["ad_name","spend","impressions"]"#.into()),
                ("start_date", "2025-12-03".into()),
                ("end_date", "2025-12-03".into()),
            ],
        )
        .await;
    let example = &docs["report_integrated_get"]["response"]["data"];
    assert_eq!(keys(&report["data"]), keys(example));
    let row = &report["data"]["list"][0];
    assert_eq!(keys(row), keys(&example["list"][0]));
    assert_eq!(
        row["dimensions"]["stat_time_day"], example["list"][0]["dimensions"]["stat_time_day"],
        "same date, same format"
    );
    assert!(row["metrics"]["impressions"].is_string() && row["metrics"]["spend"].is_string());
}
