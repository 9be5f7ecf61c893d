//! The `webhook-receiver` component: bindings and routing only; logic lives in `tiktok-edge-core`.

tiktok_edge_guest::component_bindings!("tiktok:edge/webhook-receiver");

use exports::tiktok::edge::webhooks::{self as wit, Guest as Capability};
use exports::wasi::http::incoming_handler::Guest as IncomingHandler;
use tiktok_edge_core::webhooks::{api, apps, deliveries, process};
use tiktok_edge_guest::env::with_env;
use tiktok_edge_guest::http::{Request, Response, serve};
use tiktok_edge_guest::tiktok::edge::types::{ComponentInfo, Error};
use tiktok_edge_guest::wasi::http::types::{IncomingRequest, ResponseOutparam};
use tiktok_edge_guest::{ApiError, info};

const NAME: &str = "webhook-receiver";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn n(v: usize) -> u32 {
    v.min(u32::MAX as usize) as u32
}

struct Component;

impl Capability for Component {
    fn info() -> Result<ComponentInfo, Error> {
        info::component_info(NAME, VERSION).map_err(Error::from)
    }

    fn process() -> Result<wit::ProcessReport, Error> {
        let r = with_env(process::process)?;
        Ok(wit::ProcessReport {
            apps: n(r.apps),
            processed: n(r.processed),
            retrying: n(r.retrying),
            dead: n(r.dead),
            busy: n(r.busy),
        })
    }

    fn stats() -> Result<Vec<wit::AppStats>, Error> {
        let all = with_env(|env| {
            apps::apps(env)?
                .iter()
                .map(|a| deliveries::stats(env, a))
                .collect::<Result<Vec<_>, ApiError>>()
        })?;
        Ok(all
            .into_iter()
            .map(|s| wit::AppStats {
                app: s.app,
                counters: s
                    .counters
                    .into_iter()
                    .map(|(name, v)| wit::Counter {
                        name,
                        value: v.as_i64().unwrap_or(0),
                    })
                    .collect(),
                pending: s.pending,
                dead_letters: n(s.dead_letters),
            })
            .collect())
    }
}

impl IncomingHandler for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        serve(request, out, route);
    }
}

fn route(req: &Request) -> Result<Response, ApiError> {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/info/webhook-receiver") => Ok(Response::json(
            200,
            &info::to_json(&info::component_info(NAME, VERSION)?),
        )),
        (_, "/info/webhook-receiver") => Ok(Response::method_not_allowed("GET")),
        _ => with_env(|env| api::handle(env, req)),
    }
}

export!(Component);
