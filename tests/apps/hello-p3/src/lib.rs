//! Answers every request with `hello`: the trivial spin-sdk 7 (`wasi:http` 0.3) route
//! benchmarks use. No Spin-only imports, so `wasmtime serve` runs it too.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    Ok("hello")
}
