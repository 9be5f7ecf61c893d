//! Tenants: organization ids, organizations and their API keys, TikTok connections and
//! the vault that seals their tokens.

pub mod access;
pub mod advertiser_access;
pub mod api;
pub mod api_keys;
pub mod connections;
pub mod org_id;
pub mod organizations;
pub mod vault;
