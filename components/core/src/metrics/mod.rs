//! Metrics: TikTok's reports ([`report`]) synced into the store ([`sync`], [`store`])
//! and queried with every ratio computed from sums ([`query`]). Routes: [`api`] (the
//! `metrics-fetch` component).
//!
//! Storage (details in `docs/storage.md`):
//! - `org/{org}/m/{advertiser}/{level}/{day|hour}/{YYYY-MM-DD}`: one local date's rows
//!   of every entity, replaced whole by a sync, so a re-run never duplicates a row;
//! - `org/{org}/m/{advertiser}/{level}/{day|hour}/state`: how far the sync got and the
//!   range still to fetch.
//!
//! Write order: a chunk's dates, then the state moved past the chunk; a crash between
//! them fetches the chunk again and replaces the same dates.

pub mod api;
pub mod query;
pub mod report;
pub mod store;
pub mod sync;

#[cfg(test)]
mod tests;
