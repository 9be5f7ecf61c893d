//! Advertiser OAuth (tiktok-api.md §2) and creator tokens (§2.1).

use crate::Mock;
use crate::envelope::{Reply, Response, paginate, text_response};
use crate::model::{AuthCode, CreatorToken, Token};
use crate::request::{Params, paging};
use crate::state::{AUTH_CODE_TTL, CREATOR_ACCESS_TTL, CREATOR_REFRESH_TTL, State};
use serde_json::json;

/// The scope TikTok returns for an ads-management authorization.
const SCOPE: [u32; 1] = [4];

/// `Access-Token` check: 40104 when missing, 40105 when unknown or revoked.
pub fn authenticate(s: &State, token: Option<&str>) -> Result<Token, Reply> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(Reply::error(
            40104,
            "Access token is null, you should set it in http header with key Access-Token.",
        ));
    };
    match s.tokens.get(token) {
        Some(t) if !t.revoked => Ok(t.clone()),
        _ => Err(Reply::error(
            40105,
            "Access token is incorrect or has been revoked.",
        )),
    }
}

/// 40001 unless the token was granted `advertiser_id`.
pub fn covers(token: &Token, advertiser_id: &str) -> Result<(), Reply> {
    if token.advertiser_ids.iter().any(|a| a == advertiser_id) {
        Ok(())
    } else {
        Err(Reply::error(
            40001,
            format!("No permission to operate advertiser {advertiser_id}."),
        ))
    }
}

fn check_app(s: &State, app_id: &str, secret: &str) -> Result<(), Reply> {
    if app_id != s.config.app_id || secret != s.config.app_secret {
        return Err(Reply::error(
            40101,
            "Invalid auth params: app_id or secret is wrong.",
        ));
    }
    Ok(())
}

/// `POST /oauth2/access_token/`: a single-use code younger than 1 h becomes a long-term token.
pub fn access_token(s: &mut State, p: &Params) -> Result<Reply, Reply> {
    let (app_id, secret, code) = (
        p.required_str("app_id")?,
        p.required_str("secret")?,
        p.required_str("auth_code")?,
    );
    check_app(s, &app_id, &secret)?;
    let now = s.now();
    let grant = s
        .auth_codes
        .get_mut(&code)
        .ok_or_else(|| Reply::error(40110, "Auth code is invalid."))?;
    if grant.used || grant.app_id != app_id || now.duration_since(grant.issued) > AUTH_CODE_TTL {
        return Err(Reply::error(
            40110,
            "Auth code has been used, cancelled or has expired.",
        ));
    }
    grant.used = true;
    let advertiser_ids = grant.advertiser_ids.clone();
    let access_token = s.new_secret();
    s.tokens.insert(
        access_token.clone(),
        Token {
            app_id,
            advertiser_ids: advertiser_ids.clone(),
            revoked: false,
        },
    );
    Ok(Reply::ok(
        json!({"access_token": access_token, "advertiser_ids": advertiser_ids, "scope": SCOPE}),
    ))
}

/// `POST /oauth2/revoke_token/` with `{app_id, secret, access_token}`.
pub fn revoke_token(s: &mut State, p: &Params) -> Result<Reply, Reply> {
    let (app_id, secret, token) = (
        p.required_str("app_id")?,
        p.required_str("secret")?,
        p.required_str("access_token")?,
    );
    check_app(s, &app_id, &secret)?;
    match s.tokens.get_mut(&token) {
        Some(t) if !t.revoked && t.app_id == app_id => {
            t.revoked = true;
            Ok(Reply::ok(json!({})))
        }
        _ => Err(Reply::error(
            40105,
            "Access token is incorrect or has been revoked.",
        )),
    }
}

/// `GET /oauth2/advertiser/get/?app_id&secret`: the accounts this token may act for.
pub fn advertiser_get(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    check_app(s, &p.required_str("app_id")?, &p.required_str("secret")?)?;
    let list: Vec<_> = token
        .advertiser_ids
        .iter()
        .filter_map(|id| s.advertiser(id))
        .map(|a| json!({"advertiser_id": a.id, "advertiser_name": a.name}))
        .collect();
    Ok(Reply::ok(json!({"list": list})))
}

