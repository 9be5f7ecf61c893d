//! The `campaign-ops` component: bindings and routing only; logic lives in `tiktok-edge-core`.

tiktok_edge_guest::component_bindings!("tiktok:edge/campaign-ops");

use exports::tiktok::edge::campaigns::{self as wit, Guest as Capability};
use exports::wasi::http::incoming_handler::Guest as IncomingHandler;
use tiktok_edge_core::ads::entities::{self, ListQuery};
use tiktok_edge_core::ads::rules::Kind;
use tiktok_edge_core::tenancy::advertiser_access::AdvertiserAccess;
use tiktok_edge_core::{OrgId, ads::api};
use tiktok_edge_guest::env::with_env;
use tiktok_edge_guest::http::{BodyReader, Request, Response, read_body, read_head, send};
use tiktok_edge_guest::tiktok::edge::types::{ComponentInfo, Error};
use tiktok_edge_guest::wasi::http::types::{IncomingRequest, ResponseOutparam};
use tiktok_edge_guest::{ApiError, info};

const NAME: &str = "campaign-ops";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Largest body read whole (audience files, product batches); videos are streamed.
const MAX_BODY: usize = 16 << 20;

fn kind(k: wit::EntityKind) -> Kind {
    match k {
        wit::EntityKind::Campaign => Kind::Campaign,
        wit::EntityKind::Adgroup => Kind::AdGroup,
        wit::EntityKind::Ad => Kind::Ad,
    }
}

fn json(text: &str) -> Result<serde_json::Value, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::invalid("body-json", format!("is not valid JSON ({e})")))
}

/// Runs `f` for one advertiser of an organization.
fn as_advertiser<R>(
    org: &str,
    advertiser_id: &str,
    f: impl FnOnce(&tiktok_edge_core::platform::env::Env, &AdvertiserAccess) -> Result<R, ApiError>,
) -> Result<R, Error> {
    let org = OrgId::parse(org)?;
    Ok(with_env(|env| {
        let access = AdvertiserAccess::load(env, &org, advertiser_id)?;
        f(env, &access)
    })?)
}

struct Component;

impl Capability for Component {
    fn info() -> Result<ComponentInfo, Error> {
        info::component_info(NAME, VERSION).map_err(Error::from)
    }

    fn create(
        org: String,
        advertiser_id: String,
        k: wit::EntityKind,
        body_json: String,
        idempotency_key: Option<String>,
    ) -> Result<wit::Created, Error> {
        let body = json(&body_json)?;
        let key = tiktok_edge_core::ads::idempotency::parse_key(idempotency_key.as_deref())?;
        let out = as_advertiser(&org, &advertiser_id, |env, a| {
            entities::create(env, a, kind(k), &body, key.as_deref())
        })?;
        Ok(wit::Created {
            status: out.status,
            response_json: out.response.to_string(),
            replayed: out.replayed,
        })
    }

    fn get(
        org: String,
        advertiser_id: String,
        k: wit::EntityKind,
        id: String,
    ) -> Result<String, Error> {
        as_advertiser(&org, &advertiser_id, |env, a| {
            entities::get(env, a, kind(k), &id)
        })
        .map(|v| v.to_string())
    }

    fn list(
        org: String,
        advertiser_id: String,
        k: wit::EntityKind,
        q: wit::ListQuery,
    ) -> Result<String, Error> {
        let k = kind(k);
        if q.page == 0 || !(1..=1000).contains(&q.page_size) {
            return Err(
                ApiError::invalid("query", "page starts at 1; page-size is 1 to 1000").into(),
            );
        }
        let query = ListQuery {
            page: q.page,
            page_size: q.page_size,
            ids: q.ids,
            campaign_ids: q.campaign_ids,
            adgroup_ids: q.adgroup_ids,
            name: q.name,
            status: q.include_deleted.then(|| k.all_statuses().to_string()),
        };
        as_advertiser(&org, &advertiser_id, |env, a| {
            entities::list(env, a, k, &query)
        })
        .map(|v| v.to_string())
    }

    fn update(
        org: String,
        advertiser_id: String,
        k: wit::EntityKind,
        id: String,
        body_json: String,
    ) -> Result<String, Error> {
        let body = json(&body_json)?;
        as_advertiser(&org, &advertiser_id, |env, a| {
            entities::update(env, a, kind(k), &id, &body)
        })
        .map(|v| v.to_string())
    }

    fn set_status(
        org: String,
        advertiser_id: String,
        k: wit::EntityKind,
        action: wit::StatusAction,
        ids: Vec<String>,
    ) -> Result<wit::StatusReport, Error> {
        let action = match action {
            wit::StatusAction::Enable => "ENABLE",
            wit::StatusAction::Disable => "DISABLE",
            wit::StatusAction::Delete => "DELETE",
        };
        let body = serde_json::json!({"operation_status": action, "ids": ids});
        let r = as_advertiser(&org, &advertiser_id, |env, a| {
            entities::set_status(env, a, kind(k), &body)
        })?;
        Ok(wit::StatusReport {
            requested: r.requested as u32,
            succeeded: r.succeeded as u32,
            failed: r.failed as u32,
            tiktok_calls: r.tiktok_calls as u32,
            results: r
                .results
                .into_iter()
                .map(|x| wit::StatusResult {
                    id: x.id,
                    ok: x.ok,
                    tiktok_code: x.error.as_ref().map(|e| e.tiktok_code),
                    message: x.error.as_ref().map(|e| e.message.clone()),
                    tiktok_request_id: x.error.map(|e| e.tiktok_request_id),
                })
                .collect(),
        })
    }
}

impl IncomingHandler for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let mut req = read_head(&request);
        let response = route(&request, &mut req).unwrap_or_else(|e| Response::error(&e));
        send(response, out);
    }
}

fn route(request: &IncomingRequest, req: &mut Request) -> Result<Response, ApiError> {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/info/campaign-ops") => Ok(Response::json(
            200,
            &info::to_json(&info::component_info(NAME, VERSION)?),
        )),
        (_, "/info/campaign-ops") => Ok(Response::method_not_allowed("GET")),
        _ if api::is_streamed(req) => {
            let mut body = BodyReader::new(request)?;
            with_env(|env| api::handle_streamed(env, req, &mut body))
        }
        _ => with_env(|env| {
            // The caller's key is checked before its body is read: the host streams
            // this component's bodies, and a stranger must not hold a request open.
            tiktok_edge_core::tenancy::access::guard(env, req)?;
            req.body = read_body(request, MAX_BODY)?;
            api::handle(env, req)
        }),
    }
}

export!(Component);
