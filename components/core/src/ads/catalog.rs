//! TikTok Shopping catalogs (tiktok-api.md §5.4): Business-Center scoped (`bc_id`),
//! products upserted by `sku_id` in batches, each product's outcome read back from the
//! product log. A PRODUCT_SALES campaign with `campaign_product_source: CATALOG` and an
//! ad group carrying the `catalog_id` then promotes them (checked in `campaigns`).

use crate::ApiError;
use crate::ads::idempotency::{self, Outcome};
use crate::ads::rules::is_id;
use crate::platform::env::Env;
use crate::tenancy::advertiser_access::AdvertiserAccess;
use crate::tiktok::client::{Call, id_string};
use crate::tiktok::codes::TikTokError;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

pub const CATALOG_TYPES: &[&str] = &[
    "AUTO",
    "DESTINATION",
    "ECOM",
    "ENTERTAINMENT",
    "FLIGHT",
    "HOTEL",
];
pub const AVAILABILITY: &[&str] = &[
    "IN_STOCK",
    "AVAILABLE_FOR_ORDER",
    "PREORDER",
    "OUT_OF_STOCK",
    "DISCONTINUED",
];
/// Most products one of our requests takes (split into TikTok batches).
pub const MAX_PRODUCTS: usize = 20_000;

fn bc_id(body: &Value) -> Result<String, ApiError> {
    body["bc_id"]
        .as_str()
        .filter(|s| is_id(s))
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::invalid(
                "bc_id",
                "is required: the Business Center's numeric id, as a string",
            )
        })
}

/// `POST catalogs {bc_id, name, catalog_type?, catalog_conf{region_code, currency?}}`.
pub fn create(
    env: &Env,
    access: &AdvertiserAccess,
    body: &Value,
    key: Option<&str>,
) -> Result<Outcome, ApiError> {
    let bc = bc_id(body)?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    if name.trim().is_empty() || name.chars().count() > 128 {
        return Err(ApiError::invalid("name", "must be 1 to 128 characters"));
    }
    let kind = match &body["catalog_type"] {
        Value::Null => "ECOM",
        Value::String(s) if CATALOG_TYPES.contains(&s.as_str()) => s.as_str(),
        _ => {
            return Err(ApiError::invalid(
                "catalog_type",
                format!("must be one of {}", CATALOG_TYPES.join(", ")),
            ));
        }
    };
    let conf = &body["catalog_conf"];
    let region = conf["region_code"]
        .as_str()
        .filter(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
        .ok_or_else(|| {
            ApiError::invalid(
                "catalog_conf.region_code",
                "is required: a two-letter country code such as US",
            )
        })?;
    let mut send_conf = json!({"region_code": region});
    match &conf["currency"] {
        Value::Null => {}
        Value::String(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
            send_conf["currency"] = json!(c)
        }
        _ => {
            return Err(ApiError::invalid(
                "catalog_conf.currency",
                "must be an ISO 4217 code such as USD",
            ));
        }
    }
    if let Some(channel) = conf.get("channel").filter(|v| !v.is_null()) {
        send_conf["channel"] = channel.clone();
    }
    let scope = format!("{}/catalogs", access.advertiser.advertiser_id);
    idempotency::run(env, &access.org, &scope, key, body, |request_id| {
        let reply = access.call(
            env,
            Call::post(
                "/catalog/create/",
                json!({"bc_id": bc, "name": name, "catalog_type": kind, "catalog_conf": send_conf, "request_id": request_id}),
            ),
        )?;
        Ok((
            201,
            json!({
                "catalog_id": id_string(&reply.data["catalog_id"]),
                "bc_id": bc, "name": name, "catalog_type": kind,
                "tiktok_request_id": reply.request_id,
            }),
        ))
    })
}

/// `GET catalogs?bc_id=`.
pub fn list(
    env: &Env,
    access: &AdvertiserAccess,
    bc: &str,
    page: u32,
    page_size: u32,
) -> Result<Value, ApiError> {
    if !is_id(bc) {
        return Err(ApiError::invalid(
            "bc_id",
            "must be the Business Center's numeric id",
        ));
    }
    let reply = access.call(
        env,
        Call::get("/catalog/get/")
            .query("bc_id", bc)
            .query("page", page.to_string())
            .query("page_size", page_size.to_string()),
    )?;
    Ok(json!({"list": reply.data["list"], "page_info": reply.data["page_info"]}))
}

/// One product's outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProductResult {
    pub index: usize,
    pub sku_id: Option<String>,
    pub ok: bool,
    /// CREATE or UPDATE, as TikTok's log says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `tiktok` when TikTok refused it, `tiktok-edge` when it was never sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused_by: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpsertReport {
    pub catalog_id: String,
    pub received: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub created: usize,
    pub updated: usize,
    pub feed_log_ids: Vec<String>,
    pub results: Vec<ProductResult>,
}

