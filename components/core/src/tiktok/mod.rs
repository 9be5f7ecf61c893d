//! TikTok's Business API as every capability calls it: the client with its envelope,
//! return codes and retries, and personal data normalized and hashed as TikTok takes it.

pub mod client;
pub mod codes;
pub mod pii;