/// `GET /advertiser/info/?advertiser_ids=[...]`: name, currency, time zone.
pub fn advertiser_info(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let ids = p
        .str_list("advertiser_ids")?
        .ok_or_else(|| Reply::param("advertiser_ids: Missing data for required field."))?;
    if ids.is_empty() || ids.len() > 100 {
        return Err(Reply::param(
            "advertiser_ids: Length must be between 1 and 100.",
        ));
    }
    let mut list = Vec::new();
    for id in &ids {
        covers(token, id)?;
        let a = s
            .advertiser(id)
            .ok_or_else(|| Reply::error(40300, format!("Advertiser {id} does not exist.")))?;
        list.push(json!({
            "advertiser_id": a.id, "name": a.name, "currency": a.currency, "timezone": a.timezone,
            "display_timezone": a.timezone, "status": "STATUS_ENABLE", "role": "ROLE_ADVERTISER",
            "country": "US", "company": a.name,
        }));
    }
    let (page, page_size) = paging(p, 1000)?;
    let (list, _) = paginate(&list, page, page_size);
    Ok(Reply::ok(json!({"list": list})))
}

/// `POST /tt_user/oauth2/token/`: a creator's code becomes a 24 h token and a 1 year refresh token.
pub fn creator_token(s: &mut State, p: &Params) -> Result<Reply, Reply> {
    check_app(
        s,
        &p.required_str("client_id")?,
        &p.required_str("client_secret")?,
    )?;
    if p.required_str("grant_type")? != "authorization_code" {
        return Err(Reply::param("grant_type: must be authorization_code."));
    }
    let code = p.required_str("auth_code")?;
    let now = s.now();
    let (open_id, issued, used) = s
        .creator_codes
        .get_mut(&code)
        .ok_or_else(|| Reply::error(40110, "Auth code is invalid."))?;
    if *used || now.duration_since(*issued) > AUTH_CODE_TTL {
        return Err(Reply::error(
            40110,
            "Auth code has been used, cancelled or has expired.",
        ));
    }
    *used = true;
    let open_id = open_id.clone();
    Ok(issue_creator_token(s, open_id))
}

fn issue_creator_token(s: &mut State, open_id: String) -> Reply {
    let (access_token, refresh_token) = (s.new_secret(), s.new_secret());
    let now = s.now();
    s.creator_tokens.insert(
        refresh_token.clone(),
        CreatorToken {
            open_id: open_id.clone(),
            access_token: access_token.clone(),
            access_expires: now + CREATOR_ACCESS_TTL,
            refresh_expires: now + CREATOR_REFRESH_TTL,
        },
    );
    Reply::ok(json!({
        "access_token": access_token, "refresh_token": refresh_token, "open_id": open_id,
        "scope": "user.info.basic,video.list", "token_type": "Bearer",
        "expires_in": CREATOR_ACCESS_TTL.as_secs(), "refresh_token_expires_in": CREATOR_REFRESH_TTL.as_secs(),
    }))
}

/// `POST /tt_user/oauth2/refresh_token/`: 40107 for an unknown refresh token, 40103 for an expired one.
pub fn creator_refresh(s: &mut State, p: &Params) -> Result<Reply, Reply> {
    check_app(
        s,
        &p.required_str("client_id")?,
        &p.required_str("client_secret")?,
    )?;
    if p.required_str("grant_type")? != "refresh_token" {
        return Err(Reply::param("grant_type: must be refresh_token."));
    }
    let refresh = p.required_str("refresh_token")?;
    let grant = s
        .creator_tokens
        .remove(&refresh)
        .ok_or_else(|| Reply::error(40107, "Refresh token is invalid."))?;
    if s.now() > grant.refresh_expires {
        return Err(Reply::error(
            40103,
            "Refresh token has expired; the user must authorize again.",
        ));
    }
    Ok(issue_creator_token(s, grant.open_id))
}

