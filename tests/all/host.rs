//! tiktok-edge serving apps end to end over loopback HTTP: Spin routing and headers,
//! key-value, variables, outbound rules, limits and failures.

use crate::common::{get, put, start};
use serde_json::Value;
use std::collections::HashMap;

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "e2e"

[variables]
greeting = { default = "hello" }

[[trigger.http]]
route = "/app/..."
component = "app"

[[trigger.http]]
route = "/p/:name/..."
component = "app"

[[trigger.http]]
route = "/app/exact/headers"
component = "app"

[[trigger.http]]
route = "/q/:org_id/..."
component = "app"

[component.app]
source = "{P2}/wasi_http_app.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["http://127.0.0.1:*"]
[component.app.variables]
greeting = "{{ greeting }}, world"
"#;

fn header_map(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn sets_every_spin_header_and_overrides_spoofed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    let response = reqwest::Client::new()
        .get(s.url("/app/x/headers?q=1"))
        .header("spin-client-addr", "6.6.6.6:666")
        .header("spin-path-info", "/forged")
        .header("spin-path-match-name", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = header_map(&response.text().await.unwrap());
    assert_eq!(
        h["spin-full-url"],
        format!("http://{}/app/x/headers?q=1", s.addr)
    );
    assert_eq!(h["spin-path-info"], "/x/headers");
    assert_eq!(h["spin-matched-route"], "/app/...");
    assert_eq!(h["spin-raw-component-route"], "/app/...");
    assert_eq!(h["spin-component-route"], "/app");
    assert_eq!(h["spin-base-path"], "/");
    assert!(
        !h.contains_key("spin-path-match-name"),
        "a spoofed spin-* header is removed: {h:?}"
    );
    assert!(
        h["spin-client-addr"].starts_with("127.0.0.1:"),
        "{:?}",
        h["spin-client-addr"]
    );

    let (_, body) = get(&s.url("/p/alice/more/headers")).await;
    let h = header_map(&body);
    assert_eq!(h["spin-path-match-name"], "alice");
    let (_, body) = get(&s.url("/q/acme-1/headers")).await;
    assert_eq!(
        header_map(&body)["spin-path-match-org-id"],
        "acme-1",
        "Spin spells `_` as `-` in the header name"
    );
    assert_eq!(h["spin-matched-route"], "/p/:name/...");
    assert_eq!(h["spin-path-info"], "/more/headers");

    // The exact route beats the wildcard that also matches.
    let (_, body) = get(&s.url("/app/exact/headers")).await;
    let h = header_map(&body);
    assert_eq!(h["spin-matched-route"], "/app/exact/headers");
    assert_eq!(h["spin-path-info"], "");
    s.stop().await;
}

#[tokio::test]
async fn unknown_route_is_a_json_404() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    let r = reqwest::get(s.url("/nowhere")).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    assert!(
        v["error"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    s.stop().await;
}

#[tokio::test]
async fn key_value_persists_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    assert_eq!(
        put(&s.url("/app/kv/greeting"), b"kept across restarts")
            .await
            .0,
        204
    );
    assert_eq!(get(&s.url("/app/count/visits")).await, (200, "1".into()));
    assert_eq!(get(&s.url("/app/count/visits")).await, (200, "2".into()));
    s.stop().await;

    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    assert_eq!(
        get(&s.url("/app/kv/greeting")).await,
        (200, "kept across restarts".into())
    );
    assert_eq!(get(&s.url("/app/count/visits")).await, (200, "3".into()));
    assert_eq!(get(&s.url("/app/kv/missing")).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn a_store_not_granted_is_access_denied() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    let (status, body) = get(&s.url("/app/kv/x?store=secrets")).await;
    assert_eq!((status, body.as_str()), (403, "error: Error::AccessDenied"));
    let (status, body) = get(&s.url("/app/count/x?store=secrets")).await;
    assert_eq!((status, body.as_str()), (403, "error: Error::AccessDenied"));
    s.stop().await;
}

#[tokio::test]
async fn variables_render_from_defaults_and_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    assert_eq!(
        get(&s.url("/app/var/greeting")).await,
        (200, "hello, world".into())
    );
    assert_eq!(
        get(&s.url("/app/config/greeting")).await,
        (200, "hello, world".into())
    );
    assert_eq!(get(&s.url("/app/config/undeclared")).await.0, 404);
    let (status, body) = get(&s.url("/app/var/undeclared")).await;
    assert_eq!(status, 404);
    assert!(body.contains("Undefined"), "{body}");
    s.stop().await;

    let s = start(dir.path(), APP, |o| {
        o.variables.insert("greeting".into(), "howdy".into());
    })
    .await
    .unwrap();
    assert_eq!(
        get(&s.url("/app/var/greeting")).await,
        (200, "howdy, world".into())
    );
    s.stop().await;
}

#[tokio::test]
async fn a_required_variable_without_value_refuses_start() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = APP.replace(
        "greeting = { default = \"hello\" }",
        "greeting = { required = true }",
    );
    let error = start(dir.path(), &manifest, |_| {})
        .await
        .err()
        .expect("start must be refused")
        .to_string();
    assert!(
        error.contains("variable `greeting` is required")
            && error.contains("SPIN_VARIABLE_GREETING"),
        "{error}"
    );
}

