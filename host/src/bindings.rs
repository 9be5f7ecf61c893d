//! Host bindings, one `bindgen!` per WIT package version, as wasmtime's own crates do.
//!
//! Guest-visible resources (key-value stores and buckets) are all the host type
//! [`OpenStore`], so every interface version shares one implementation per operation.

/// `wasi:keyvalue@0.2.0-draft2` (Spin's, and what our components import).
pub mod keyvalue_draft2 {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world kv { import wasi:keyvalue/store@0.2.0-draft2; import wasi:keyvalue/atomics@0.2.0-draft2; import wasi:keyvalue/batch@0.2.0-draft2; }",
        path: ["../wit/deps/keyvalue@0.2.0-draft2"],
        with: {
            "wasi:keyvalue/store.bucket": crate::kv::OpenStore,
            "wasi:keyvalue/atomics.cas": crate::kv::host::CasHandle,
        },
        // Writes wait for the store's group commit without holding a thread.
        imports: {
            "wasi:keyvalue/store.[method]bucket.set": async | trappable,
            "wasi:keyvalue/store.[method]bucket.delete": async | trappable,
            "wasi:keyvalue/atomics.increment": async | trappable,
            "wasi:keyvalue/atomics.swap": async | trappable,
            "wasi:keyvalue/batch.set-many": async | trappable,
            "wasi:keyvalue/batch.delete-many": async | trappable,
            default: trappable,
        },
    });
}

/// `wasi:keyvalue@0.2.0-draft` (what `wasmtime serve` speaks).
pub mod keyvalue_draft {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world kv { import wasi:keyvalue/store@0.2.0-draft; import wasi:keyvalue/atomics@0.2.0-draft; import wasi:keyvalue/batch@0.2.0-draft; }",
        path: ["wit/keyvalue-draft"],
        with: { "wasi:keyvalue/store.bucket": crate::kv::OpenStore },
        imports: { default: trappable },
    });
}

/// `fermyon:spin/key-value@2.0.0` and `fermyon:spin/variables@2.0.0`.
pub mod spin_v2 {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world spin { import fermyon:spin/key-value@2.0.0; import fermyon:spin/variables@2.0.0; }",
        path: ["wit/spin-v2"],
        with: { "fermyon:spin/key-value.store": crate::kv::OpenStore },
        imports: { default: trappable },
    });
}

/// `spin:key-value/key-value@3.0.0` and `spin:variables/variables@3.0.0` (Spin 4, spin-sdk 7): async functions.
pub mod spin_v3 {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world spin { import spin:key-value/key-value@3.0.0; import spin:variables/variables@3.0.0; }",
        path: ["wit/spin-key-value-v3", "wit/spin-variables-v3"],
        with: { "spin:key-value/key-value.store": crate::kv::OpenStore },
    });
}

/// `wasi:config/store` in both versions hosts are asked for.
pub mod config_2024_09_27 {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world config { import wasi:config/store@0.2.0-draft-2024-09-27; }",
        path: ["../wit/deps/config@0.2.0-draft-2024-09-27"],
        imports: { default: trappable },
    });
}

pub mod config_rc1 {
    wasmtime::component::bindgen!({
        inline: "package tiktok-edge:host; world config { import wasi:config/store@0.2.0-rc.1; }",
        path: ["wit/config-rc1"],
        imports: { default: trappable },
    });
}
