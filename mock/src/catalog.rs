//! Catalogs and products (tiktok-api.md §5.4): Business-Center scoped, products upserted
//! by `sku_id`, per-product results in the product log.

use crate::envelope::{Reply, paginate};
use crate::request::{Params, paging};
use crate::state::State;
use serde_json::{Map, Value, json};

// The stored types live in `model`; re-exported under their old paths.
use crate::model::{Catalog, FeedLog};

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

/// `POST /catalog/create/ {bc_id, name, catalog_type, catalog_conf{region_code, currency}}`.
pub fn create(s: &mut State, p: &Params) -> Result<Reply, Reply> {
    let bc_id = p.required_str("bc_id")?;
    let name = p.required_str("name")?;
    if name.chars().count() > 128 {
        return Err(Reply::param("name: Length must be between 1 and 128."));
    }
    let catalog_type = p.str("catalog_type")?.unwrap_or_else(|| "ECOM".into());
    if !CATALOG_TYPES.contains(&catalog_type.as_str()) {
        return Err(Reply::param(format!(
            "catalog_type: Must be one of: {}.",
            CATALOG_TYPES.join(", ")
        )));
    }
    let conf = p.get("catalog_conf").cloned().unwrap_or(json!({}));
    if conf.get("region_code").and_then(Value::as_str).is_none() {
        return Err(Reply::param(
            "catalog_conf.region_code: Missing data for required field.",
        ));
    }
    s.idempotent(&bc_id, p, |s| {
        let catalog = Catalog {
            id: s.new_id(),
            bc_id: bc_id.clone(),
            name,
            catalog_type,
            conf,
            products: Map::new(),
        };
        let id = catalog.id.clone();
        s.catalogs.push(catalog);
        Ok(json!({"catalog_id": id}))
    })
}

fn catalog_json(c: &Catalog) -> Value {
    json!({"catalog_id": c.id, "name": c.name, "catalog_type": c.catalog_type, "catalog_conf": c.conf, "product_count": c.products.len()})
}

/// `GET /catalog/get/?bc_id[&catalog_id]`.
pub fn get(s: &State, p: &Params) -> Result<Reply, Reply> {
    let bc_id = p.required_str("bc_id")?;
    let only = p.str("catalog_id")?;
    let (page, page_size) = paging(p, 1000)?;
    let list: Vec<Value> = s
        .catalogs
        .iter()
        .filter(|c| c.bc_id == bc_id && only.as_ref().is_none_or(|id| *id == c.id))
        .map(catalog_json)
        .collect();
    if only.is_some() && list.is_empty() {
        return Err(Reply::error(
            40007,
            "catalog_id: The catalog does not exist.",
        ));
    }
    let (list, page_info) = paginate(&list, page, page_size);
    Ok(Reply::ok(json!({"list": list, "page_info": page_info})))
}

fn check_product(product: &Value) -> Result<String, (Option<String>, String)> {
    let sku = product
        .get("sku_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let Some(sku) = sku else {
        return Err((None, "sku_id: Missing data for required field.".into()));
    };
    let fail = |m: &str| Err((Some(sku.clone()), m.to_string()));
    if product
        .get("title")
        .and_then(Value::as_str)
        .is_none_or(|t| t.is_empty() || t.chars().count() > 500)
    {
        return fail("title: Length must be between 1 and 500.");
    }
    if let Some(a) = product.get("availability")
        && !a.as_str().is_some_and(|a| AVAILABILITY.contains(&a))
    {
        return fail("availability: Not a valid availability.");
    }
    if let Some(url) = product.get("image_url")
        && !url
            .as_str()
            .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"))
    {
        return fail("image_url: Not a valid URL.");
    }
    if let Some(price) = product.get("price_info") {
        let ok = price
            .get("price")
            .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
            .is_some_and(|p| p >= 0.0);
        if !ok {
            return fail("price_info.price: Not a valid number.");
        }
    }
    Ok(sku)
}

/// `POST /catalog/product/upload/ {bc_id, catalog_id, products[]}`: upserts valid products by
/// `sku_id`, records per-product results, answers `feed_log_id`.
pub fn upload_products(s: &mut State, p: &Params) -> Result<Reply, Reply> {
    let bc_id = p.required_str("bc_id")?;
    let catalog_id = p.required_str("catalog_id")?;
    let products = match p.get("products") {
        Some(Value::Array(list)) if !list.is_empty() && list.len() <= 5000 => list.clone(),
        Some(Value::Array(_)) => {
            return Err(Reply::param("products: Length must be between 1 and 5000."));
        }
        _ => return Err(Reply::param("products: Missing data for required field.")),
    };
    let log_id = s.new_id();
    let catalog = s
        .catalogs
        .iter_mut()
        .find(|c| c.id == catalog_id && c.bc_id == bc_id)
        .ok_or_else(|| Reply::error(40007, "catalog_id: The catalog does not exist."))?;
    let mut results = Vec::new();
    for product in &products {
        match check_product(product) {
            Ok(sku) => {
                let action = if catalog.products.contains_key(&sku) {
                    "UPDATE"
                } else {
                    "CREATE"
                };
                catalog.products.insert(sku.clone(), product.clone());
                results.push(json!({"sku_id": sku, "status": "SUCCESS", "action": action}));
            }
            Err((sku, message)) => {
                results.push(json!({"sku_id": sku, "status": "FAILED", "error_message": message}))
            }
        }
    }
    s.feed_logs.push(FeedLog {
        id: log_id.clone(),
        catalog_id,
        results,
    });
    Ok(Reply::ok(json!({"feed_log_id": log_id})))
}

/// `GET /catalog/product/log/?bc_id&catalog_id&feed_log_id`.
pub fn product_log(s: &State, p: &Params) -> Result<Reply, Reply> {
    let _bc_id = p.required_str("bc_id")?;
    let catalog_id = p.required_str("catalog_id")?;
    let feed_log_id = p.required_str("feed_log_id")?;
    let log = s
        .feed_logs
        .iter()
        .find(|l| l.id == feed_log_id && l.catalog_id == catalog_id)
        .ok_or_else(|| Reply::error(40007, "feed_log_id: The log does not exist."))?;
    let failed = log
        .results
        .iter()
        .filter(|r| r["status"] == "FAILED")
        .count();
    Ok(Reply::ok(json!({
        "status": "PROCESS_FINISHED",
        "product_count": {"total": log.results.len(), "success": log.results.len() - failed, "failed": failed},
        "product_results": log.results,
    })))
}