/// Why a product cannot be sent; `None` when it can.
fn check_product(p: &Value) -> Result<String, String> {
    let sku = p["sku_id"].as_str().map(str::trim).unwrap_or_default();
    if sku.is_empty() || sku.chars().count() > 100 {
        return Err("sku_id: is required, 1 to 100 characters".into());
    }
    let title = p["title"].as_str().unwrap_or_default();
    if title.trim().is_empty() || title.chars().count() > 500 {
        return Err("title: is required, 1 to 500 characters".into());
    }
    if let Some(d) = p.get("description").filter(|v| !v.is_null())
        && d.as_str().is_none_or(|d| d.chars().count() > 10_000)
    {
        return Err("description: must be text of at most 10,000 characters".into());
    }
    if let Some(a) = p.get("availability").filter(|v| !v.is_null())
        && !a.as_str().is_some_and(|a| AVAILABILITY.contains(&a))
    {
        return Err(format!(
            "availability: must be one of {}",
            AVAILABILITY.join(", ")
        ));
    }
    for field in ["image_url", "landing_page_url"] {
        if let Some(u) = p.get(field).filter(|v| !v.is_null()) {
            let ok = u
                .as_str()
                .and_then(|u| url::Url::parse(u).ok())
                .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(format!("{field}: must be an http(s) URL"));
            }
        }
    }
    if p["image_url"].is_null() {
        return Err("image_url: is required".into());
    }
    if let Some(price) = p.get("price_info").filter(|v| !v.is_null()) {
        let amount = &price["price"];
        let ok = amount
            .as_f64()
            .or_else(|| amount.as_str().and_then(|s| s.parse().ok()))
            .is_some_and(|v: f64| v.is_finite() && v >= 0.0);
        if !ok {
            return Err("price_info.price: must be a number ≥ 0".into());
        }
        if let Some(c) = price.get("currency").filter(|v| !v.is_null())
            && !c
                .as_str()
                .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err("price_info.currency: must be an ISO 4217 code".into());
        }
    }
    Ok(sku.to_string())
}

