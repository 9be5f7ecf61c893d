//! The OAuth flows (tiktok-api.md §2, §2.1): starting an authorization, the callback
//! that exchanges the code and stores the connection, and refreshing creator tokens.
//!
//! Every way the callback can fail (denied consent, a forged, expired or reused state, a
//! used or expired code, TikTok down) ends with nothing stored and a clear answer: a
//! redirect to the organization's return URL with `tiktok_connection=error&reason=…`
//! when the state is trustworthy, otherwise a small HTML page (JSON for API clients).

use crate::ApiError;
use crate::oauth::state::{self, ConsumeError, StateClaims, StateError};
use crate::platform::env::{Env, vars};
use crate::platform::http::{Request, Response, html_escape};
use crate::tenancy::connections::Kind;
use crate::tenancy::connections::{self, Advertiser, Connection, Status, Tokens};
use crate::tenancy::org_id::OrgId;
use crate::tenancy::organizations;
use crate::tiktok::client::{Call, id_string};
use crate::tiktok::codes::{CodeClass, TikTokError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Body of `POST /v1/orgs/{org}/connections/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Where the browser goes when the authorization ends; must be in the organization's
    /// `allowed_return_urls`. Without it the callback shows its own page.
    #[serde(default)]
    pub return_url: Option<String>,
    #[serde(default)]
    pub kind: Option<Kind>,
}

#[derive(Debug, Serialize)]
pub struct Started {
    /// TikTok's authorization page for this flow.
    pub authorization_url: String,
    /// The same flow through this deployment (`GET /oauth/start?state=…` redirects to
    /// TikTok), for a link or button in a browser.
    pub start_url: String,
    pub kind: Kind,
    pub expires_at: i64,
}

fn public_base(env: &Env, req: &Request) -> Result<String, ApiError> {
    env.var(vars::PUBLIC_URL)?
        .or_else(|| req.origin.clone())
        .map(|u| u.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "set variable {} to where browsers reach this deployment",
                vars::PUBLIC_URL
            ))
        })
}

fn authorization_url(
    env: &Env,
    base: &str,
    claims_kind: Kind,
    state: &str,
) -> Result<String, ApiError> {
    let api = env.require(vars::API_BASE_URL)?;
    let api = api.trim_end_matches('/');
    let page = match claims_kind {
        Kind::Advertiser => env
            .var(vars::AUTH_URL)?
            .unwrap_or_else(|| format!("{api}/portal/auth")),
        Kind::Creator => env
            .var(vars::CREATOR_AUTH_URL)?
            .unwrap_or_else(|| format!("{api}/portal/creator/auth")),
    };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("app_id", &env.require(vars::APP_ID)?)
        .append_pair("state", state)
        .append_pair("redirect_uri", &format!("{base}/oauth/callback"))
        .finish();
    let sep = if page.contains('?') { '&' } else { '?' };
    Ok(format!("{page}{sep}{query}"))
}

/// Starts an authorization for `org`.
pub fn start(
    env: &Env,
    req: &Request,
    org: &OrgId,
    start: StartRequest,
) -> Result<Started, ApiError> {
    let profile = organizations::get_org(env, org)?;
    let return_url = start
        .return_url
        .as_deref()
        .map(|u| organizations::allowed_return_url(&profile, u))
        .transpose()?;
    let kind = start.kind.unwrap_or(Kind::Advertiser);
    let keyring = env.keyring()?;
    let (state, claims) = state::issue(&keyring, org, kind, return_url, env.now)?;
    let base = public_base(env, req)?;
    let start_query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("state", &state)
        .finish();
    Ok(Started {
        authorization_url: authorization_url(env, &base, kind, &state)?,
        start_url: format!("{base}/oauth/start?{start_query}"),
        kind,
        expires_at: claims.expires_at,
    })
}

/// `GET /oauth/start?state=…`: a browser link that redirects to TikTok.
pub fn browser_start(env: &Env, req: &Request) -> Response {
    let keyring = match env.keyring() {
        Ok(k) => k,
        Err(e) => return failure_page(req, &e),
    };
    let state = req.query_param("state");
    match state::verify(&keyring, state.as_deref(), env.now) {
        Ok(claims) => {
            let url = public_base(env, req).and_then(|base| {
                authorization_url(env, &base, claims.kind, state.as_deref().unwrap_or(""))
            });
            match url {
                Ok(url) => Response::redirect(&url),
                Err(e) => failure_page(req, &e),
            }
        }
        Err(e) => failure_page(req, &e.into()),
    }
}

/// Why a callback with a trustworthy state did not connect; sent to the return URL as `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The advertiser declined (or TikTok sent no code).
    AccessDenied,
    /// TikTok refused the code: used, expired or cancelled (40110).
    InvalidCode,
    /// TikTok could not be reached or failed; trying again later may work.
    TikTokUnavailable,
    /// TikTok refused for another reason (see the message).
    TikTokError,
}

