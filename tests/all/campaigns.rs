//! campaign-ops end to end: the repository's spin.toml on tiktok-edge against tiktok-mock.
//! Checks before TikTok is called, idempotent creates, status batches, video checks on
//! generated MP4 files, Spark Ads, audiences and lookalikes, catalogs, TikTok's errors.

use crate::common::world::{ADMIN, World, world};
use serde_json::{Map, Value, json};
use tiktok_edge_core::ads::video::sample::mp4;
use tiktok_mock::model::{Entity, Kind};

/// An org "acme" with its key, connected to the mock's demo advertiser.
async fn connected(w: &World) -> (String, String) {
    let key = w.org("acme").await;
    let r = w.authorize("acme", &key, json!({}), "auto_approve").await;
    assert_eq!(r.status(), 200);
    (key, w.mock.mock.demo_advertiser().id)
}

fn base(advertiser: &str) -> String {
    format!("/v1/orgs/acme/advertisers/{advertiser}")
}

fn count(w: &World, endpoint: &str) -> usize {
    w.mock_paths()
        .iter()
        .filter(|p| p.ends_with(endpoint))
        .count()
}

/// Requests TikTok answered, not counting its throttling (40100), which the client retries.
fn answered(w: &World, endpoint: &str) -> usize {
    w.mock.mock.with_state(|s| {
        s.requests
            .iter()
            .filter(|r| r.path.ends_with(endpoint) && r.code != 40100)
            .count()
    })
}

async fn post_keyed(
    w: &World,
    path: &str,
    key: &str,
    idem: &str,
    body: &Value,
) -> (u16, Option<String>, Value) {
    let r = w
        .http
        .post(w.edge.url(path))
        .bearer_auth(key)
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let replayed = r
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    (status, replayed, r.json().await.unwrap())
}

fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn campaigns_and_ad_groups_are_checked_created_once_per_key_updated_and_switched_in_batches()
{
    let w = world().await;
    let (key, adv) = connected(&w).await;
    let campaigns = format!("{}/campaigns", base(&adv));

    // Checks name the field and nothing reaches TikTok.
    for (body, f) in [
        (
            json!({"campaign_name": "x", "objective_type": "SALES"}),
            "objective_type",
        ),
        (
            json!({"campaign_name": "x", "objective_type": "TRAFFIC", "budget_mode": "BUDGET_MODE_DAY", "budget": 49}),
            "budget",
        ),
        (json!({"objective_type": "TRAFFIC"}), "campaign_name"),
    ] {
        let (s, v) = w.call("POST", &campaigns, &key, Some(body)).await;
        assert_eq!((s, field(&v)), (400, f), "{v}");
    }
    let (s, v) = w.call("POST", &campaigns, &key, None).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(count(&w, "/campaign/create/"), 0);

    // One TikTok call per key; the same key with another body is refused.
    let body = json!({"campaign_name": "Summer", "objective_type": "WEB_CONVERSIONS", "budget_mode": "BUDGET_MODE_DAY", "budget": 100});
    let (s, replayed, first) = post_keyed(&w, &campaigns, &key, "k-summer", &body).await;
    assert_eq!((s, replayed), (201, None), "{first}");
    let (s, replayed, again) = post_keyed(&w, &campaigns, &key, "k-summer", &body).await;
    assert_eq!((s, replayed.as_deref()), (201, Some("true")));
    assert_eq!(first, again);
    assert_eq!(count(&w, "/campaign/create/"), 1, "one TikTok call");
    let mut other = body.clone();
    other["budget"] = json!(200);
    let (s, _, v) = post_keyed(&w, &campaigns, &key, "k-summer", &other).await;
    assert_eq!(s, 409, "{v}");
    let sent: Value = w.mock.mock.with_state(|s| {
        serde_json::from_str(
            &s.requests
                .iter()
                .find(|r| r.path.ends_with("/campaign/create/"))
                .unwrap()
                .body,
        )
        .unwrap()
    });
    assert!(
        sent["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "TikTok's request_id is passed"
    );
    let campaign_id = first["id"].as_str().unwrap().to_string();

    // Ad groups are checked against their campaign.
    let adgroups = format!("{}/adgroups", base(&adv));
    let ag = json!({"campaign_id": campaign_id, "adgroup_name": "US web", "budget_mode": "BUDGET_MODE_DAY", "budget": 25,
                    "optimization_goal": "CONVERT", "optimization_event": "COMPLETE_PAYMENT", "location_ids": ["6252001"],
                    "age_groups": ["AGE_25_34"], "placement_type": "PLACEMENT_TYPE_AUTOMATIC"});
    let (s, v) = w.call("POST", &adgroups, &key, Some(ag.clone())).await;
    assert_eq!((s, field(&v)), (400, "pixel_id"), "{v}");
    let mut bad = ag.clone();
    bad["age_groups"] = json!(["AGE_18_30"]);
    bad["pixel_id"] = json!("7000000001");
    let (s, v) = w.call("POST", &adgroups, &key, Some(bad)).await;
    assert_eq!((s, field(&v)), (400, "age_groups[0]"), "{v}");
    let mut good = ag.clone();
    good["pixel_id"] = json!("7000000001");
    let (s, v) = w.call("POST", &adgroups, &key, Some(good)).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["adgroup"]["billing_event"], "OCPM");
    assert_eq!(count(&w, "/adgroup/create/"), 1);

    // Read, list, update.
    let one = format!("{campaigns}/{campaign_id}");
    let (s, v) = w.call("GET", &one, &key, None).await;
    assert_eq!(
        (s, v["campaign_name"].as_str()),
        (200, Some("Summer")),
        "{v}"
    );
    let (s, v) = w.call("GET", &format!("{campaigns}/123"), &key, None).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = w
        .call(
            "PATCH",
            &one,
            &key,
            Some(json!({"budget_mode": "BUDGET_MODE_TOTAL"})),
        )
        .await;
    assert_eq!((s, field(&v)), (400, "budget_mode"));
    let (s, v) = w
        .call(
            "PATCH",
            &one,
            &key,
            Some(json!({"budget": 75, "campaign_name": "Summer v2"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = w
        .call("GET", &format!("{campaigns}?name=v2"), &key, None)
        .await;
    assert_eq!(
        (s, v["list"][0]["budget"].as_f64()),
        (200, Some(75.0)),
        "{v}"
    );

    // 45 campaigns (and one unknown id) switched off: 20 per TikTok call, each id's result.
    let ids: Vec<String> = (1..=45).map(|i| format!("17100000000000{i:02}")).collect();
    w.mock.mock.with_state(|s| {
        for id in &ids {
            let mut f = Map::new();
            for (k, v) in [
                ("campaign_id", json!(id)),
                ("advertiser_id", json!(adv)),
                ("campaign_name", json!(format!("C{id}"))),
                ("operation_status", json!("ENABLE")),
                ("secondary_status", json!("CAMPAIGN_STATUS_ENABLE")),
            ] {
                f.insert(k.into(), v);
            }
            s.entities.push(Entity {
                kind: Kind::Campaign,
                fields: f,
            });
        }
    });
    let mut with_unknown = ids.clone();
    with_unknown.insert(30, "1719999999999999".into());
    let before = answered(&w, "/campaign/status/update/");
    let (s, r) = w
        .call(
            "POST",
            &format!("{campaigns}/status"),
            &key,
            Some(json!({"operation_status": "DISABLE", "ids": with_unknown})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (
            r["requested"].as_u64(),
            r["succeeded"].as_u64(),
            r["failed"].as_u64()
        ),
        (Some(46), Some(45), Some(1)),
        "{r}"
    );
    // 3 batches, the refused one retried id by id (20).
    assert_eq!(r["tiktok_calls"], 23);
    assert_eq!(answered(&w, "/campaign/status/update/") - before, 23);
    assert_eq!(r["results"][30]["id"], "1719999999999999");
    assert_eq!(r["results"][30]["error"]["tiktok_code"], 40002);
    let disabled = w.mock.mock.with_state(|s| {
        s.entities
            .iter()
            .filter(|e| {
                ids.iter().any(|i| i == e.id()) && e.fields["operation_status"] == "DISABLE"
            })
            .count()
    });
    assert_eq!(disabled, 45);
    // Deleted is final: an update is refused.
    let (s, _) = w
        .call(
            "POST",
            &format!("{campaigns}/status"),
            &key,
            Some(json!({"operation_status": "DELETE", "ids": [campaign_id]})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = w
        .call("PATCH", &one, &key, Some(json!({"budget": 80})))
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = w
        .call(
            "POST",
            &format!("{campaigns}/status"),
            &key,
            Some(json!({"operation_status": "PAUSE", "ids": ["1"]})),
        )
        .await;
    assert_eq!((s, field(&v)), (400, "operation_status"));
}

async fn upload(w: &World, key: &str, adv: &str, name: &str, file: Vec<u8>) -> (u16, Value) {
    let r = w
        .http
        .post(
            w.edge
                .url(&format!("{}/videos?file_name={name}", base(adv))),
        )
        .bearer_auth(key)
        .header("content-type", "video/mp4")
        .body(file)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn failed_checks(v: &Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["check"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn videos_are_checked_before_upload_and_ads_and_spark_ads_are_created() {
    let w = world().await;
    let (key, adv) = connected(&w).await;
    let videos = || w.mock.mock.with_state(|s| s.videos.len());

    // Streamed through: moov at the end, 12 s, 1080×1920, ~1 MB (≥ 516 kbps).
    let good = mp4(1080, 1920, 12, 1_000_000, false);
    let (s, v) = upload(&w, &key, &adv, "summer.mp4", good.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["status"], "ready", "polled until TikTok transcoded it");
    assert!(failed_checks(&v).is_empty());
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "container",
            "size",
            "aspect_ratio",
            "resolution",
            "codec",
            "duration",
            "bitrate"
        ]
    );
    let video_id = v["video_id"].as_str().unwrap().to_string();
    // The mock checked the MD5 signature against the bytes it got.
    let stored = w.mock.mock.with_state(|s| s.videos[0].info.clone());
    assert_eq!(stored["signature"].as_str(), v["video_signature"].as_str());
    assert_eq!(stored["size"], good.len());

    // Failing files: faststart ones are refused before any upload, moov-last ones are
    // aborted before their end; TikTok creates nothing either way.
    let uploads_before = count(&w, "/file/video/ad/upload/");
    for (file, failing) in [
        (mp4(1080, 1920, 4, 400_000, true), "duration"),
        (mp4(1080, 1920, 4, 400_000, false), "duration"),
        (mp4(1200, 1000, 10, 800_000, true), "aspect_ratio"),
        (mp4(360, 640, 10, 800_000, false), "resolution"),
        (mp4(1080, 1920, 30, 100_000, true), "bitrate"),
        (b"just some text, not a video at all".to_vec(), "container"),
    ] {
        let (s, v) = upload(&w, &key, &adv, "bad.mp4", file).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (422, Some("video_rejected")),
            "{v}"
        );
        assert_eq!(failed_checks(&v), vec![failing], "{v}");
    }
    assert_eq!(videos(), 1, "TikTok got no other video");
    assert_eq!(
        count(&w, "/file/video/ad/upload/"),
        uploads_before,
        "no completed upload request"
    );
    let (s, v) = w
        .call(
            "GET",
            &format!("{}/videos/{video_id}", base(&adv)),
            &key,
            None,
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ready")), "{v}");

    // An ad with the video.
    let (_, c) = w
        .call(
            "POST",
            &format!("{}/campaigns", base(&adv)),
            &key,
            Some(json!({"campaign_name": "Views", "objective_type": "TRAFFIC"})),
        )
        .await;
    let (s, ag) = w.call("POST", &format!("{}/adgroups", base(&adv)), &key, Some(json!({
        "campaign_id": c["id"], "adgroup_name": "AG", "budget_mode": "BUDGET_MODE_DAY", "budget": 20,
        "optimization_goal": "CLICK", "location_ids": ["6252001"]}))).await;
    assert_eq!(s, 201, "{ag}");
    let adgroup_id = ag["id"].as_str().unwrap().to_string();
    let (s, ident) = w
        .call(
            "POST",
            &format!("{}/identities", base(&adv)),
            &key,
            Some(json!({"display_name": "Acme"})),
        )
        .await;
    assert_eq!(s, 201, "{ident}");
    let creative = json!({"ad_name": "Video ad", "ad_format": "SINGLE_VIDEO", "identity_type": "CUSTOMIZED_USER",
                          "identity_id": ident["identity_id"], "video_id": video_id, "ad_text": "Summer deals for everyone",
                          "landing_page_url": "https://shop.example/summer"});
    let mut emoji = creative.clone();
    emoji["ad_text"] = json!("Summer deals 🔥 for all");
    let (s, v) = w
        .call(
            "POST",
            &format!("{}/ads", base(&adv)),
            &key,
            Some(json!({"adgroup_id": adgroup_id, "creatives": [emoji]})),
        )
        .await;
    assert_eq!((s, field(&v)), (400, "creatives[0].ad_text"), "{v}");
    let (s, v) = w
        .call(
            "POST",
            &format!("{}/ads", base(&adv)),
            &key,
            Some(json!({"adgroup_id": adgroup_id, "creatives": [creative]})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["ad_ids"].as_array().unwrap().len(), 1);

    // Spark Ads: a creator's post code, authorized, listed and promoted.
    let code: Value = w
        .http
        .post(format!("{}/_mock/spark/post_code", w.mock.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (s, post) = w
        .call(
            "POST",
            &format!("{}/spark/authorize", base(&adv)),
            &key,
            Some(json!({"auth_code": code["auth_code"]})),
        )
        .await;
    assert_eq!(s, 200, "{post}");
    assert_eq!(post["tiktok_item_id"], code["item_id"]);
    assert_eq!(post["identity_id"], code["identity_id"]);
    let (s, posts) = w
        .call("GET", &format!("{}/spark/posts", base(&adv)), &key, None)
        .await;
    assert_eq!(
        (s, posts["list"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{posts}"
    );
    let (s, v) = w
        .call(
            "POST",
            &format!("{}/spark/authorize", base(&adv)),
            &key,
            Some(json!({"auth_code": "#not-a-code"})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = w.call("POST", &format!("{}/spark/ads", base(&adv)), &key,
        Some(json!({"adgroup_id": adgroup_id, "auth_code": code["auth_code"], "ad_name": "Spark", "call_to_action": "SHOP_NOW"}))).await;
    assert_eq!(s, 201, "{v}");
    let ad = &v["ads"][0];
    assert_eq!(
        (ad["identity_type"].as_str(), ad["tiktok_item_id"].as_str()),
        (Some("AUTH_CODE"), code["item_id"].as_str()),
        "{v}"
    );
    assert!(ad.get("video_id").is_none());
    let (s, v) = w.call("POST", &format!("{}/spark/ads", base(&adv)), &key,
        Some(json!({"adgroup_id": adgroup_id, "identity_type": "TT_USER", "identity_id": "someone-else", "tiktok_item_id": "1", "ad_name": "S"}))).await;
    assert_eq!((s, field(&v)), (400, "identity_id"), "{v}");
    let (s, v) = w
        .call("GET", &format!("{}/identities", base(&adv)), &key, None)
        .await;
    let types: Vec<&str> = v["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["identity_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        (s, types),
        (200, vec!["CUSTOMIZED_USER", "AUTH_CODE"]),
        "{v}"
    );
}

async fn audience(w: &World, key: &str, adv: &str, query: &str, file: String) -> (u16, Value) {
    let r = w
        .http
        .post(w.edge.url(&format!("{}/audiences?{query}", base(adv))))
        .bearer_auth(key)
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn audiences_are_hashed_here_lookalikes_are_checked_and_catalogs_take_products() {
    let w = world().await;
    let (key, adv) = connected(&w).await;
    let emails: String = (0..150)
        .map(|i| format!("Buyer{i}@Example.com\n"))
        .collect();
    let (s, a) = audience(
        &w,
        &key,
        &adv,
        "name=Buyers&calculate_type=EMAIL_SHA256",
        format!("email\n{emails}not-an-email\n"),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(
        (
            a["identifiers"]["hashed_here"].as_u64(),
            a["identifiers"]["rejected"].as_u64()
        ),
        (Some(150), Some(1))
    );
    let uploaded = w.mock.mock.with_state(|s| {
        s.requests
            .iter()
            .find(|r| r.path.ends_with("/dmp/custom_audience/file/upload/"))
            .unwrap()
            .body
            .clone()
    });
    assert!(
        !uploaded.to_lowercase().contains("@example.com"),
        "no raw email leaves"
    );
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"buyer7@example.com",
    ));
    assert!(uploaded.contains(&digest));
    let source = a["custom_audience_id"].as_str().unwrap().to_string();
    let small: String = (0..50).map(|i| format!("{i:064x}\n")).collect();
    let (s, small) = audience(
        &w,
        &key,
        &adv,
        "name=Few&calculate_type=EMAIL_SHA256",
        small,
    )
    .await;
    assert_eq!(
        (s, small["identifiers"]["already_hashed"].as_u64()),
        (201, Some(50)),
        "{small}"
    );
    let (s, v) = audience(
        &w,
        &key,
        &adv,
        "name=X&calculate_type=MULTIPLE_TYPES",
        "a\n".into(),
    )
    .await;
    assert_eq!((s, field(&v)), (400, "calculate_type"));

    let lookalikes = format!("{}/audiences/lookalikes", base(&adv));
    let spec = json!({"name": "Like buyers", "source_audience_id": source, "location_ids": ["6252001"], "audience_size": "NARROW"});
    let (s, like) = w.call("POST", &lookalikes, &key, Some(spec.clone())).await;
    assert_eq!(s, 201, "{like}");
    for (patch, f, why) in [
        (
            json!({"source_audience_id": like["custom_audience_id"]}),
            "source_audience_id",
            "lookalike",
        ),
        (
            json!({"source_audience_id": small["custom_audience_id"]}),
            "source_audience_id",
            "at least 100",
        ),
        (
            json!({"source_audience_id": "123"}),
            "source_audience_id",
            "does not exist",
        ),
        (json!({"location_ids": []}), "location_ids", "location"),
        (json!({"audience_size": "HUGE"}), "audience_size", "NARROW"),
    ] {
        let mut body = spec.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = w.call("POST", &lookalikes, &key, Some(body)).await;
        assert_eq!((s, field(&v)), (400, f), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{v}");
    }
    assert_eq!(count(&w, "/dmp/custom_audience/lookalike/create/"), 1);
    let (s, list) = w
        .call("GET", &format!("{}/audiences", base(&adv)), &key, None)
        .await;
    assert_eq!(
        (s, list["list"].as_array().map(Vec::len)),
        (200, Some(3)),
        "{list}"
    );

    // Catalog: create, upsert (one refused here, one by TikTok... none), update by sku_id.
    let bc = "7000000000000000001";
    let (s, cat) = w.call("POST", &format!("{}/catalogs", base(&adv)), &key,
        Some(json!({"bc_id": bc, "name": "Shop", "catalog_conf": {"region_code": "US", "currency": "USD"}}))).await;
    assert_eq!(s, 201, "{cat}");
    let catalog_id = cat["catalog_id"].as_str().unwrap().to_string();
    let product = |sku: &str, price: &str| {
        json!({"sku_id": sku, "title": format!("Mug {sku}"), "image_url": "https://shop.example/m.jpg",
                                                   "availability": "IN_STOCK", "price_info": {"price": price, "currency": "USD"}})
    };
    let products = format!("{}/catalogs/{catalog_id}/products", base(&adv));
    let (s, r) = w.call("POST", &products, &key, Some(json!({"bc_id": bc, "products": [
        product("A", "10"), product("B", "12.5"), {"sku_id": "C", "title": "No image"}, product("A", "11")]}))).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (
            r["succeeded"].as_u64(),
            r["failed"].as_u64(),
            r["created"].as_u64()
        ),
        (Some(2), Some(2), Some(2)),
        "{r}"
    );
    assert_eq!(r["results"][2]["refused_by"], "tiktok-edge");
    assert!(
        r["results"][3]["error"]
            .as_str()
            .unwrap()
            .contains("more than once")
    );
    let (s, r) = w
        .call(
            "POST",
            &products,
            &key,
            Some(json!({"bc_id": bc, "products": [product("A", "9")]})),
        )
        .await;
    assert_eq!((s, r["updated"].as_u64()), (200, Some(1)), "{r}");
    let price = w
        .mock
        .mock
        .with_state(|s| s.catalogs[0].products["A"]["price_info"]["price"].clone());
    assert_eq!(price, "9");
    let (s, v) = w
        .call(
            "GET",
            &format!("{}/catalogs?bc_id={bc}", base(&adv)),
            &key,
            None,
        )
        .await;
    assert_eq!(
        (s, v["list"][0]["product_count"].as_u64()),
        (200, Some(2)),
        "{v}"
    );

    // A PRODUCT_SALES campaign that uses it.
    let (s, c) = w.call("POST", &format!("{}/campaigns", base(&adv)), &key, Some(json!({
        "campaign_name": "Shop sales", "objective_type": "PRODUCT_SALES", "campaign_product_source": "CATALOG"}))).await;
    assert_eq!(s, 201, "{c}");
    let ag = json!({"campaign_id": c["id"], "adgroup_name": "Catalog", "budget_mode": "BUDGET_MODE_DAY", "budget": 30,
                    "optimization_goal": "CLICK", "location_ids": ["6252001"]});
    let (s, v) = w
        .call(
            "POST",
            &format!("{}/adgroups", base(&adv)),
            &key,
            Some(ag.clone()),
        )
        .await;
    assert_eq!((s, field(&v)), (400, "catalog_id"), "{v}");
    let mut ag = ag;
    ag["catalog_id"] = json!(catalog_id);
    let (s, v) = w
        .call("POST", &format!("{}/adgroups", base(&adv)), &key, Some(ag))
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn tiktok_errors_keep_their_code_and_map_to_our_status_and_orgs_stay_apart() {
    let w = world().await;
    let (key, adv) = connected(&w).await;
    let campaigns = format!("{}/campaigns", base(&adv));
    let body = json!({"campaign_name": "E", "objective_type": "REACH"});
    for (fault, status, code) in [
        (
            json!({"count": 1, "path": "/campaign/create/", "code": 40002, "message": "budget: invalid"}),
            422,
            "tiktok_invalid_input",
        ),
        (
            json!({"count": 1, "path": "/campaign/create/", "code": 40001, "message": "No permission to operate advertiser."}),
            403,
            "tiktok_permission_denied",
        ),
        (
            json!({"count": 3, "path": "/campaign/create/", "code": 40100, "message": "Too many requests"}),
            429,
            "tiktok_rate_limited",
        ),
        (
            json!({"count": 3, "path": "/campaign/create/", "code": 50000, "message": "System error"}),
            502,
            "upstream_error",
        ),
    ] {
        w.inject(fault.clone()).await;
        let r = w
            .http
            .post(w.edge.url(&campaigns))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{fault}: {v}"
        );
        assert_eq!(v["error"]["tiktok_code"], fault["code"]);
        assert!(
            v["error"]["tiktok_request_id"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
        );
        assert_eq!(retry_after.is_some(), status == 429);
    }
    assert_eq!(
        count(&w, "/campaign/create/"),
        8,
        "40100 and 50000 retried 3 times each"
    );
    // A transient 50000 is retried into success.
    w.inject(json!({"count": 1, "path": "/campaign/create/", "code": 50000}))
        .await;
    let (s, v) = w.call("POST", &campaigns, &key, Some(body.clone())).await;
    assert_eq!(s, 201, "{v}");

    // Another org's key cannot reach acme's advertisers, and its own org has none connected.
    let globex = w.org("globex").await;
    let (s, _) = w.call("GET", &campaigns, &globex, None).await;
    assert_eq!(s, 403);
    let (s, v) = w
        .call(
            "GET",
            &format!("/v1/orgs/globex/advertisers/{adv}/campaigns"),
            &globex,
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = w
        .call(
            "GET",
            &format!("/v1/orgs/globex/advertisers/{adv}/campaigns"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = w.call("GET", &campaigns, "tte_nope", None).await;
    assert_eq!(s, 401);
    let (s, v) = w
        .call("GET", &format!("{}/nothing", base(&adv)), &key, None)
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = w.call("DELETE", &campaigns, &key, None).await;
    assert_eq!(s, 405, "{v}");
    let (s, v) = w
        .call("GET", &format!("{campaigns}?page_size=5000"), &key, None)
        .await;
    assert_eq!((s, field(&v)), (400, "page_size"));
}

/// A video larger than a component instance's whole memory (128 MiB) goes through: the
/// file is streamed, never held.
#[tokio::test]
async fn a_video_larger_than_the_instance_memory_is_streamed_through() {
    let w = world().await;
    let (key, adv) = connected(&w).await;
    let big = mp4(1080, 1920, 60, 136 << 20, true);
    let started = std::time::Instant::now();
    let (s, v) = upload(&w, &key, &adv, "long.mp4", big.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["size"], big.len());
    let md5 = w
        .mock
        .mock
        .with_state(|s| s.videos[0].info["signature"].clone());
    assert_eq!(md5, v["video_signature"]);
    eprintln!("{} MiB through in {:?}", big.len() >> 20, started.elapsed());
}
