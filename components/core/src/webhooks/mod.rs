//! TikTok webhooks (tiktok-api.md §8): signature verification, durable storage before
//! the 200, and idempotent processing from the store.
//!
//! Threat model: the receiving URL is public, so anyone can post anything to it, and
//! TikTok itself delivers at least once, re-signing every retry for up to 72 h. So:
//! - nothing is stored or counted per delivery before its signature verifies (only a
//!   per-app rejection counter moves), and unknown app names touch no app keys;
//! - the signature is checked over the exact raw bytes, in constant time, against every
//!   active secret of the app (two during a rotation), then the timestamp window;
//! - a delivery is identified by what it says (client_key, event, create_time,
//!   user_openid, content), not by its signature, so a retry that TikTok re-signed is a
//!   duplicate too, and one answered `duplicate: true` is never processed twice.
//!
//! Storage (per app, under `wh/{app}/`; details in `docs/storage.md`):
//! - `d/{id}`: the delivery record (raw body, parsed form, status, outcome);
//! - `seq`, `log/{n}`: the arrival log, which processing and listings walk;
//! - `head`: how far processing got; `lease`: who is processing (see [`crate::platform::lease`]);
//! - `seen`: when the log's tail was seen where, to tell dead receivers' empty slots
//!   (see [`crate::platform::gaps`]);
//! - `dead`: ids of deliveries that failed to process; `stats/{name}`: counters.
//!
//! Deliveries are attributed to organizations while being processed (through the
//! TikTok accounts their connections hold); each organization has its own log of them
//! under `org/{org}/wh/`.
//!
//! Write order: signature first (nothing stored before it verifies), then the slot
//! (`seq`), the record, the log entry, then the 200. Processing applies a delivery's
//! effects (idempotent) before its status, so a run killed between them repeats them.

pub mod api;
pub mod apps;
pub mod deliveries;
pub mod process;
pub mod receive;
pub mod signature;

#[cfg(test)]
mod tests;
