//! Tenants: organization ids, organizations and their API keys, who may call
//! ([`access`]), TikTok connections and the vault that seals their tokens, and
//! [`advertiser_access`], the way every capability calls TikTok for an advertiser.
//! Routes: [`api`] (served by the `accounts` component).
//!
//! Storage (details, crash rules and lifetimes in `docs/storage.md`):
//! - `orgs`: the ids of all organizations; `org/{org}/profile`: an organization;
//! - `org/{org}/apikeys[/{key_id}]`: key records (SHA-256 digests only) and their index;
//! - `org/{org}/connections[/{id}]`, `org/{org}/tokens/{id}` (sealed),
//!   `org/{org}/advertisers/{advertiser_id}` (the connection acting for it),
//!   `openid/{sha256(open_id)}` (the connections holding a TikTok account);
//! - `vault/records`: every sealed record's key, for rotation.
//!
//! Write order: a record before the index that lists it (readers skip listed ids without
//! a record); a connection's token, record, indexes, then its advertiser mappings, undone
//! in reverse when a step fails (see [`connections::store`]).

pub mod access;
pub mod advertiser_access;
pub mod api;
pub mod api_keys;
pub mod connections;
pub mod org_id;
pub mod organizations;
pub mod vault;
