//! Spark Ads post codes, identities and catalogs in the mock (tiktok-api.md §5.2, §5.4).

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
            m,
            token,
            advertiser,
        }
    }

    async fn admin(m: &MockServer, path: &str, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}{path}", m.url()))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}/open_api/v1.3{path}", self.m.url()))
            .header("Access-Token", &self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}/open_api/v1.3{path}", self.m.url()))
            .header("Access-Token", &self.token)
            .query(query)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
}

#[tokio::test]
async fn spark_ads_post_codes_are_authorized_then_readable() {
    let api = Api::new().await;
    let code = Api::admin(&api.m, "/_mock/spark/post_code", json!({})).await;
    let auth_code = code["auth_code"].as_str().unwrap();
    let adv = api.advertiser.as_str();
    let before = api
        .get(
            "/tt_video/info/",
            &[("advertiser_id", adv), ("auth_code", auth_code)],
        )
        .await;
    assert_eq!(before["code"], 40002, "not readable before authorization");
    assert_eq!(
        api.post(
            "/tt_video/authorize/",
            json!({"advertiser_id": adv, "auth_code": auth_code})
        )
        .await["code"],
        0
    );
    let info = api
        .get(
            "/tt_video/info/",
            &[("advertiser_id", adv), ("auth_code", auth_code)],
        )
        .await;
    assert_eq!(info["code"], 0);
    assert_eq!(info["data"]["item_info"]["item_id"], code["item_id"]);
    assert_eq!(
        info["data"]["user_info"]["identity_id"],
        code["identity_id"]
    );
    let list = api.get("/tt_video/list/", &[("advertiser_id", adv)]).await;
    assert_eq!(list["data"]["page_info"]["total_number"], 1);
    assert_eq!(
        api.post(
            "/tt_video/authorize/",
            json!({"advertiser_id": adv, "auth_code": "#nope"})
        )
        .await["code"],
        40002
    );
    let identities = api
        .get(
            "/identity/get/",
            &[("advertiser_id", adv), ("identity_type", "AUTH_CODE")],
        )
        .await;
    assert_eq!(
        identities["data"]["identity_list"][0]["identity_id"],
        code["identity_id"]
    );
}

#[tokio::test]
async fn custom_identities_are_created_and_listed() {
    let api = Api::new().await;
    let v = api
        .post(
            "/identity/create/",
            json!({"advertiser_id": api.advertiser, "display_name": "Shop"}),
        )
        .await;
    assert_eq!(v["code"], 0);
    let listed = api
        .get("/identity/get/", &[("advertiser_id", &api.advertiser)])
        .await;
    assert_eq!(listed["data"]["identity_list"][0]["display_name"], "Shop");
    let long = "x".repeat(101);
    assert_eq!(
        api.post(
            "/identity/create/",
            json!({"advertiser_id": api.advertiser, "display_name": long})
        )
        .await["code"],
        40002
    );
}

#[tokio::test]
async fn catalog_products_upsert_by_sku_with_per_product_results() {
    let api = Api::new().await;
    let created = api.post("/catalog/create/", json!({"bc_id": "bc1", "name": "Shop", "catalog_type": "ECOM", "catalog_conf": {"region_code": "US", "currency": "USD"}})).await;
    assert_eq!(created["code"], 0, "{created}");
    let catalog = created["data"]["catalog_id"].as_str().unwrap().to_string();
    assert_eq!(api.post("/catalog/create/", json!({"bc_id": "bc1", "name": "x", "catalog_type": "SHOES", "catalog_conf": {"region_code": "US"}})).await["code"], 40002);

    let product = |sku: &str, title: &str| json!({"sku_id": sku, "title": title, "availability": "IN_STOCK", "image_url": "https://img.example/1.png", "price_info": {"price": 9.99, "currency": "USD"}});
    let upload = api.post("/catalog/product/upload/", json!({"bc_id": "bc1", "catalog_id": catalog, "products": [product("a", "A"), product("b", "B"), json!({"sku_id": "c"})]})).await;
    assert_eq!(upload["code"], 0);
    let log_id = upload["data"]["feed_log_id"].as_str().unwrap().to_string();
    let log = api
        .get(
            "/catalog/product/log/",
            &[
                ("bc_id", "bc1"),
                ("catalog_id", &catalog),
                ("feed_log_id", &log_id),
            ],
        )
        .await;
    assert_eq!(
        log["data"]["product_count"],
        json!({"total": 3, "success": 2, "failed": 1})
    );
    assert_eq!(
        log["data"]["product_results"][2]["error_message"],
        "title: Length must be between 1 and 500."
    );

    let again = api
        .post(
            "/catalog/product/upload/",
            json!({"bc_id": "bc1", "catalog_id": catalog, "products": [product("a", "A2")]}),
        )
        .await;
    let log = api
        .get(
            "/catalog/product/log/",
            &[
                ("bc_id", "bc1"),
                ("catalog_id", &catalog),
                (
                    "feed_log_id",
                    again["data"]["feed_log_id"].as_str().unwrap(),
                ),
            ],
        )
        .await;
    assert_eq!(
        log["data"]["product_results"][0]["action"], "UPDATE",
        "same sku_id updates"
    );
    let got = api
        .get(
            "/catalog/get/",
            &[("bc_id", "bc1"), ("catalog_id", &catalog)],
        )
        .await;
    assert_eq!(got["data"]["list"][0]["product_count"], 2);
    assert_eq!(
        api.get("/catalog/get/", &[("bc_id", "bc1"), ("catalog_id", "404")])
            .await["code"],
        40007
    );
}
