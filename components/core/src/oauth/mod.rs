//! Authorizing TikTok access: the signed `state`, the OAuth flows and their routes.

pub mod api;
pub mod flow;
pub mod state;
