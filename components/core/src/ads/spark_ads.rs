//! Identities and Spark Ads (tiktok-api.md §5.2): a creator's post code is bound to the
//! ad account (`/tt_video/authorize/`), read (`/tt_video/info/`), and promoted as an ad
//! with `identity_type: AUTH_CODE` and the post's `tiktok_item_id`. TikTok accounts the
//! organization connected (creator connections) are its TT_USER identities.

use crate::ApiError;
use crate::ads::entities;
use crate::ads::idempotency::{self, Outcome};
use crate::ads::rules::{Kind, is_id};
use crate::platform::env::Env;
use crate::tenancy::advertiser_access::AdvertiserAccess;
use crate::tenancy::connections::{self, Status};
use crate::tiktok::client::{Call, id_string};
use serde_json::{Map, Value, json};

fn auth_code(body: &Value) -> Result<String, ApiError> {
    let code = body["auth_code"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("auth_code", "is required: the creator's post code"))?
        .trim();
    if code.is_empty() || code.len() > 512 || code.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "auth_code",
            "must be 1 to 512 characters",
        ));
    }
    Ok(code.to_string())
}

/// What a post code gives: the post, its creator's identity and the video.
fn post_info(env: &Env, access: &AdvertiserAccess, code: &str) -> Result<Value, ApiError> {
    let reply = access.call(
        env,
        Call::get("/tt_video/info/")
            .query("advertiser_id", &access.advertiser.advertiser_id)
            .query("auth_code", code),
    )?;
    let d = reply.data;
    let item_id = id_string(&d["item_info"]["item_id"])
        .ok_or_else(|| ApiError::Internal("TikTok's post info has no item_id".into()))?;
    let identity_id = id_string(&d["user_info"]["identity_id"])
        .ok_or_else(|| ApiError::Internal("TikTok's post info has no identity_id".into()))?;
    Ok(json!({
        "auth_code": code,
        "tiktok_item_id": item_id,
        "identity_type": "AUTH_CODE",
        "identity_id": identity_id,
        "display_name": d["user_info"]["display_name"],
        "item": d["item_info"],
        "video": d["video_info"],
    }))
}

/// `POST spark/authorize {auth_code}`: binds the post code to the ad account and answers
/// what an ad needs (`identity_id`, `tiktok_item_id`).
pub fn authorize(env: &Env, access: &AdvertiserAccess, body: &Value) -> Result<Value, ApiError> {
    let code = auth_code(body)?;
    access.call(
        env,
        Call::post(
            "/tt_video/authorize/",
            json!({"advertiser_id": access.advertiser.advertiser_id, "auth_code": code}),
        ),
    )?;
    post_info(env, access, &code)
}

/// `GET spark/posts`: the posts authorized for this ad account.
pub fn posts(
    env: &Env,
    access: &AdvertiserAccess,
    page: u32,
    page_size: u32,
) -> Result<Value, ApiError> {
    crate::ads::entities::page_of(env, access, "/tt_video/list/", page, page_size, 50)
}

