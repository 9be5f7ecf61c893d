//! A test app against wasi:http 0.2 and older key-value/variable interfaces. Routes:
//! - `GET /app/served`: how many requests this instance has served
//! - `GET …/headers`: the request headers, one `name: value` per line
//! - `GET|PUT /app/kv/<key>?store=S`: Spin 2 key-value get / set
//! - `POST /app/count/<key>`: wasmtime's wasi:keyvalue draft increment, returns the count
//! - `GET /app/var/<name>`: Spin 2 variables; `GET /app/config/<name>`: wasi:config rc.1
//! - `GET /app/outbound?url=U`: an outgoing GET; answers its status, or `error: <code>`
//! - `GET /app/sleep?ms=N`: answers after N ms
//! - `GET /app/trap`: panics (a trap); `GET /app/loop`: never returns; `GET /app/grow?mb=N`: allocates N MiB (default 80)

wit_bindgen::generate!({ world: "app", generate_all });

use exports::wasi::http::incoming_handler::Guest;
use fermyon::spin::{key_value, variables};
use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme};

struct App;

/// Requests this instance has served: 1 on every request with fresh instances.
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).unwrap();
    let outgoing = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().unwrap();
    for chunk in body.chunks(4096) {
        stream.blocking_write_and_flush(chunk).unwrap();
    }
    drop(stream);
    OutgoingBody::finish(outgoing, None).unwrap();
}

fn read_body(req: &IncomingRequest) -> Vec<u8> {
    let body = req.consume().unwrap();
    let stream = body.stream().unwrap();
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(65536) {
        bytes.extend(chunk);
    }
    bytes
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

fn outbound(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return "error: bad url".into() };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&if scheme == "https" { Scheme::Https } else { Scheme::Http })).unwrap();
    request.set_authority(Some(authority)).unwrap();
    request.set_path_with_query(Some(path)).unwrap();
    match wasi::http::outgoing_handler::handle(request, None) {
        Err(e) => format!("error: {e:?}"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => format!("status: {}", response.status()),
                Some(Ok(Err(e))) => format!("error: {e:?}"),
                other => format!("error: {other:?}"),
            }
        }
    }
}

impl Guest for App {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = req.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
        let put = matches!(req.method(), Method::Put);
        let store = query_param(query, "store").unwrap_or_else(|| "default".into());
        let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match path {
            "/app/served" => respond(out, 200, served.to_string().as_bytes()),
            p if p.ends_with("/headers") => {
                let mut lines: Vec<String> = req
                    .headers()
                    .entries()
                    .into_iter()
                    .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(&v)))
                    .collect();
                lines.sort();
                respond(out, 200, lines.join("\n").as_bytes())
            }
            p if p.starts_with("/app/kv/") => {
                let key = &p["/app/kv/".len()..];
                let value = if put { read_body(&req) } else { Vec::new() };
                match key_value::Store::open(&store) {
                    Err(e) => respond(out, 403, format!("error: {e:?}").as_bytes()),
                    Ok(s) if put => match s.set(key, &value) {
                        Ok(()) => respond(out, 204, b""),
                        Err(e) => respond(out, 500, format!("error: {e:?}").as_bytes()),
                    },
                    Ok(s) => match s.get(key) {
                        Ok(Some(v)) => respond(out, 200, &v),
                        Ok(None) => respond(out, 404, b"not found"),
                        Err(e) => respond(out, 500, format!("error: {e:?}").as_bytes()),
                    },
                }
            }
            p if p.starts_with("/app/count/") => {
                let key = &p["/app/count/".len()..];
                let result = wasi::keyvalue::store::open(&store)
                    .and_then(|bucket| wasi::keyvalue::atomics::increment(&bucket, key, 1));
                match result {
                    Ok(n) => respond(out, 200, n.to_string().as_bytes()),
                    Err(e) => respond(out, 403, format!("error: {e:?}").as_bytes()),
                }
            }
            p if p.starts_with("/app/var/") => match variables::get(&p["/app/var/".len()..]) {
                Ok(v) => respond(out, 200, v.as_bytes()),
                Err(e) => respond(out, 404, format!("error: {e:?}").as_bytes()),
            },
            p if p.starts_with("/app/config/") => match wasi::config::store::get(&p["/app/config/".len()..]) {
                Ok(Some(v)) => respond(out, 200, v.as_bytes()),
                Ok(None) => respond(out, 404, b"not set"),
                Err(e) => respond(out, 500, format!("error: {e:?}").as_bytes()),
            },
            "/app/outbound" => {
                let url = query_param(query, "url").unwrap_or_default();
                respond(out, 200, outbound(&url).as_bytes())
            }
            "/app/sleep" => {
                let ms: u64 = query_param(query, "ms").and_then(|v| v.parse().ok()).unwrap_or(100);
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(out, 200, b"slept")
            }
            "/app/trap" => panic!("this route traps on purpose"),
            "/app/loop" => loop {
                std::hint::black_box(());
            },
            "/app/grow" => {
                let mb: usize = query_param(query, "mb").and_then(|v| v.parse().ok()).unwrap_or(80);
                let hog = vec![1u8; mb << 20];
                std::hint::black_box(&hog);
                respond(out, 200, b"grew")
            }
            _ => respond(out, 404, b"no such route"),
        }
    }
}

export!(App);
