//! tiktok-mock: a local fake of the TikTok Business API v1.3, as stripe-mock is for
//! Stripe. Its contract is `shared/tiktok-api.md`: the envelope, `Access-Token`, JSON in
//! GET parameters, trailing-slash paths, OAuth with single-use codes, and faults and rate
//! limits on demand, so every client path (including the failing ones) can be tested.
//!
//! ```no_run
//! # async fn run() {
//! let mock = tiktok_mock::MockServer::start(tiktok_mock::MockConfig::default()).await.unwrap();
//! println!("TikTok API at {}", mock.url());
//! # }
//! ```

pub mod admin;
pub mod campaigns;
pub mod catalog;
pub mod creative;
pub mod envelope;
pub mod events;
pub mod files;
pub mod model;
pub mod multipart;
pub mod oauth;
pub mod reports;
pub mod request;
pub mod state;
pub mod time;
pub mod webhooks;

pub use state::MockConfig;

use bytes::Bytes;
use envelope::{Reply, Response, text_response};
use http_body_util::{BodyExt, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use model::{FaultKind, LoggedRequest};
use request::Params;
use state::State;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Largest request body the mock reads (video uploads are up to 500 MB at TikTok).
pub const MAX_BODY: usize = 512 << 20;

/// The shared state of a running mock.
#[derive(Clone)]
pub struct Mock {
    state: Arc<Mutex<State>>,
}

impl Mock {
    pub fn new(config: MockConfig) -> Self {
        Mock {
            state: Arc::new(Mutex::new(State::new(config))),
        }
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The seeded demo advertiser (sandbox mode shows it).
    pub fn demo_advertiser(&self) -> model::Advertiser {
        self.with_state(|s| s.advertisers[0].clone())
    }

    /// An access token for `advertiser_ids`, as if they had been authorized by OAuth
    /// (what `POST /_mock/tokens` does, for in-process tests).
    pub fn token_for(&self, advertiser_ids: &[String]) -> String {
        self.with_state(|s| {
            let token = s.new_secret();
            let app_id = s.config.app_id.clone();
            s.tokens.insert(
                token.clone(),
                model::Token {
                    app_id,
                    advertiser_ids: advertiser_ids.to_vec(),
                    revoked: false,
                },
            );
            token
        })
    }

    /// The demo advertiser's seeded pixel.
    pub fn demo_pixel(&self) -> model::Pixel {
        self.with_state(|s| s.pixels[0].clone())
    }

    /// Handles one HTTP request.
    pub async fn handle<B>(&self, request: http::Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return text_response(413, "text/plain", "request body too large"),
        };
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        // TikTok's request ids: the time as YYYYMMDDHHMMSS, then random digits.
        let request_id = self.with_state(|s| {
            let stamp: String = time::format_datetime(s.unix_now())
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            format!("{stamp}{:018}", s.next_u64() % 1_000_000_000_000_000_000)
        });

        if path == "/_mock/webhooks/send" && parts.method == http::Method::POST {
            return admin::send_webhook(self, &body).await;
        }
        if path.starts_with("/_mock/") {
            return admin::handle(self, &parts.method, &path, &query, &body);
        }
        if path == "/portal/auth" || path == "/portal/auth/decide" || path == "/portal/creator/auth"
        {
            return oauth::portal(self, &path, &query);
        }

        // Injected faults apply to API calls only.
        let fault = self.with_state(|s| {
            let index = s.faults.iter().position(|f| path.contains(&f.path))?;
            s.faults.remove(index)
        });
        if let Some(fault) = fault {
            if !fault.delay.is_zero() {
                tokio::time::sleep(fault.delay).await;
            }
            match fault.kind {
                FaultKind::Code { code, message } => {
                    self.record(&parts.method, &path, &query, &body, code);
                    return Reply::error(code, message).into_response(&request_id);
                }
                FaultKind::Http { status } => {
                    self.record(&parts.method, &path, &query, &body, -(status as i64));
                    let html = format!(
                        "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center><hr><center>nginx</center></body></html>"
                    );
                    return text_response(status, "text/html", html);
                }
                FaultKind::DelayOnly => {}
            }
        }

        let Some(endpoint) = path.strip_prefix("/open_api/v1.3") else {
            return text_response(404, "text/plain", "404 page not found");
        };
        if !endpoint.ends_with('/') {
            return text_response(404, "text/plain", "404 page not found");
        }
        let token = parts
            .headers
            .get("access-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // The two multipart uploads.
        if parts.method == http::Method::POST
            && matches!(
                endpoint,
                "/file/video/ad/upload/" | "/dmp/custom_audience/file/upload/"
            )
        {
            let content_type = parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let reply = self
                .upload(
                    endpoint,
                    content_type.as_deref(),
                    body.clone(),
                    token.as_deref(),
                )
                .await;
            self.record(&parts.method, &path, &query, &body, reply.code);
            return reply.into_response(&request_id);
        }
        let params = if parts.method == http::Method::GET {
            Params::from_query(&query)
        } else {
            match Params::from_json(&body) {
                Ok(p) => p,
                Err(reply) => {
                    self.record(&parts.method, &path, &query, &body, reply.code);
                    return reply.into_response(&request_id);
                }
            }
        };
        let reply = self.api(&parts.method, endpoint, &params, token.as_deref());
        self.record(&parts.method, &path, &query, &body, reply.code);
        reply.into_response(&request_id)
    }

    async fn upload(
        &self,
        endpoint: &str,
        content_type: Option<&str>,
        body: Bytes,
        token: Option<&str>,
    ) -> Reply {
        let token = match self.with_state(|s| oauth::authenticate(s, token)) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        if let Some(reply) =
            self.with_state(|s| limit(s, &token.app_id, endpoint, &Params::default()))
        {
            return reply;
        }
        let form = match multipart::Form::parse(content_type, body).await {
            Ok(f) => f,
            Err(reply) => return reply,
        };
        match endpoint {
            "/file/video/ad/upload/" => self.call(|s| files::upload_video(s, &token, &form)),
            _ => self.call(|s| files::upload_audience_file(s, &token, &form)),
        }
    }

    /// Runs an endpoint against the state; its error is as much a reply as its success.
    fn call(&self, endpoint: impl FnOnce(&mut State) -> Result<Reply, Reply>) -> Reply {
        self.with_state(endpoint).unwrap_or_else(|e| e)
    }

    fn record(&self, method: &http::Method, path: &str, query: &str, body: &[u8], code: i64) {
        self.with_state(|s| {
            s.log(LoggedRequest {
                method: method.to_string(),
                path: path.to_string(),
                query: query.to_string(),
                body: String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]).into_owned(),
                code,
            })
        });
    }

    /// Routes an API call (`endpoint` is the path after `/open_api/v1.3`).
    fn api(
        &self,
        method: &http::Method,
        endpoint: &str,
        params: &Params,
        token: Option<&str>,
    ) -> Reply {
        use http::Method as M;
        // Calls authenticated by app id and secret instead of a token.
        match (method, endpoint) {
            (&M::POST, "/oauth2/access_token/") => {
                return self.call(|s| oauth::access_token(s, params));
            }
            (&M::POST, "/oauth2/revoke_token/") => {
                return self.call(|s| oauth::revoke_token(s, params));
            }
            (&M::POST, "/tt_user/oauth2/token/") => {
                return self.call(|s| oauth::creator_token(s, params));
            }
            (&M::POST, "/tt_user/oauth2/refresh_token/") => {
                return self.call(|s| oauth::creator_refresh(s, params));
            }
            (&M::POST, "/tt_user/oauth2/revoke/") => {
                return self.call(|s| oauth::creator_revoke(s, params));
            }
            _ => {}
        }
        let token = match self.with_state(|s| oauth::authenticate(s, token)) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        if let Some(reply) = self.with_state(|s| limit(s, &token.app_id, endpoint, params)) {
            return reply;
        }
        match (method, endpoint) {
            (&M::GET, "/oauth2/advertiser/get/") => {
                self.call(|s| oauth::advertiser_get(s, &token, params))
            }
            (&M::GET, "/advertiser/info/") => {
                self.call(|s| oauth::advertiser_info(s, &token, params))
            }
            (&M::GET, "/pixel/list/") => self.call(|s| events::pixel_list(s, &token, params)),
            (&M::POST, "/pixel/create/") => self.call(|s| events::pixel_create(s, &token, params)),
            (&M::POST, "/event/track/") => self.call(|s| events::track(s, &token, params)),
            (&M::POST, "/tt_video/authorize/") => {
                self.call(|s| creative::authorize(s, &token, params))
            }
            (&M::GET, "/tt_video/info/") => self.call(|s| creative::info(s, &token, params)),
            (&M::GET, "/tt_video/list/") => self.call(|s| creative::list(s, &token, params)),
            (&M::POST, "/identity/create/") => {
                self.call(|s| creative::create_identity(s, &token, params))
            }
            (&M::GET, "/identity/get/") => {
                self.call(|s| creative::get_identities(s, &token, params))
            }
            (&M::POST, "/catalog/create/") => self.call(|s| catalog::create(s, params)),
            (&M::GET, "/catalog/get/") => self.call(|s| catalog::get(s, params)),
            (&M::POST, "/catalog/product/upload/") => {
                self.call(|s| catalog::upload_products(s, params))
            }
            (&M::GET, "/catalog/product/log/") => self.call(|s| catalog::product_log(s, params)),
            (&M::GET, "/file/video/ad/info/") => {
                self.call(|s| files::video_info(s, &token, params))
            }
            (&M::POST, "/dmp/custom_audience/create/") => {
                self.call(|s| files::create_audience(s, &token, params))
            }
            (&M::GET, "/dmp/custom_audience/list/") => {
                self.call(|s| files::list_audiences(s, &token, params))
            }
            (&M::POST, "/dmp/custom_audience/lookalike/create/") => {
                self.call(|s| files::create_lookalike(s, &token, params))
            }
            (&M::GET, "/report/integrated/get/") => {
                self.call(|s| reports::integrated_get(s, &token, params))
            }
            (&M::POST, "/campaign/create/") => {
                self.call(|s| campaigns::create_campaign(s, &token, params))
            }
            (&M::POST, "/adgroup/create/") => {
                self.call(|s| campaigns::create_adgroup(s, &token, params))
            }
            (&M::POST, "/ad/create/") => self.call(|s| campaigns::create_ad(s, &token, params)),
            (&M::POST, "/ad/update/") => self.call(|s| campaigns::update_ads(s, &token, params)),
            (&M::GET, path) if kind_of(path, "get").is_some() => self.call(|s| {
                campaigns::get(s, kind_of(path, "get").expect("checked"), &token, params)
            }),
            (&M::POST, path) if kind_of(path, "update").is_some() && !path.starts_with("/ad/") => {
                self.call(|s| {
                    campaigns::update(s, kind_of(path, "update").expect("checked"), &token, params)
                })
            }
            (&M::POST, path) if kind_of(path, "status/update").is_some() => self.call(|s| {
                campaigns::status_update(
                    s,
                    kind_of(path, "status/update").expect("checked"),
                    &token,
                    params,
                )
            }),
            _ => Reply::error(
                40008,
                format!("tiktok-mock does not serve {method} {endpoint}"),
            ),
        }
    }
}

