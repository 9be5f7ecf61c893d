//! The mock over HTTP against TikTok's contract (tiktok-api.md), one test binary.

mod api;
mod campaigns;
mod creative_catalog;
mod events;
mod files;
mod webhooks;
