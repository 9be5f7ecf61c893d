//! Pixel events: websites post them, they are checked, hashed and stored before the
//! answer, then forwarded to TikTok's Events API.

pub mod api;
pub mod event;
pub mod forward;
pub mod ingest;
pub mod queue;
pub mod registry;

#[cfg(test)]
mod tests;
