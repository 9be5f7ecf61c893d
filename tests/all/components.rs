//! Our five components: they import only the interfaces every target host offers, and
//! their small surface (HTTP info route and typed `info` export) works.

use crate::common::{COMPONENTS, OUR_COMPONENTS, get, start};
use serde_json::Value;
use wasmparser::{Parser, Payload};

/// What a tiktok-edge component may import (design.md §2): wasi:http 0.2 outgoing,
/// key-value draft2, config 2024-09-27, and what wasm32-wasip2's std brings.
fn import_allowed(name: &str) -> bool {
    const EXACT: &[&str] = &[
        // Type definitions only (no functions): our exported interfaces `use` them.
        "tiktok:edge/types@0.1.0",
        "wasi:keyvalue/store@0.2.0-draft2",
        "wasi:keyvalue/atomics@0.2.0-draft2",
        "wasi:keyvalue/batch@0.2.0-draft2",
        "wasi:config/store@0.2.0-draft-2024-09-27",
    ];
    // wasm-component-ld unifies our wasi:http@0.2.0 imports with the 0.2.x that std's
    // bindings know, so any 0.2 patch version is a wasi:http 0.2 import.
    const STD_PACKAGES: &[&str] = &[
        "wasi:http/types@",
        "wasi:http/outgoing-handler@",
        "wasi:cli/",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:random/",
    ];
    EXACT.contains(&name)
        || (STD_PACKAGES.iter().any(|p| name.starts_with(p)) && name.contains("@0.2."))
}

fn component_imports_and_exports(file: &str) -> (Vec<String>, Vec<String>) {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut depth = 0;
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.unwrap() {
            Payload::ComponentSection { .. } | Payload::ModuleSection { .. } => depth += 1,
            Payload::End(_) if depth > 0 => depth -= 1,
            Payload::ComponentImportSection(s) if depth == 0 => {
                imports.extend(s.into_iter().map(|i| i.unwrap().name.name.to_string()));
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                exports.extend(s.into_iter().map(|e| e.unwrap().name.name.to_string()));
            }
            _ => {}
        }
    }
    (imports, exports)
}

fn wasm_file(id: &str) -> String {
    format!("{COMPONENTS}/{}.wasm", id.replace('-', "_"))
}

#[test]
fn components_import_only_the_supported_interfaces() {
    for (id, iface) in OUR_COMPONENTS {
        let (imports, exports) = component_imports_and_exports(&wasm_file(id));
        assert!(!imports.is_empty(), "{id}: no imports read");
        let outside: Vec<_> = imports.iter().filter(|i| !import_allowed(i)).collect();
        assert!(
            outside.is_empty(),
            "{id} imports interfaces outside the supported list: {outside:?}"
        );
        assert!(
            exports.contains(&"wasi:http/incoming-handler@0.2.0".to_string()),
            "{id} exports {exports:?}"
        );
        assert!(
            exports.contains(&format!("tiktok:edge/{iface}@0.1.0")),
            "{id} exports {exports:?}"
        );
    }
}

#[test]
fn the_import_check_itself_rejects_host_private_interfaces() {
    for private in [
        "wasi:http/types@0.3.0",
        "spin:key-value/key-value@3.0.0",
        "fermyon:spin/key-value@2.0.0",
        "wasi:keyvalue/store@0.2.0-draft",
        "wasi:filesystem/types@0.2.0",
        "wasi:sockets/tcp@0.2.0",
        "wasi:config/store@0.2.0-rc.1",
    ] {
        assert!(!import_allowed(private), "{private}");
    }
}

fn manifest() -> String {
    let mut m = String::from(
        "spin_manifest_version = 2\n[application]\nname = \"ours\"\n[variables]\napi = { default = \"http://127.0.0.1:9\" }\n",
    );
    for (id, _) in OUR_COMPONENTS {
        m.push_str(&format!(
            "[[trigger.http]]\nroute = \"/info/{id}\"\ncomponent = \"{id}\"\n[component.{id}]\nsource = \"{{COMPONENTS}}/{}.wasm\"\nkey_value_stores = [\"default\"]\n[component.{id}.variables]\ntiktok_api_base_url = \"{{{{ api }}}}\"\n",
            id.replace('-', "_")
        ));
    }
    m
}