impl Failure {
    pub fn reason(self) -> &'static str {
        match self {
            Failure::AccessDenied => "access_denied",
            Failure::InvalidCode => "invalid_code",
            Failure::TikTokUnavailable => "tiktok_unavailable",
            Failure::TikTokError => "tiktok_error",
        }
    }

    fn status(self) -> u16 {
        match self {
            Failure::AccessDenied | Failure::InvalidCode => 400,
            Failure::TikTokUnavailable | Failure::TikTokError => 502,
        }
    }

    fn from_tiktok(e: &TikTokError) -> Self {
        match e.class() {
            CodeClass::Retry | CodeClass::RateLimited => Failure::TikTokUnavailable,
            _ if e.code == 40110 || e.code == 40101 => Failure::InvalidCode,
            _ => Failure::TikTokError,
        }
    }
}

/// `GET /oauth/callback`: TikTok sends the browser here with `auth_code` (or `code`) and
/// our `state`.
pub fn callback(env: &Env, req: &Request) -> Response {
    let keyring = match env.keyring() {
        Ok(k) => k,
        Err(e) => return failure_page(req, &e),
    };
    let state = req.query_param("state");
    let claims = match state::consume(env.kv, &keyring, state.as_deref(), env.now) {
        Ok(claims) => claims,
        Err(ConsumeError::State(e)) => return failure_page(req, &e.into()),
        Err(ConsumeError::Storage(e)) => return failure_page(req, &e),
    };
    let Ok(org) = OrgId::parse(&claims.org) else {
        return failure_page(req, &StateError::Forged.into());
    };
    let code = req
        .query_param("auth_code")
        .or_else(|| req.query_param("code"))
        .filter(|c| !c.is_empty() && c.len() <= 1024);
    let Some(code) = code else {
        let detail = req
            .query_param("error_description")
            .or_else(|| req.query_param("error"))
            .unwrap_or_else(|| "no authorization code was returned".into());
        return finish(req, &claims, Err((Failure::AccessDenied, detail)));
    };
    let result = match claims.kind {
        Kind::Advertiser => connect_advertisers(env, &org, &code),
        Kind::Creator => connect_creator(env, &org, &code),
    };
    let result = result.map_err(|e| match e {
        Outcome::TikTok(e) => (
            Failure::from_tiktok(&e),
            format!("TikTok {}: {}", e.code, e.message),
        ),
        Outcome::Ours(e) => (Failure::TikTokError, e.to_string()),
    });
    finish(req, &claims, result)
}

/// A failure during the exchange: TikTok's refusal, or our own (storage, config).
enum Outcome {
    TikTok(TikTokError),
    Ours(ApiError),
}

impl From<TikTokError> for Outcome {
    fn from(e: TikTokError) -> Self {
        Outcome::TikTok(e)
    }
}

impl From<ApiError> for Outcome {
    fn from(e: ApiError) -> Self {
        Outcome::Ours(e)
    }
}