/// `POST catalogs/{id}/products {bc_id, products}`: checks each product, sends the good
/// ones in batches of `catalog_batch_size` (1,000), and reads each batch's product log.
pub fn upsert_products(
    env: &Env,
    access: &AdvertiserAccess,
    catalog_id: &str,
    body: &Value,
) -> Result<UpsertReport, ApiError> {
    if !is_id(catalog_id) {
        return Err(ApiError::invalid(
            "catalog_id",
            "must be TikTok's numeric id",
        ));
    }
    let bc = bc_id(body)?;
    let products = body["products"]
        .as_array()
        .filter(|p| (1..=MAX_PRODUCTS).contains(&p.len()))
        .ok_or_else(|| {
            ApiError::invalid(
                "products",
                format!("must be a list of 1 to {MAX_PRODUCTS} products"),
            )
        })?;
    let batch_size = env.int_var("catalog_batch_size", 1000, 1..=5000)? as usize;
    let mut results: Vec<ProductResult> = Vec::with_capacity(products.len());
    let mut sendable: Vec<(usize, String)> = Vec::new();
    let mut seen = HashSet::new();
    for (i, p) in products.iter().enumerate() {
        let verdict = check_product(p).and_then(|sku| {
            if seen.insert(sku.clone()) {
                Ok(sku)
            } else {
                Err("sku_id: appears more than once in this request".into())
            }
        });
        match verdict {
            Ok(sku) => sendable.push((i, sku)),
            Err(e) => results.push(ProductResult {
                index: i,
                sku_id: p["sku_id"].as_str().map(str::to_string),
                ok: false,
                action: None,
                error: Some(e),
                refused_by: Some("tiktok-edge"),
            }),
        }
    }
    let mut feed_log_ids = Vec::new();
    for batch in sendable.chunks(batch_size) {
        // Sent with the sku_id as checked (trimmed), so the log matches it.
        let items: Vec<Value> = batch
            .iter()
            .map(|(i, sku)| {
                let mut p = products[*i].clone();
                p["sku_id"] = json!(sku);
                p
            })
            .collect();
        let sent = (|| {
            let reply = access.call(
                env,
                Call::post(
                    "/catalog/product/upload/",
                    json!({"bc_id": bc, "catalog_id": catalog_id, "products": items}),
                ),
            )?;
            let log_id = id_string(&reply.data["feed_log_id"]).ok_or_else(|| {
                ApiError::Internal("TikTok's product upload answer has no feed_log_id".into())
            })?;
            // TikTok took the batch: if its log cannot be read now, the products are
            // reported unknown with the log id to look at, never as refused.
            let log = product_log(env, access, &bc, catalog_id, &log_id).unwrap_or_else(|e| {
                json!({"unread": format!("TikTok took this batch, but its product log {log_id} could not be read ({e}); read it later")})
            });
            Ok::<_, ApiError>((log_id, log))
        })();
        let (log_id, log) = match sent {
            Ok(v) => v,
            // Once a batch is applied the caller needs the whole truth, not an error:
            // the rest of this batch is reported refused, and the next batches go on.
            Err(ApiError::Upstream(u))
                if !feed_log_ids.is_empty()
                    && u.class != crate::platform::error::UpstreamClass::Reauthorize =>
            {
                for (i, sku) in batch {
                    results.push(ProductResult {
                        index: *i,
                        sku_id: Some(sku.clone()),
                        ok: false,
                        action: None,
                        error: Some(format!(
                            "TikTok refused this batch: {} {} (request_id {})",
                            u.code, u.message, u.request_id
                        )),
                        refused_by: Some("tiktok"),
                    });
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let outcomes = log["product_results"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, sku) in batch {
            let r = outcomes
                .iter()
                .find(|r| r["sku_id"].as_str() == Some(sku.as_str()));
            results.push(match r {
                Some(r) if r["status"] == "SUCCESS" => ProductResult {
                    index: *i,
                    sku_id: Some(sku.clone()),
                    ok: true,
                    action: r["action"].as_str().map(str::to_string),
                    error: None,
                    refused_by: None,
                },
                Some(r) => ProductResult {
                    index: *i,
                    sku_id: Some(sku.clone()),
                    ok: false,
                    action: None,
                    error: Some(r["error_message"].as_str().unwrap_or("refused").to_string()),
                    refused_by: Some("tiktok"),
                },
                None => {
                    ProductResult {
                        index: *i,
                        sku_id: Some(sku.clone()),
                        ok: false,
                        action: None,
                        error: Some(log["unread"].as_str().map(str::to_string).unwrap_or_else(
                            || format!("TikTok's product log {log_id} does not mention it"),
                        )),
                        refused_by: Some("tiktok"),
                    }
                }
            });
        }
        feed_log_ids.push(log_id);
    }
    results.sort_by_key(|r| r.index);
    let succeeded = results.iter().filter(|r| r.ok).count();
    let count = |a: &str| {
        results
            .iter()
            .filter(|r| r.action.as_deref() == Some(a))
            .count()
    };
    Ok(UpsertReport {
        catalog_id: catalog_id.to_string(),
        received: products.len(),
        succeeded,
        failed: results.len() - succeeded,
        created: count("CREATE"),
        updated: count("UPDATE"),
        feed_log_ids,
        results,
    })
}

/// The product log once TikTok has processed the upload (polled up to 30 s).
fn product_log(
    env: &Env,
    access: &AdvertiserAccess,
    bc: &str,
    catalog_id: &str,
    log_id: &str,
) -> Result<Value, ApiError> {
    for _ in 0..30 {
        let reply = access.call(
            env,
            Call::get("/catalog/product/log/")
                .query("bc_id", bc)
                .query("catalog_id", catalog_id)
                .query("feed_log_id", log_id),
        )?;
        if reply.data["status"] == "PROCESS_FINISHED" {
            return Ok(reply.data);
        }
        env.transport.sleep(Duration::from_secs(1));
    }
    Err(ApiError::from(TikTokError {
        code: 40201,
        message: format!(
            "TikTok has not finished processing product upload {log_id}; its log will say later"
        ),
        request_id: String::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn product() -> Value {
        json!({"sku_id": "SKU-1", "title": "Blue mug", "image_url": "https://shop.example/mug.jpg",
               "availability": "IN_STOCK", "price_info": {"price": "12.50", "currency": "USD"}})
    }

    #[test]
    fn products_are_checked_before_they_are_sent() {
        assert_eq!(check_product(&product()).unwrap(), "SKU-1");
        for (patch, field) in [
            (json!({"sku_id": ""}), "sku_id"),
            (json!({"title": null}), "title"),
            (json!({"availability": "SOLD"}), "availability"),
            (json!({"image_url": "ftp://x/y.jpg"}), "image_url"),
            (json!({"image_url": null}), "image_url"),
            (json!({"price_info": {"price": "free"}}), "price_info.price"),
            (json!({"price_info": {"price": -1}}), "price_info.price"),
            (
                json!({"price_info": {"price": 1, "currency": "usd"}}),
                "price_info.currency",
            ),
        ] {
            let mut p = product();
            for (k, v) in patch.as_object().unwrap() {
                p[k] = v.clone();
            }
            let e = check_product(&p).unwrap_err();
            assert!(e.starts_with(field), "{patch}: {e}");
        }
    }

    #[test]
    fn a_batch_refused_after_another_was_applied_is_reported_not_lost() {
        use crate::tenancy::connections::testing::advertiser_access;
        use crate::testing::TestEnv;
        use crate::tiktok::client::fake::{err, ok};
        let mut t = TestEnv::new();
        t.config.0.insert("catalog_batch_size".into(), "1".into());
        let access = advertiser_access(&t, "acme");
        let mut b = product();
        b["sku_id"] = json!("SKU-2");
        t.script(vec![
            ok(json!({"feed_log_id": "9"})),
            ok(json!({"status": "PROCESS_FINISHED", "product_results": [{"sku_id": "SKU-1", "status": "SUCCESS", "action": "CREATE"}]})),
            err(40002, "products.0.title: too long"),
        ]);
        let body = json!({"bc_id": "7", "products": [product(), b]});
        let r = upsert_products(&t.env(), &access, "5", &body).unwrap();
        assert_eq!((r.succeeded, r.failed, r.created), (1, 1, 1));
        assert!(r.results[1].error.as_ref().unwrap().contains("40002"));
        // TikTok took a batch but its log cannot be read: unknown, never "refused".
        t.script(vec![
            ok(json!({"feed_log_id": "10"})),
            err(40001, "No permission to read the log"),
        ]);
        let one = json!({"bc_id": "7", "products": [product()]});
        let r = upsert_products(&t.env(), &access, "5", &one).unwrap();
        assert_eq!(r.feed_log_ids, vec!["10"]);
        let e = r.results[0].error.as_ref().unwrap();
        assert!(e.contains("took this batch") && e.contains("10"), "{e}");
        // Refused before anything was applied: TikTok's error, mapped.
        t.script(vec![err(40001, "No permission")]);
        let e = upsert_products(&t.env(), &access, "5", &body).unwrap_err();
        assert_eq!(e.status(), 403);
    }
}
