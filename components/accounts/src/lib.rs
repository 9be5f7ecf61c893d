//! The `accounts` component: organizations, their API keys and their TikTok connections,
//! and the OAuth flows that make them. Bindings and routing only; the logic lives in
//! `tiktok-edge-core` (`tenancy`, `oauth`).

tiktok_edge_guest::component_bindings!("tiktok:edge/accounts");

use exports::tiktok::edge::oauth::{self as wit, Guest as Capability};
use exports::wasi::http::incoming_handler::Guest as IncomingHandler;
use tiktok_edge_core::tenancy::connections::Kind;
use tiktok_edge_core::tenancy::connections::{self, Connection, Status};
use tiktok_edge_core::{OrgId, oauth::api, oauth::flow};
use tiktok_edge_guest::env::with_env;
use tiktok_edge_guest::http::{Request, Response, serve};
use tiktok_edge_guest::tiktok::edge::types::{ComponentInfo, Error};
use tiktok_edge_guest::wasi::http::types::{IncomingRequest, ResponseOutparam};
use tiktok_edge_guest::{ApiError, info};

const NAME: &str = "accounts";
const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Component;

fn to_wit(c: Connection) -> wit::Connection {
    wit::Connection {
        id: c.id,
        kind: match c.kind {
            Kind::Advertiser => wit::ConnectionKind::Advertiser,
            Kind::Creator => wit::ConnectionKind::Creator,
        },
        status: match c.status {
            Status::Active => wit::ConnectionStatus::Active,
            Status::ReauthorizationRequired => wit::ConnectionStatus::ReauthorizationRequired,
            Status::Revoked => wit::ConnectionStatus::Revoked,
        },
        advertisers: c
            .advertisers
            .into_iter()
            .map(|a| wit::Advertiser {
                advertiser_id: a.advertiser_id,
                name: a.name,
                currency: a.currency,
                timezone: a.timezone,
            })
            .collect(),
        open_id: c.open_id,
        scopes: c.scopes,
        created_at: c.created_at,
        access_expires_at: c.access_expires_at,
        last_error: c.last_error,
    }
}

impl Capability for Component {
    fn info() -> Result<ComponentInfo, Error> {
        info::component_info(NAME, VERSION).map_err(Error::from)
    }

    fn list_connections(org: String) -> Result<Vec<wit::Connection>, Error> {
        let org = OrgId::parse(&org)?;
        with_env(|env| connections::list(env, &org))
            .map(|list| list.into_iter().map(to_wit).collect())
            .map_err(Error::from)
    }

    fn check_connection(org: String, id: String) -> Result<wit::Connection, Error> {
        let org = OrgId::parse(&org)?;
        with_env(|env| connections::check(env, &org, &id))
            .map(|r| to_wit(r.connection))
            .map_err(Error::from)
    }

    fn refresh_creator_tokens(within_seconds: u32) -> Result<wit::RefreshReport, Error> {
        let report = with_env(|env| flow::refresh_creator_tokens(env, within_seconds.into()))?;
        let n = |v: usize| v.min(u32::MAX as usize) as u32;
        Ok(wit::RefreshReport {
            checked: n(report.checked),
            refreshed: n(report.refreshed),
            reauthorization_required: n(report.reauthorization_required),
            failed: n(report.failed),
        })
    }
}

impl IncomingHandler for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        serve(request, out, route);
    }
}

fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/info/accounts") => Ok(Response::json(
            200,
            &info::to_json(&info::component_info(NAME, VERSION)?),
        )),
        (_, "/info/accounts") => Ok(Response::method_not_allowed("GET")),
        _ => with_env(|env| api::handle(env, req)),
    }
}

export!(Component);