fn scopes(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|s| match s {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Value::String(s) => s
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// Exchanges an advertiser `auth_code`, reads the accounts it covers, stores the connection.
fn connect_advertisers(env: &Env, org: &OrgId, code: &str) -> Result<Connection, Outcome> {
    let (app_id, secret) = env.app_credentials()?;
    let tiktok = env.tiktok()?;
    // The code is single-use: never retry the exchange (a retry would get 40110).
    let exchange = tiktok.call_once(&Call::post(
        "/oauth2/access_token/",
        json!({"app_id": app_id, "secret": secret, "auth_code": code}),
    ))?;
    let token = exchange.data["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Outcome::Ours(ApiError::Internal("TikTok returned no access_token".into())))?
        .to_string();
    let describe = || -> Result<Vec<Advertiser>, Outcome> {
        let listed = tiktok.call(
            &Call::get("/oauth2/advertiser/get/")
                .query("app_id", &app_id)
                .query("secret", &secret)
                .token(&token),
        )?;
        let mut ids: Vec<String> = listed.data["list"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|a| id_string(&a["advertiser_id"]))
                    .collect()
            })
            .unwrap_or_default();
        if ids.is_empty() {
            ids = exchange.data["advertiser_ids"]
                .as_array()
                .map(|l| l.iter().filter_map(id_string).collect())
                .unwrap_or_default();
        }
        if ids.is_empty() {
            return Err(Outcome::Ours(ApiError::invalid(
                "advertiser_ids",
                "the authorization covers no advertiser account",
            )));
        }
        ids.truncate(100);
        let info = tiktok.call(
            &Call::get("/advertiser/info/")
                .query(
                    "advertiser_ids",
                    serde_json::to_string(&ids).expect("ids serialize"),
                )
                .query(
                    "fields",
                    r#"["advertiser_id","name","currency","timezone"]"#,
                )
                .token(&token),
        )?;
        let details = info.data["list"].as_array().cloned().unwrap_or_default();
        Ok(ids
            .iter()
            .map(|id| {
                let d = details
                    .iter()
                    .find(|d| id_string(&d["advertiser_id"]).as_deref() == Some(id));
                let field = |name: &str| d.and_then(|d| d[name].as_str()).map(str::to_string);
                Advertiser {
                    advertiser_id: id.clone(),
                    name: field("name").unwrap_or_default(),
                    currency: field("currency"),
                    timezone: field("timezone"),
                }
            })
            .collect())
    };
    let stored = describe().and_then(|advertisers| {
        let connection = Connection {
            id: connections::new_id()?,
            org: org.to_string(),
            kind: Kind::Advertiser,
            status: Status::Active,
            advertisers,
            open_id: None,
            scopes: scopes(&exchange.data["scope"]),
            created_at: env.now,
            updated_at: env.now,
            access_expires_at: None,
            refresh_expires_at: None,
            last_checked_at: Some(env.now),
            last_error: None,
        };
        let tokens = Tokens {
            access_token: token.clone(),
            refresh_token: None,
        };
        connections::store(env, org, &connection, &tokens)?;
        Ok(connection)
    });
    if stored.is_err() {
        // Nothing was kept, so nothing should keep working: give the token back.
        let _ = tiktok.call_once(
            &Call::post(
                "/oauth2/revoke_token/",
                json!({"app_id": app_id, "secret": secret, "access_token": token}),
            )
            .token(&token),
        );
    }
    stored
}

fn expiry(env: &Env, data: &Value, field: &str) -> Option<i64> {
    data[field].as_i64().filter(|s| *s > 0).map(|s| env.now + s)
}

/// Exchanges a TikTok account `code` (§2.1) and stores the creator connection.
fn connect_creator(env: &Env, org: &OrgId, code: &str) -> Result<Connection, Outcome> {
    let (app_id, secret) = env.app_credentials()?;
    let reply = env.tiktok()?.call_once(&Call::post(
        "/tt_user/oauth2/token/",
        json!({"client_id": app_id, "client_secret": secret, "grant_type": "authorization_code", "auth_code": code}),
    ))?;
    let d = &reply.data;
    let (Some(access), Some(open_id)) = (d["access_token"].as_str(), d["open_id"].as_str()) else {
        return Err(Outcome::Ours(ApiError::Internal(
            "TikTok returned no access_token or open_id".into(),
        )));
    };
    let connection = Connection {
        id: connections::new_id()?,
        org: org.to_string(),
        kind: Kind::Creator,
        status: Status::Active,
        advertisers: Vec::new(),
        open_id: Some(open_id.to_string()),
        scopes: scopes(&d["scope"]),
        created_at: env.now,
        updated_at: env.now,
        access_expires_at: expiry(env, d, "expires_in"),
        refresh_expires_at: expiry(env, d, "refresh_token_expires_in")
            .or_else(|| expiry(env, d, "refresh_expires_in")),
        last_checked_at: Some(env.now),
        last_error: None,
    };
    let tokens = Tokens {
        access_token: access.to_string(),
        refresh_token: d["refresh_token"].as_str().map(str::to_string),
    };
    connections::store(env, org, &connection, &tokens)?;
    Ok(connection)
}

fn with_params(url: &str, params: &[(&str, &str)]) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// Ends the callback: a redirect to the return URL, JSON, or a page.
fn finish(
    req: &Request,
    claims: &StateClaims,
    result: Result<Connection, (Failure, String)>,
) -> Response {
    match (result, &claims.return_url, req.wants_json()) {
        (Ok(c), Some(url), false) => Response::redirect(&with_params(
            url,
            &[("tiktok_connection", "connected"), ("connection_id", &c.id)],
        )),
        (Err((f, _)), Some(url), false) => Response::redirect(&with_params(
            url,
            &[("tiktok_connection", "error"), ("reason", f.reason())],
        )),
        (Ok(c), _, true) => Response::json(200, &json!({"connected": true, "connection": c})),
        (Err((f, detail)), _, true) => Response::json(
            f.status(),
            &json!({"error": {"code": f.reason(), "message": detail}}),
        ),
        (Ok(c), None, false) => {
            let names = match c.kind {
                Kind::Advertiser => c
                    .advertisers
                    .iter()
                    .map(|a| {
                        format!(
                            "<li>{} ({})</li>",
                            html_escape(&a.name),
                            html_escape(&a.advertiser_id)
                        )
                    })
                    .collect::<String>(),
                Kind::Creator => format!(
                    "<li>TikTok account {}</li>",
                    html_escape(c.open_id.as_deref().unwrap_or(""))
                ),
            };
            page(
                200,
                "Connected to TikTok",
                &format!(
                    "<p>Connection <code>{}</code> for organization <code>{}</code>:</p><ul>{names}</ul><p>You can close this window.</p>",
                    html_escape(&c.id),
                    html_escape(&c.org)
                ),
            )
        }
        (Err((f, detail)), None, false) => page(
            f.status(),
            "TikTok authorization did not complete",
            &format!(
                "<p>{}</p><p>Reason: <code>{}</code>. Start the connection again from your app.</p>",
                html_escape(&detail),
                f.reason()
            ),
        ),
    }
}

fn page(status: u16, title: &str, body: &str) -> Response {
    Response::html(
        status,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1>{body}</body></html>"
        ),
    )
}