#[tokio::test]
async fn every_component_serves_its_info_route_from_store_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &manifest(), |_| {}).await.unwrap();
    for (id, _) in OUR_COMPONENTS {
        for expected_calls in 1..=2 {
            let (status, body) = get(&s.url(&format!("/info/{id}"))).await;
            assert_eq!(status, 200, "{id}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["name"], id);
            assert_eq!(v["api_base_url"], "http://127.0.0.1:9");
            assert_eq!(
                v["info_calls"], expected_calls,
                "{id} counts its calls in the key-value store"
            );
        }
        let r = reqwest::Client::new()
            .post(s.url(&format!("/info/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_missing_variable_is_a_json_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest().replace("tiktok_api_base_url = \"{{ api }}\"\n", "");
    let s = start(dir.path(), &manifest, |_| {}).await.unwrap();
    let r = reqwest::get(s.url("/info/pixel-collector")).await.unwrap();
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "internal_error");
    assert_eq!(
        v["error"]["message"],
        "variable tiktok_api_base_url is not set"
    );
    s.stop().await;
}

#[tokio::test]
async fn typed_info_export_can_be_called_without_http() {
    use wasmtime::component::Val;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &manifest(), |_| {}).await.unwrap();
    for (id, iface) in OUR_COMPONENTS {
        let (mut store, instance) = s.app.instantiate(id).await.unwrap();
        let iface_index = instance
            .get_export_index(&mut store, None, &format!("tiktok:edge/{iface}@0.1.0"))
            .unwrap();
        let func_index = instance
            .get_export_index(&mut store, Some(&iface_index), "info")
            .unwrap();
        let func = instance.get_func(&mut store, func_index).unwrap();
        let mut results = [Val::Bool(false)];
        func.call_async(&mut store, &[], &mut results)
            .await
            .unwrap();
        let Val::Result(Ok(Some(record))) = &results[0] else {
            panic!("{id}: info failed: {:?}", results[0])
        };
        let Val::Record(fields) = &**record else {
            panic!("{id}: not a record: {record:?}")
        };
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(field("name"), Val::String(id.into()));
        assert_eq!(
            field("api-base-url"),
            Val::String("http://127.0.0.1:9".into())
        );
        assert_eq!(field("info-calls"), Val::S64(1));
    }
    s.stop().await;
}

#[tokio::test]
async fn typed_campaign_calls_fail_with_the_shared_error_variant() {
    use wasmtime::component::Val;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &manifest(), |_| {}).await.unwrap();
    let (mut store, instance) = s.app.instantiate("campaign-ops").await.unwrap();
    let iface = instance
        .get_export_index(&mut store, None, "tiktok:edge/campaigns@0.1.0")
        .unwrap();
    let create = instance
        .get_export_index(&mut store, Some(&iface), "create")
        .unwrap();
    let create = instance.get_func(&mut store, create).unwrap();
    let call = |body: &str| {
        vec![
            Val::String("acme".into()),
            Val::String("111".into()),
            Val::Enum("campaign".into()),
            Val::String(body.into()),
            Val::Option(None),
        ]
    };
    let mut results = [Val::Bool(false)];
    create
        .call_async(&mut store, &call("{not json"), &mut results)
        .await
        .unwrap();
    let Val::Result(Err(Some(error))) = &results[0] else {
        panic!("not an error: {:?}", results[0])
    };
    let Val::Variant(case, Some(payload)) = &**error else {
        panic!("{error:?}")
    };
    assert_eq!(case, "invalid-input");
    let Val::Record(fields) = &**payload else {
        panic!("{payload:?}")
    };
    assert_eq!(
        fields[0],
        ("field".to_string(), Val::String("body-json".into()))
    );
    // A well-formed call for an advertiser nobody connected: not found, typed.
    let (mut store, instance) = s.app.instantiate("campaign-ops").await.unwrap();
    let create = instance
        .get_export_index(&mut store, Some(&iface), "create")
        .unwrap();
    let create = instance.get_func(&mut store, create).unwrap();
    create
        .call_async(&mut store, &call(r#"{"campaign_name":"x"}"#), &mut results)
        .await
        .unwrap();
    let Val::Result(Err(Some(error))) = &results[0] else {
        panic!("not an error: {:?}", results[0])
    };
    assert!(
        matches!(&**error, Val::Variant(case, _) if case == "not-found"),
        "{error:?}"
    );
    s.stop().await;
}
