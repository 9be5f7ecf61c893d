//! Metrics: TikTok's reports synced into the store and queried.

pub mod api;
pub mod query;
pub mod report;
pub mod store;
pub mod sync;

#[cfg(test)]
mod tests;
