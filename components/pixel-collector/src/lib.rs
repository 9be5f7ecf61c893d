//! The `pixel-collector` component: bindings and routing only; logic lives in `tiktok-edge-core`.

tiktok_edge_guest::component_bindings!("tiktok:edge/pixel-collector");

use exports::tiktok::edge::pixel::{self as wit, Guest as Capability};
use exports::wasi::http::incoming_handler::Guest as IncomingHandler;
use tiktok_edge_core::OrgId;
use tiktok_edge_core::pixel::{api, forward, queue, registry};
use tiktok_edge_guest::env::with_env;
use tiktok_edge_guest::http::{Request, Response, serve};
use tiktok_edge_guest::tiktok::edge::types::{ComponentInfo, Error};
use tiktok_edge_guest::wasi::http::types::{IncomingRequest, ResponseOutparam};
use tiktok_edge_guest::{ApiError, info};

const NAME: &str = "pixel-collector";
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The script websites embed (`GET /pixel.js`).
const SCRIPT: &str = include_str!("../assets/pixel.js");

fn n(v: usize) -> u32 {
    v.min(u32::MAX as usize) as u32
}

struct Component;

impl Capability for Component {
    fn info() -> Result<ComponentInfo, Error> {
        info::component_info(NAME, VERSION).map_err(Error::from)
    }

    fn flush() -> Result<wit::FlushReport, Error> {
        let r = with_env(forward::flush)?;
        Ok(wit::FlushReport {
            pixels: n(r.pixels),
            requests: n(r.requests),
            delivered: n(r.delivered),
            retrying: n(r.retrying),
            dead: n(r.dead),
            busy: n(r.busy),
        })
    }

    fn stats(org: String, pixel_id: String) -> Result<wit::PixelStats, Error> {
        let org = OrgId::parse(&org)?;
        let s = with_env(|env| queue::stats(env, &registry::get(env, &org, &pixel_id)?))?;
        Ok(wit::PixelStats {
            received: s.received,
            rejected: s.rejected,
            deduplicated: s.deduplicated,
            pending: s.pending,
            delivered: s.delivered,
            dead: s.dead,
            last_error: s.last_error,
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
        ("GET", "/info/pixel-collector") => Ok(Response::json(
            200,
            &info::to_json(&info::component_info(NAME, VERSION)?),
        )),
        (_, "/info/pixel-collector") => Ok(Response::method_not_allowed("GET")),
        _ => with_env(|env| api::handle(env, req, SCRIPT)),
    }
}

export!(Component);
