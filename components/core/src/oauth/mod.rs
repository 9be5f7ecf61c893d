//! Authorizing TikTok access: the signed, expiring, single-use `state` ([`state`]), the
//! advertiser and creator flows and creator-token refresh ([`flow`]), and their routes
//! ([`api`], served by the `accounts` component with `tenancy::api`).
//!
//! Storage: `oauth/state-used/{nonce}`, a counter per callback whose state verified;
//! only the first callback to increment it gets 1, before the code is exchanged, so a
//! crash after it uses the state up. Connections are stored through
//! `tenancy::connections` (details in `docs/storage.md`).

pub mod api;
pub mod flow;
pub mod state;
