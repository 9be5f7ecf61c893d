//! Pixel events: websites post them ([`api`], [`ingest`]); each is checked and its
//! personal data hashed ([`event`]) and stored before the answer ([`queue`]); the
//! forwarder ([`forward`]) sends them on to TikTok's Events API in batches. The pixels
//! themselves are in [`registry`].
//!
//! Storage (details, crash rules and lifetimes in `docs/storage.md`):
//! - `pixels`, `org/{org}/pixels[/{id}[/token]]`, `pixel/{id}` (its org): the registry;
//! - `pq/{pixel}/…`: the queue ([`queue`]): `seq` (slots handed out), `e/{slot}` (a
//!   request's events as one run), `head` and `lease` (the forwarder's place and
//!   ownership), `seen` (tail sightings, to skip slots a dead writer left empty),
//!   `dedup/{digest}` and `marks/…` (48 h dedup marks and the log that retires them),
//!   `dead/…` (dead letters), `stats/{name}`.
//!
//! Write order: slots are taken (`seq`), then the runs and their dedup marks written in
//! one batch, then the answer: an acknowledged event is stored. The forwarder moves the
//! head past a sent batch before it deletes the runs, so a crash between them sends
//! nothing twice.

pub mod api;
pub mod event;
pub mod forward;
pub mod ingest;
pub mod queue;
pub mod registry;

#[cfg(test)]
mod tests;