#[tokio::test]
async fn a_bad_manifest_is_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = APP.replace(
        "key_value_stores = [\"default\"]",
        "key_value_stores = \"default\"",
    );
    let error = start(dir.path(), &manifest, |_| {})
        .await
        .err()
        .expect("start must be refused")
        .to_string();
    assert!(
        error.contains("spin.toml") && error.contains("key_value_stores"),
        "{error}"
    );
}

#[tokio::test]
async fn outbound_requests_only_reach_allowed_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    let allowed = format!("http://127.0.0.1:{}/app/kv/none", s.addr.port());
    let (_, body) = get(&s.url(&format!("/app/outbound?url={allowed}"))).await;
    assert_eq!(
        body, "status: 404",
        "the allowed call reached the server and got the app's 404"
    );
    for denied in [
        format!("http://localhost:{}/app/kv/none", s.addr.port()),
        "https://business-api.tiktok.com/".to_string(),
    ] {
        let (_, body) = get(&s.url(&format!("/app/outbound?url={denied}"))).await;
        assert_eq!(body, "error: ErrorCode::HttpRequestDenied", "{denied}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_guest_trap_is_a_json_500_and_the_next_request_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    let r = reqwest::get(s.url("/app/trap")).await.unwrap();
    assert_eq!(r.status(), 500);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "internal_error");
    assert_eq!(v["error"]["request_id"], id);
    assert_eq!(get(&s.url("/app/var/greeting")).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_guest_that_never_answers_gets_504_and_the_host_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |o| {
        o.runtime_config.limits.request_timeout_ms = 300
    })
    .await
    .unwrap();
    let r = reqwest::get(s.url("/app/loop")).await.unwrap();
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "timeout");
    assert_eq!(get(&s.url("/app/var/greeting")).await.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn memory_beyond_the_cap_fails_only_that_request() {
    let dir = tempfile::tempdir().unwrap();
    // 80 MiB fits the default 128 MiB cap…
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    assert_eq!(get(&s.url("/app/grow?mb=80")).await, (200, "grew".into()));
    s.stop().await;
    // …and not a 64 MiB one; the next request is served all the same.
    let s = start(dir.path(), APP, |o| {
        o.runtime_config.limits.max_memory_bytes = 64 << 20
    })
    .await
    .unwrap();
    assert_eq!(get(&s.url("/app/grow?mb=80")).await.0, 500);
    assert_eq!(get(&s.url("/app/grow?mb=8")).await, (200, "grew".into()));
    s.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |o| {
        o.runtime_config.limits.max_request_body_bytes = 1024
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let r = client
        .put(s.url("/app/kv/big"))
        .body(vec![b'x'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "payload_too_large");
    // Without a Content-Length (chunked), the limit holds too.
    let chunks = futures_stream(vec![vec![b'y'; 600], vec![b'y'; 600]]);
    let r = client
        .put(s.url("/app/kv/big"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        client
            .put(s.url("/app/kv/small"))
            .body(vec![b'x'; 1024])
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        get(&s.url("/app/kv/big")).await.0,
        404,
        "nothing of a refused body is stored"
    );
    s.stop().await;
}

fn futures_stream(
    chunks: Vec<Vec<u8>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct Chunks(std::vec::IntoIter<Vec<u8>>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(Ok))
        }
    }
    Chunks(chunks.into_iter())
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    // Stopped half a second in (time enough to arrive on a busy CI machine), a second
    // before it answers.
    let slow = tokio::spawn(reqwest::get(s.url("/app/sleep?ms=1500")));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let addr = s.addr;
    s.stop().await;
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slept");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test]
async fn a_wasip1_module_is_componentized_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = APP.replace("{P2}/wasi_http_app.wasm", "{P1}/wasi_http_app.wasm");
    let s = start(dir.path(), &manifest, |_| {}).await.unwrap();
    assert_eq!(put(&s.url("/app/kv/k"), b"from wasip1").await.0, 204);
    assert_eq!(get(&s.url("/app/kv/k")).await, (200, "from wasip1".into()));
    assert_eq!(
        get(&s.url("/app/var/greeting")).await,
        (200, "hello, world".into())
    );
    s.stop().await;
}

#[tokio::test]
async fn each_request_gets_a_fresh_instance_unless_reuse_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            get(&s.url("/app/served")).await,
            (200, "1".into()),
            "no state survives a request"
        );
    }
    s.stop().await;

    let s = start(dir.path(), APP, |o| {
        o.runtime_config.component.insert(
            "app".into(),
            tiktok_edge_runtime::runtime_config::ComponentSettings {
                max_instance_reuse: 3,
                max_concurrent_reuse: 1,
                ..Default::default()
            },
        );
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(get(&s.url("/app/served")).await.1);
    }
    assert_eq!(
        seen,
        ["1", "2", "3", "1"],
        "one instance serves 3 requests in a row, then a new one takes over"
    );
    s.stop().await;
}

