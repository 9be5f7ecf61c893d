//! Identities and Spark Ads (tiktok-api.md §5.2). Creators' post codes are made with
//! `POST /_mock/spark/post_code` (in TikTok, the creator generates them in the app).

use crate::envelope::{Reply, paginate};
use crate::model::Token;
use crate::oauth::covers;
use crate::request::{Params, paging};
use crate::state::State;
use serde_json::{Value, json};

// The stored types live in `model`; re-exported under their old paths.
use crate::model::{Identity, PostCode};

/// Makes a post code, as a creator would in the TikTok app.
pub fn new_post_code(s: &mut State) -> PostCode {
    let post = PostCode {
        code: format!("#{}", s.new_secret()),
        item_id: s.new_id(),
        identity_id: s.new_id(),
        display_name: "mock_creator".into(),
        advertiser_id: None,
    };
    s.post_codes.push(post.clone());
    post
}

/// `POST /tt_video/authorize/ {advertiser_id, auth_code}`: binds a post code to the account.
pub fn authorize(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let code = p.required_str("auth_code")?;
    let post = s
        .post_codes
        .iter_mut()
        .find(|c| c.code == code)
        .ok_or_else(|| {
            Reply::param("auth_code: The authorization code is invalid or has expired.")
        })?;
    match &post.advertiser_id {
        Some(bound) if *bound != advertiser_id => Err(Reply::param(
            "auth_code: The authorization code is already bound to another ad account.",
        )),
        _ => {
            post.advertiser_id = Some(advertiser_id);
            Ok(Reply::ok(json!({})))
        }
    }
}

/// `GET /tt_video/info/?advertiser_id&auth_code`.
pub fn info(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let code = p.required_str("auth_code")?;
    let post = s
        .post_codes
        .iter()
        .find(|c| c.code == code && c.advertiser_id.as_deref() == Some(advertiser_id.as_str()))
        .ok_or_else(|| {
            Reply::param(
                "auth_code: Not authorized for this ad account; call /tt_video/authorize/ first.",
            )
        })?;
    Ok(Reply::ok(post.to_json()))
}

/// `GET /tt_video/list/?advertiser_id` (page_size ≤ 50).
pub fn list(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let (page, page_size) = paging(p, 50)?;
    let posts: Vec<Value> = s
        .post_codes
        .iter()
        .filter(|c| c.advertiser_id.as_deref() == Some(advertiser_id.as_str()))
        .map(PostCode::to_json)
        .collect();
    let (list, page_info) = paginate(&posts, page, page_size);
    Ok(Reply::ok(json!({"list": list, "page_info": page_info})))
}

/// `POST /identity/create/ {advertiser_id, display_name, image_uri?}` (CUSTOMIZED_USER).
pub fn create_identity(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let display_name = p.required_str("display_name")?;
    if display_name.chars().count() > 100 {
        return Err(Reply::param(
            "display_name: Length must be between 1 and 100.",
        ));
    }
    let image_uri = p.str("image_uri")?;
    let identity = Identity {
        id: s.new_id(),
        advertiser_id,
        display_name,
        image_uri,
    };
    s.identities.push(identity.clone());
    Ok(Reply::ok(json!({"identity_id": identity.id})))
}

/// `GET /identity/get/?advertiser_id[&identity_type]`.
pub fn get_identities(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let kind = p
        .str("identity_type")?
        .unwrap_or_else(|| "CUSTOMIZED_USER".into());
    let mut list: Vec<Value> = Vec::new();
    if kind == "CUSTOMIZED_USER" {
        list.extend(s.identities.iter().filter(|i| i.advertiser_id == advertiser_id).map(|i| {
            json!({"identity_id": i.id, "identity_type": "CUSTOMIZED_USER", "display_name": i.display_name, "profile_image": i.image_uri})
        }));
    } else if kind == "AUTH_CODE" {
        list.extend(s.post_codes.iter().filter(|c| c.advertiser_id.as_deref() == Some(advertiser_id.as_str())).map(|c| {
            json!({"identity_id": c.identity_id, "identity_type": "AUTH_CODE", "display_name": c.display_name})
        }));
    } else if !matches!(kind.as_str(), "TT_USER" | "BC_AUTH_TT") {
        return Err(Reply::param(
            "identity_type: Must be one of: CUSTOMIZED_USER, AUTH_CODE, TT_USER, BC_AUTH_TT.",
        ));
    }
    let (page, page_size) = paging(p, 100)?;
    let (list, page_info) = paginate(&list, page, page_size);
    Ok(Reply::ok(
        json!({"identity_list": list, "page_info": page_info}),
    ))
}
