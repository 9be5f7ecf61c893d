//! Campaigns, ad groups and ads ([`entities`], checked by [`rules`]), videos
//! ([`video`]), identities and Spark Ads ([`spark_ads`]), audiences ([`audiences`]) and
//! catalogs ([`catalog`]) at TikTok. Routes: [`api`] (the `campaign-ops` component).
//!
//! Storage: everything lives at TikTok; only idempotency records are kept,
//! `org/{org}/idem/{sha256(scope, key)}` ([`idempotency`]). A record is written pending
//! before TikTok is called (so two requests with one key cannot both call), completed
//! with the answer after, and deleted if the call fails. TikTok's `request_id` is derived
//! from the key, so a retry after a crash mid-call cannot create twice.

pub mod api;
pub mod audiences;
pub mod catalog;
pub mod entities;
pub mod idempotency;
pub mod rules;
pub mod spark_ads;
pub mod video;
