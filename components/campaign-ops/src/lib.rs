//! The `campaign-ops` component: bindings and routing only; logic lives in `tiktok-edge-core`.

tiktok_edge_guest::component_bindings!("tiktok:edge/campaign-ops");

use exports::tiktok::edge::campaigns::Guest as Capability;
use exports::wasi::http::incoming_handler::Guest as IncomingHandler;
use tiktok_edge_core::orgs;
use tiktok_edge_guest::env::with_env;
use tiktok_edge_guest::http::{Request, Response, serve};
use tiktok_edge_guest::tiktok::edge::types::{ComponentInfo, Error};
use tiktok_edge_guest::wasi::http::types::{IncomingRequest, ResponseOutparam};
use tiktok_edge_guest::{ApiError, info};

const NAME: &str = "campaign-ops";
const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Component;

impl Capability for Component {
    fn info() -> Result<ComponentInfo, Error> {
        info::component_info(NAME, VERSION).map_err(Error::from)
    }
}

impl IncomingHandler for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        serve(request, out, route);
    }
}

fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/info/campaign-ops") => Ok(Response::json(
            200,
            &info::to_json(&info::component_info(NAME, VERSION)?),
        )),
        (_, "/info/campaign-ops") => Ok(Response::method_not_allowed("GET")),
        // Every organization route checks the caller's key first, even before this
        // component serves anything under it.
        (_, path) => with_env(|env| {
            orgs::guard(env, req)?;
            Err(ApiError::NotFound(format!("no route for {path} in {NAME}")))
        }),
    }
}

export!(Component);
