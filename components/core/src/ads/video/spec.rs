//! TikTok's ad video spec (tiktok-api.md §5.1) as checks over a file's facts, each
//! named, so a refusal lists every check that failed.

use super::MAX_VIDEO_BYTES;
use super::mp4::Facts;
use crate::ApiError;
use crate::platform::env::Env;
use serde::Serialize;
use serde_json::{Value, json};

/// One check's outcome, as the response lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The spec's limits (§5.1); the duration range is configurable
/// (`video_min_seconds`, `video_max_seconds`) for placements that allow longer videos.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub max_bytes: u64,
    pub min_seconds: f64,
    pub max_seconds: f64,
    pub min_kbps: f64,
}

impl Spec {
    pub fn from_env(env: &Env) -> Result<Self, ApiError> {
        Ok(Spec {
            max_bytes: env.int_var(
                "video_max_bytes",
                MAX_VIDEO_BYTES as i64,
                1..=MAX_VIDEO_BYTES as i64,
            )? as u64,
            min_seconds: env.number_var("video_min_seconds", 5.0, 0.0..=600.0)?,
            max_seconds: env.number_var("video_max_seconds", 60.0, 1.0..=600.0)?,
            min_kbps: 516.0,
        })
    }
}

/// Aspect ratios TikTok takes with their minimum sizes (§5.1).
const RATIOS: [(&str, f64, u32, u32); 3] = [
    ("9:16", 9.0 / 16.0, 540, 960),
    ("1:1", 1.0, 640, 640),
    ("16:9", 16.0 / 9.0, 960, 540),
];

/// The checks that `facts` (and the size, when known) allow now.
pub(super) fn checks(f: &Facts, size: Option<u64>, spec: &Spec) -> Vec<Check> {
    let mut out = Vec::new();
    let mut add = |check, ok, detail: String| out.push(Check { check, ok, detail });
    match &f.container {
        Some(c) => add("container", true, format!("{c} (ISO-BMFF)")),
        None => add("container", false, "not an ISO-BMFF file".into()),
    }
    if let Some(size) = size {
        add(
            "size",
            size <= spec.max_bytes,
            format!("{size} bytes (at most {})", spec.max_bytes),
        );
    }
    match (f.width, f.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => {
            let r = f64::from(w) / f64::from(h);
            match RATIOS
                .iter()
                .find(|(_, want, ..)| (r / want - 1.0).abs() <= 0.02)
            {
                Some((name, _, min_w, min_h)) => {
                    add("aspect_ratio", true, format!("{w}×{h} is {name}"));
                    add(
                        "resolution",
                        w >= *min_w && h >= *min_h,
                        format!("{w}×{h} (at least {min_w}×{min_h} for {name})"),
                    );
                }
                None => add(
                    "aspect_ratio",
                    false,
                    format!("{w}×{h} is not 9:16, 1:1 or 16:9"),
                ),
            }
        }
        _ => add("video_track", false, "no video track with a size".into()),
    }
    match &f.codec {
        Some(c) => add(
            "codec",
            matches!(c.as_str(), "avc1" | "avc3" | "hvc1" | "hev1" | "mp4v"),
            format!("{c} (H.264, H.265 or MPEG-4 Part 2 are taken)"),
        ),
        None if f.width.is_some() => add("codec", false, "the video track names no codec".into()),
        None => {}
    }
    match f.duration_seconds {
        Some(d) => {
            add(
                "duration",
                d >= spec.min_seconds && d <= spec.max_seconds,
                format!(
                    "{d:.2} s (from {} to {} s)",
                    spec.min_seconds, spec.max_seconds
                ),
            );
            if let Some(size) = size
                && d > 0.0
            {
                let kbps = size as f64 * 8.0 / d / 1000.0;
                add(
                    "bitrate",
                    kbps >= spec.min_kbps,
                    format!("{kbps:.0} kbps (at least {})", spec.min_kbps),
                );
            }
        }
        None => add("duration", false, "the header has no duration".into()),
    }
    out
}

/// What a file that is not ISO-BMFF looks like, for a useful refusal.
pub(super) fn sniff_other(head: &[u8]) -> &'static str {
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"AVI " {
        "an AVI file"
    } else if head.starts_with(&[0, 0, 1, 0xBA]) || head.starts_with(&[0, 0, 1, 0xB3]) {
        "an MPEG program stream"
    } else if head.starts_with(b"\x1aE\xdf\xa3") {
        "a Matroska/WebM file"
    } else {
        "not a video container"
    }
}

pub(super) fn rejected(checks: Vec<Check>, message: String) -> (u16, Value) {
    (
        422,
        json!({
            "error": {"code": "video_rejected", "message": message, "field": "file"},
            "checks": checks,
        }),
    )
}