/// `GET identities`: the account's CUSTOMIZED_USER and AUTH_CODE identities from TikTok,
/// and the organization's connected TikTok accounts as TT_USER.
pub fn identities(env: &Env, access: &AdvertiserAccess) -> Result<Value, ApiError> {
    let mut list = Vec::new();
    for kind in ["CUSTOMIZED_USER", "AUTH_CODE"] {
        let reply = access.call(
            env,
            Call::get("/identity/get/")
                .query("advertiser_id", &access.advertiser.advertiser_id)
                .query("identity_type", kind)
                .query("page_size", "100"),
        )?;
        list.extend(
            reply.data["identity_list"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    for c in connections::list(env, &access.org)? {
        if c.kind == crate::tenancy::connections::Kind::Creator
            && c.status == Status::Active
            && let Some(open_id) = &c.open_id
        {
            list.push(json!({
                "identity_type": "TT_USER", "identity_id": open_id, "connection_id": c.id,
            }));
        }
    }
    Ok(json!({"identities": list}))
}

/// `POST identities {display_name, image_uri?}`: a CUSTOMIZED_USER identity for non-Spark ads.
pub fn create_identity(
    env: &Env,
    access: &AdvertiserAccess,
    body: &Value,
    key: Option<&str>,
) -> Result<Outcome, ApiError> {
    let name = body["display_name"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("display_name", "is required"))?;
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid(
            "display_name",
            "must be 1 to 100 characters",
        ));
    }
    let mut send = json!({"advertiser_id": access.advertiser.advertiser_id, "display_name": name});
    if let Some(uri) = body.get("image_uri").filter(|v| !v.is_null()) {
        let uri = uri
            .as_str()
            .ok_or_else(|| ApiError::invalid("image_uri", "must be a string"))?;
        send["image_uri"] = json!(uri);
    }
    let scope = format!("{}/identities", access.advertiser.advertiser_id);
    idempotency::run(env, &access.org, &scope, key, body, |_| {
        let reply = access.call(env, Call::post("/identity/create/", send))?;
        Ok((
            201,
            json!({
                "identity_id": id_string(&reply.data["identity_id"]),
                "identity_type": "CUSTOMIZED_USER",
                "tiktok_request_id": reply.request_id,
            }),
        ))
    })
}

/// `POST spark/ads`: a Spark Ad in `adgroup_id`, from a post code (`auth_code`) or from a
/// connected TikTok account's post (`identity_type: TT_USER`, `identity_id` = its
/// open_id, `tiktok_item_id`). Other creative fields (`ad_name`, `call_to_action`,
/// `landing_page_url`, `ad_text`) are passed on after the ad checks.
pub fn create_ad(
    env: &Env,
    access: &AdvertiserAccess,
    body: &Value,
    key: Option<&str>,
) -> Result<Outcome, ApiError> {
    // The key first: a replay reads no post and makes no TikTok call.
    let scope = format!("{}/spark-ads", access.advertiser.advertiser_id);
    idempotency::run(env, &access.org, &scope, key, body, |request_id| {
        spark_ad_once(env, access, body, request_id)
    })
}

fn spark_ad_once(
    env: &Env,
    access: &AdvertiserAccess,
    body: &Value,
    request_id: &str,
) -> Result<(u16, Value), ApiError> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    };
    let adgroup_id = fields
        .get("adgroup_id")
        .and_then(Value::as_str)
        .filter(|id| is_id(id))
        .ok_or_else(|| ApiError::invalid("adgroup_id", "is required: TikTok's numeric id"))?
        .to_string();
    let mut creative: Map<String, Value> = fields
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "adgroup_id" | "auth_code"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    creative.insert("ad_format".into(), json!("SINGLE_VIDEO"));
    if fields.contains_key("auth_code") {
        let code = auth_code(body)?;
        let post = post_info(env, access, &code)?;
        creative.insert("identity_type".into(), json!("AUTH_CODE"));
        creative.insert("identity_id".into(), post["identity_id"].clone());
        creative.insert("tiktok_item_id".into(), post["tiktok_item_id"].clone());
    } else {
        match fields.get("identity_type").and_then(Value::as_str) {
            Some("TT_USER") => {
                let open_id = fields
                    .get("identity_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "identity_id",
                            "is required: the TikTok account's open_id",
                        )
                    })?;
                let connected = connections::list(env, &access.org)?.into_iter().any(|c| {
                    c.kind == crate::tenancy::connections::Kind::Creator
                        && c.status == Status::Active
                        && c.open_id.as_deref() == Some(open_id)
                });
                if !connected {
                    return Err(ApiError::invalid(
                        "identity_id",
                        "is not a TikTok account this organization has connected (or its connection needs re-authorization)",
                    ));
                }
            }
            _ => {
                return Err(ApiError::invalid(
                    "auth_code",
                    "is required (a creator's post code), or identity_type TT_USER with identity_id and tiktok_item_id",
                ));
            }
        }
    }
    let ad = json!({"adgroup_id": adgroup_id, "creatives": [Value::Object(creative)]});
    entities::create_once(env, access, Kind::Ad, &ad, request_id)
}
