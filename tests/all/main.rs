//! End-to-end tests, one binary (linking wasmtime once): tiktok-edge's runtime serving our
//! components and apps written for other hosts, against the TikTok mock, over loopback.

mod common;

mod browser;
mod campaigns;
mod components;
mod host;
mod metrics;
mod oauth;
mod pixel;
mod spin_sdk;
mod vocabulary;
mod webhooks;