/// Which entity `/campaign|adgroup|ad/<action>/` is about.
fn kind_of(path: &str, action: &str) -> Option<model::Kind> {
    let (entity, rest) = path.strip_prefix('/')?.split_once('/')?;
    if rest != format!("{action}/") {
        return None;
    }
    match entity {
        "campaign" => Some(model::Kind::Campaign),
        "adgroup" => Some(model::Kind::AdGroup),
        "ad" => Some(model::Kind::Ad),
        _ => None,
    }
}

/// The token bucket per app and endpoint (40100), and per advertiser (40133).
fn limit(s: &mut State, app_id: &str, endpoint: &str, params: &Params) -> Option<Reply> {
    let events = matches!(
        endpoint,
        "/event/track/" | "/pixel/track/" | "/pixel/batch/" | "/offline/track/" | "/offline/batch/"
    );
    let qps = if events {
        Some(s.config.events_qps)
    } else {
        s.config.qps_per_endpoint
    };
    if let Some(qps) = qps
        && !s.take_token((app_id.to_string(), endpoint.to_string()), qps)
    {
        return Some(Reply::error(
            40100,
            "Too many requests. Please retry in some time.",
        ));
    }
    if let (Some(qps), Ok(Some(advertiser))) =
        (s.config.qps_per_advertiser, params.str("advertiser_id"))
        && !s.take_token(
            (format!("advertiser:{advertiser}"), endpoint.to_string()),
            qps,
        )
    {
        return Some(Reply::error(
            40133,
            format!("The QPS limit of advertiser {advertiser} on this endpoint has been reached."),
        ));
    }
    None
}

/// A mock serving on a loopback port, stopped when dropped.
pub struct MockServer {
    pub mock: Mock,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts on an ephemeral loopback port.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("valid address"), config).await
    }

    pub async fn start_on(addr: SocketAddr, config: MockConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mock = Mock::new(config);
        let served = mock.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let mock = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let mock = mock.clone();
                        async move { Ok::<_, std::convert::Infallible>(mock.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(MockServer { mock, addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to use instead of `https://business-api.tiktok.com`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
