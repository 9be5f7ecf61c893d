//! Campaigns, ad groups and ads, videos, identities and Spark Ads, audiences and catalogs.

pub mod api;
pub mod audiences;
pub mod catalog;
pub mod entities;
pub mod idempotency;
pub mod rules;
pub mod spark_ads;
pub mod video;
