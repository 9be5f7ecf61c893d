//! Ad videos (tiktok-api.md §5.1): checked against TikTok's spec before upload,
//! streamed to `/file/video/ad/upload/` with their MD5 `video_signature`, then polled on
//! `/file/video/ad/info/` until TikTok has transcoded them.
//!
//! The file is never held whole: it flows from the caller to TikTok in 64 KiB pieces
//! while a scanner reads its ISO-BMFF box structure, the MD5 and the size. Only the
//! `ftyp` and `moov` boxes (the header: a few KiB to a few MiB) are kept.
//!
//! - When `moov` comes before the media data (web-optimized "faststart" files), every
//!   check runs before a byte is sent, and a failing file is answered 422 without any
//!   TikTok call.
//! - When `moov` comes last (many phone recordings), the checks run when it arrives at
//!   the end. A failing file's upload is then aborted before its last byte, so TikTok
//!   never receives a complete request and creates nothing.
//!
//! The MD5 covers the whole file, so the `video_signature` field is sent after the file
//! part.

/// TikTok's limit for an ad video (§5.1).
pub const MAX_VIDEO_BYTES: u64 = 500 << 20;

/// Containers TikTok takes (§5.1); the ones after `mp4, mov, 3gp` are not ISO-BMFF and
/// cannot be checked here.
pub const TIKTOK_CONTAINERS: &str = ".mp4, .mov, .mpeg, .3gp, .avi";

mod mp4;
pub mod sample;
pub mod spec;
pub mod upload;

pub use upload::{UploadRequest, status, upload, upload_idempotent};

#[cfg(test)]
mod tests;