/// `POST /tt_user/oauth2/revoke/` with `{client_id, client_secret, access_token}`: ends
/// the creator's grant (its refresh token stops working too).
pub fn creator_revoke(s: &mut State, p: &Params) -> Result<Reply, Reply> {
    check_app(
        s,
        &p.required_str("client_id")?,
        &p.required_str("client_secret")?,
    )?;
    let access = p.required_str("access_token")?;
    let before = s.creator_tokens.len();
    s.creator_tokens.retain(|_, t| t.access_token != access);
    if s.creator_tokens.len() == before {
        return Err(Reply::error(
            40105,
            "Access token is incorrect or has been revoked.",
        ));
    }
    Ok(Reply::ok(json!({})))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn redirect(to: &str) -> Response {
    http::Response::builder()
        .status(302)
        .header("location", to)
        .body(Default::default())
        .expect("valid response")
}

fn with_params(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = redirect_uri.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        url.push(sep);
        url.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .append_pair(k, v)
                .finish(),
        );
        sep = '&';
    }
    url
}

/// The authorization pages: `/portal/auth` (advertisers) and `/portal/creator/auth`
/// (TikTok accounts). They show an approve/deny page, or decide at once with
/// `auto_approve=1` / `auto_deny=1` (for tests), then redirect to `redirect_uri`.
pub fn portal(mock: &Mock, path: &str, query: &str) -> Response {
    let app_id = query_param(query, "app_id").unwrap_or_default();
    let state = query_param(query, "state").unwrap_or_default();
    let Some(redirect_uri) = query_param(query, "redirect_uri")
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    else {
        return text_response(
            400,
            "text/html",
            "<h1>redirect_uri is missing or not an http(s) URL</h1>",
        );
    };
    if mock.with_state(|s| s.config.app_id != app_id) {
        return text_response(400, "text/html", "<h1>Unknown app_id</h1>");
    }
    let creator =
        path == "/portal/creator/auth" || query_param(query, "creator").as_deref() == Some("1");
    let decision = match (
        query_param(query, "auto_approve").as_deref(),
        query_param(query, "auto_deny").as_deref(),
        query_param(query, "decision").as_deref(),
    ) {
        (Some("1"), _, _) | (_, _, Some("approve")) => Some(true),
        (_, Some("1"), _) | (_, _, Some("deny")) => Some(false),
        _ => None,
    };
    match decision {
        Some(true) if creator => {
            let code = mock.with_state(|s| {
                let code = s.new_secret();
                let open_id = format!("act.{}", s.new_secret());
                let now = s.now();
                s.creator_codes.insert(code.clone(), (open_id, now, false));
                code
            });
            redirect(&with_params(
                &redirect_uri,
                &[("code", &code), ("state", &state)],
            ))
        }
        Some(true) => {
            let code = mock.with_state(|s| {
                let code = s.new_secret();
                let advertiser_ids = s.advertisers.iter().map(|a| a.id.clone()).collect();
                let now = s.now();
                s.auth_codes.insert(
                    code.clone(),
                    AuthCode {
                        app_id: app_id.clone(),
                        advertiser_ids,
                        issued: now,
                        used: false,
                    },
                );
                code
            });
            redirect(&with_params(
                &redirect_uri,
                &[("auth_code", &code), ("code", &code), ("state", &state)],
            ))
        }
        Some(false) => redirect(&with_params(
            &redirect_uri,
            &[("state", &state), ("error", "access_denied")],
        )),
        None => {
            let advertisers = mock.with_state(|s| {
                s.advertisers
                    .iter()
                    .map(|a| format!("<li>{} ({})</li>", html_escape(&a.name), a.id))
                    .collect::<String>()
            });
            let decide = |d: &str| {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("app_id", &app_id)
                    .append_pair("state", &state)
                    .append_pair("redirect_uri", &redirect_uri)
                    .append_pair("decision", d);
                if creator {
                    q.append_pair("creator", "1");
                }
                format!("/portal/auth/decide?{}", q.finish())
            };
            let page = format!(
                "<!doctype html><html><head><title>tiktok-mock: authorize</title></head><body>\
                 <h1>Authorize app {}</h1><p>tiktok-mock stands in for TikTok. Accounts:</p><ul>{advertisers}</ul>\
                 <p><a id=\"approve\" href=\"{}\">Approve</a> <a id=\"deny\" href=\"{}\">Deny</a></p></body></html>",
                html_escape(&app_id),
                html_escape(&decide("approve")),
                html_escape(&decide("deny")),
            );
            text_response(200, "text/html; charset=utf-8", page)
        }
    }
}
