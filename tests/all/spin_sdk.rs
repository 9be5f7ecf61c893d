//! A Spin app written with the latest spin-sdk (7.x: `wasi:http/handler@0.3.0`,
//! `spin:key-value@3.0.0`, `spin:variables@3.0.0`) runs unchanged, fresh instances or
//! reused ones.

use crate::common::{get, put, start};
use tiktok_edge_runtime::component::HandlerKind;
use tiktok_edge_runtime::runtime_config::ComponentSettings;

const SPIN_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "spin-sdk-7"

[variables]
greeting = { default = "hi from spin" }

[[trigger.http]]
route = "/spin/..."
component = "spin-app"

[component.spin-app]
source = "{P2}/spin_sdk_app.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = ["http://127.0.0.1:*"]
[component.spin-app.variables]
greeting = "{{ greeting }}"
"#;

async fn exercise(s: &crate::common::Running) {
    assert_eq!(put(&s.url("/spin/kv/colour"), b"teal").await.0, 204);
    assert_eq!(put(&s.url("/spin/kv/size"), b"xl").await.0, 204);
    assert_eq!(get(&s.url("/spin/kv/colour")).await, (200, "teal".into()));
    assert_eq!(get(&s.url("/spin/kv/nothing")).await.0, 404);
    let (status, keys) = get(&s.url("/spin/keys")).await;
    assert_eq!(status, 200);
    let mut keys: Vec<_> = keys.lines().collect();
    keys.sort();
    assert_eq!(keys, ["colour", "size"]);
    assert_eq!(
        get(&s.url("/spin/var/greeting")).await,
        (200, "hi from spin".into())
    );
    let (status, body) = get(&s.url("/spin/var/nope")).await;
    assert_eq!(status, 404);
    assert!(body.contains("Undefined"), "{body}");
    let (status, body) = get(&s.url("/spin/kv/x?store=other")).await;
    assert_eq!(status, 403);
    assert!(body.contains("AccessDenied"), "{body}");
    // wasi:http 0.3 outbound goes through the same allow-list as 0.2.
    let (_, body) = get(&s.url(&format!(
        "/spin/outbound?url=http://127.0.0.1:{}/spin/kv/colour",
        s.addr.port()
    )))
    .await;
    assert_eq!(body, "status: 200");
    let (_, body) = get(&s.url("/spin/outbound?url=https://business-api.tiktok.com/")).await;
    assert_eq!(body, "error: ErrorCode::HttpRequestDenied");
}

#[tokio::test]
async fn spin_sdk_7_app_runs_with_key_value_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), SPIN_APP, |_| {}).await.unwrap();
    assert_eq!(s.app.routes()[0].2, HandlerKind::P3);
    exercise(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn spin_sdk_7_app_runs_with_instance_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), SPIN_APP, |o| {
        o.runtime_config.component.insert(
            "spin-app".into(),
            ComponentSettings {
                max_instance_reuse: 128,
                max_concurrent_reuse: 16,
                ..Default::default()
            },
        );
    })
    .await
    .unwrap();
    exercise(&s).await;
    let many: Vec<_> = (0..32)
        .map(|_| tokio::spawn(get(s.url("/spin/kv/colour"))))
        .collect();
    for r in many {
        let (status, body) = r.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "teal"));
    }
    s.stop().await;
}

#[tokio::test]
async fn the_benchmark_apps_answer_hello() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = "spin_manifest_version = 2\n[application]\nname = \"bench\"\n\
        [[trigger.http]]\nroute = \"/p2\"\ncomponent = \"p2\"\n[[trigger.http]]\nroute = \"/p3\"\ncomponent = \"p3\"\n\
        [component.p2]\nsource = \"{P2}/hello_p2.wasm\"\n[component.p3]\nsource = \"{P2}/hello_p3.wasm\"\n";
    let s = start(dir.path(), manifest, |_| {}).await.unwrap();
    assert_eq!(get(s.url("/p2")).await, (200, "hello".into()));
    assert_eq!(get(s.url("/p3")).await, (200, "hello".into()));
    s.stop().await;
}