#[tokio::test]
async fn compiled_components_are_cached_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    // The data dir's own cache, not the one the other tests share.
    let own_cache = |o: &mut tiktok_edge_runtime::AppOptions| o.compiled_cache = None;
    let s = start(dir.path(), APP, own_cache).await.unwrap();
    s.stop().await;
    let compiled = crate::common::data_dir(dir.path()).join("compiled");
    let cached: Vec<_> = std::fs::read_dir(&compiled)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(cached[0].extension().unwrap(), "cwasm");
    // A corrupt cache entry is ignored and replaced, not fatal.
    std::fs::write(&cached[0], b"garbage").unwrap();
    let s = start(dir.path(), APP, own_cache).await.unwrap();
    assert_eq!(get(&s.url("/app/var/greeting")).await.0, 200);
    s.stop().await;
    assert!(
        std::fs::read(&cached[0]).unwrap().len() > 1000,
        "the cache entry was rewritten"
    );
}

#[tokio::test]
async fn malformed_requests_get_errors_and_the_server_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), APP, |_| {}).await.unwrap();
    let oversized_header = format!(
        "GET /app/served HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    for (garbage, expected) in [
        (
            b"\x00\x01\x02 not http at all\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
        (oversized_header.into_bytes(), "HTTP/1.1 431"),
        (
            b"GET /app/served HTTP/1.1\r\nHost: bad host\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 400",
        ),
    ] {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let _ = stream.write_all(&garbage).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut answer),
        )
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(expected),
            "expected {expected}: {answer}"
        );
    }
    assert_eq!(get(&s.url("/app/served")).await.0, 200);
    s.stop().await;
}