/// An error before any trustworthy return URL is known: a page, or JSON for API clients.
fn failure_page(req: &Request, e: &ApiError) -> Response {
    if req.wants_json() {
        return Response::error(e);
    }
    let message = match e {
        ApiError::InvalidInput(f) => f.reason.clone(),
        other => other.to_string(),
    };
    page(
        e.status(),
        "TikTok authorization did not complete",
        &format!(
            "<p>{}</p><p>Start the connection again from your app.</p>",
            html_escape(&message)
        ),
    )
}

/// What a creator-token refresh run did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct RefreshReport {
    /// Creator connections looked at.
    pub checked: usize,
    pub refreshed: usize,
    /// Refused by TikTok (refresh token expired or invalid): marked for re-authorization.
    pub reauthorization_required: usize,
    /// Transient failures; tried again on the next run.
    pub failed: usize,
}

/// Refreshes every active creator token that expires within `within_secs`.
pub fn refresh_creator_tokens(env: &Env, within_secs: i64) -> Result<RefreshReport, ApiError> {
    let mut report = RefreshReport::default();
    let (app_id, secret) = env.app_credentials()?;
    let tiktok = env.tiktok()?;
    for org in organizations::org_ids(env)? {
        for c in connections::list(env, &org)? {
            if c.kind != Kind::Creator || c.status != Status::Active {
                continue;
            }
            report.checked += 1;
            if c.access_expires_at
                .is_some_and(|t| t - env.now > within_secs)
            {
                continue;
            }
            let tokens = connections::tokens(env, &org, &c.id)?;
            let Some(refresh_token) = tokens.refresh_token else {
                let e = TikTokError {
                    code: 40107,
                    message: "no refresh token is stored".into(),
                    request_id: String::new(),
                };
                connections::mark_reauthorization_required(env, &org, &c.id, &e)?;
                report.reauthorization_required += 1;
                continue;
            };
            let call = Call::post(
                "/tt_user/oauth2/refresh_token/",
                json!({"client_id": app_id, "client_secret": secret, "grant_type": "refresh_token", "refresh_token": refresh_token}),
            );
            match tiktok.call(&call) {
                Ok(reply) => {
                    let d = &reply.data;
                    let Some(access) = d["access_token"].as_str() else {
                        report.failed += 1;
                        continue;
                    };
                    let fresh = Tokens {
                        access_token: access.to_string(),
                        refresh_token: d["refresh_token"]
                            .as_str()
                            .map(str::to_string)
                            .or(Some(refresh_token)),
                    };
                    connections::save_refreshed(
                        env,
                        &org,
                        &c.id,
                        &fresh,
                        expiry(env, d, "expires_in"),
                        expiry(env, d, "refresh_token_expires_in")
                            .or_else(|| expiry(env, d, "refresh_expires_in")),
                    )?;
                    report.refreshed += 1;
                }
                Err(e) if e.class() == CodeClass::Reauthorize => {
                    connections::mark_reauthorization_required(env, &org, &c.id, &e)?;
                    report.reauthorization_required += 1;
                }
                Err(e) => {
                    let message = format!("refresh failed: {}: {}", e.code, e.message);
                    connections::update(env, &org, &c.id, |c| {
                        c.last_error = Some(message.clone())
                    })?;
                    report.failed += 1;
                }
            }
        }
    }
    Ok(report)
}
