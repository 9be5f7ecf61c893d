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

use crate::ApiError;
use crate::connections::AdvertiserAccess;
use crate::env::Env;
use crate::http::Request;
use crate::idempotency::{self, Outcome};
use crate::multipart::Form;
use crate::tiktok::{BodySource, Call};
use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;

/// TikTok's limit for an ad video (§5.1).
pub const MAX_VIDEO_BYTES: u64 = 500 << 20;
/// The largest `moov` box kept for inspection.
const MAX_MOOV_BYTES: usize = 64 << 20;
/// How much of the file is read ahead looking for `moov` before the upload starts.
const LOOKAHEAD_BYTES: usize = 16 << 20;
const CHUNK: usize = 64 << 10;
/// How long an upload attempt holds its Idempotency-Key before another may take over:
/// the component's request timeout in the shipped runtime config, and a minute more.
const UPLOAD_PENDING_SECONDS: i64 = 16 * 60;

/// Containers TikTok takes (§5.1); the ones after `mp4, mov, 3gp` are not ISO-BMFF and
/// cannot be checked here.
pub const TIKTOK_CONTAINERS: &str = ".mp4, .mov, .mpeg, .3gp, .avi";

/// What the caller sends: the file's name and declared length.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub file_name: String,
    pub content_length: Option<u64>,
}

impl UploadRequest {
    /// From the request's `file_name` query parameter and `Content-Length`.
    pub fn from_request(req: &Request) -> Result<Self, ApiError> {
        let file_name = req.query_param("file_name").ok_or_else(|| {
            ApiError::invalid("file_name", "is required, e.g. ?file_name=summer.mp4")
        })?;
        if file_name.is_empty()
            || file_name.chars().count() > 100
            || file_name.contains(['/', '\\'])
            || file_name.chars().any(char::is_control)
        {
            return Err(ApiError::invalid(
                "file_name",
                "must be 1 to 100 characters, without slashes or control characters",
            ));
        }
        let content_length = match req.header("content-length") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| ApiError::invalid("Content-Length", "must be a number"))?,
            ),
        };
        Ok(UploadRequest {
            file_name,
            content_length,
        })
    }
}

/// Reads top-level ISO-BMFF boxes from a stream, keeping `ftyp` and `moov`.
#[derive(Debug, Default)]
struct BoxScanner {
    offset: u64,
    /// Where the current box ends; `None` while reading a header.
    box_end: Option<u64>,
    to_end: bool,
    header: Vec<u8>,
    capture: Option<([u8; 4], Vec<u8>)>,
    ftyp: Option<Vec<u8>>,
    moov: Option<Vec<u8>>,
    mdat_seen: bool,
    error: Option<String>,
}

impl BoxScanner {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.error.is_none() {
            match self.box_end {
                Some(end) if self.to_end || self.offset < end => {
                    let n = if self.to_end {
                        data.len()
                    } else {
                        // In u64: on wasm32 a huge box must not wrap to 0 bytes.
                        (end - self.offset).min(data.len() as u64) as usize
                    };
                    if let Some((_, buf)) = &mut self.capture {
                        buf.extend_from_slice(&data[..n]);
                    }
                    self.offset += n as u64;
                    data = &data[n..];
                    if !self.to_end && self.offset == end {
                        self.close_box();
                    }
                }
                _ => {
                    let need = if self.header.len() >= 8
                        && u32::from_be_bytes(self.header[..4].try_into().expect("4")) == 1
                    {
                        16
                    } else {
                        8
                    };
                    let n = (need - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..n]);
                    self.offset += n as u64;
                    data = &data[n..];
                    if self.header.len() == need {
                        self.open_box();
                    }
                }
            }
        }
    }

    fn open_box(&mut self) {
        if self.header.len() == 8
            && u32::from_be_bytes(self.header[..4].try_into().expect("4")) == 1
        {
            return; // a 64-bit size follows
        }
        let kind: [u8; 4] = self.header[4..8].try_into().expect("4");
        let start = self.offset - self.header.len() as u64;
        let size = match u32::from_be_bytes(self.header[..4].try_into().expect("4")) {
            0 => None,
            1 => Some(u64::from_be_bytes(
                self.header[8..16].try_into().expect("8"),
            )),
            n => Some(u64::from(n)),
        };
        if start == 0 && &kind != b"ftyp" {
            self.error = Some("the file does not start with an ISO-BMFF ftyp box".into());
            return;
        }
        match size {
            Some(s) if s < self.header.len() as u64 => {
                self.error = Some(format!("box {} has an impossible size {s}", fourcc(&kind)));
                return;
            }
            Some(s) => match start.checked_add(s).filter(|end| *end <= 1 << 40) {
                Some(end) => self.box_end = Some(end),
                None => {
                    self.error = Some(format!("box {} has an impossible size {s}", fourcc(&kind)));
                    return;
                }
            },
            None => {
                self.to_end = true;
                self.box_end = Some(u64::MAX);
            }
        }
        if &kind == b"mdat" {
            self.mdat_seen = true;
        }
        let limit = match &kind {
            b"ftyp" => 4096,
            b"moov" => MAX_MOOV_BYTES,
            _ => 0,
        };
        if limit > 0 {
            let body = size.map_or(0, |s| s - self.header.len() as u64);
            if self.to_end || body > limit as u64 {
                self.error = Some(format!(
                    "the {} box is larger than {limit} bytes",
                    fourcc(&kind)
                ));
                return;
            }
            self.capture = Some((kind, Vec::with_capacity(body as usize)));
        }
        self.header.clear();
        if self.box_end == Some(self.offset) {
            self.close_box();
        }
    }

    fn close_box(&mut self) {
        if let Some((kind, buf)) = self.capture.take() {
            match &kind {
                b"ftyp" => self.ftyp = Some(buf),
                _ => self.moov = Some(buf),
            }
        }
        self.box_end = None;
    }

    /// The file ended: complete boxes only.
    fn finish(&mut self) {
        if self.error.is_none()
            && (!self.header.is_empty() || (self.box_end.is_some() && !self.to_end))
        {
            self.error = Some("the file ends in the middle of a box (truncated?)".into());
        }
    }
}

fn fourcc(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

/// What the header says about the video.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Facts {
    pub container: Option<String>,
    pub duration_seconds: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub codec: Option<String>,
}

/// Children of a box body.
fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let head = data.get(at..at + 8)?;
        let mut size = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
        let mut header = 8;
        if size == 1 {
            size = u64::from_be_bytes(data.get(at + 8..at + 16)?.try_into().ok()?) as usize;
            header = 16;
        } else if size == 0 {
            size = data.len() - at;
        }
        if size < header || at.checked_add(size)? > data.len() {
            return None;
        }
        let item = (&head[4..8], &data[at + header..at + size]);
        at += size;
        Some(item)
    })
}

fn child<'a>(data: &'a [u8], kind: &[u8]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| *k == kind).map(|(_, b)| b)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads container, duration, size (display orientation) and codec from `ftyp` + `moov`.
fn facts(ftyp: Option<&[u8]>, moov: Option<&[u8]>) -> Facts {
    let mut f = Facts::default();
    if let Some(ftyp) = ftyp {
        f.container = Some(match ftyp.get(..4) {
            Some(b"qt  ") => "mov".into(),
            Some(b) if b.starts_with(b"3g") => "3gp".into(),
            _ => "mp4".into(),
        });
    }
    let Some(moov) = moov else { return f };
    if let Some(mvhd) = child(moov, b"mvhd") {
        let (scale, units) = if mvhd.first() == Some(&1) {
            (be32(mvhd, 20), be64(mvhd, 24))
        } else {
            (be32(mvhd, 12), be32(mvhd, 16).map(u64::from))
        };
        if let (Some(scale), Some(units)) = (scale, units)
            && scale > 0
        {
            f.duration_seconds = Some(units as f64 / f64::from(scale));
        }
    }
    for (kind, trak) in boxes(moov) {
        if kind != b"trak" {
            continue;
        }
        let mdia = child(trak, b"mdia");
        let handler = mdia
            .and_then(|m| child(m, b"hdlr"))
            .and_then(|h| h.get(8..12));
        if handler != Some(b"vide") {
            continue;
        }
        if let Some(tkhd) = child(trak, b"tkhd") {
            let base = if tkhd.first() == Some(&1) { 52 } else { 40 };
            let (w, h) = (be32(tkhd, base + 36), be32(tkhd, base + 40));
            if let (Some(w), Some(h)) = (w, h) {
                let (mut w, mut h) = (w >> 16, h >> 16);
                // A 90° rotation in the matrix (a = d = 0): shown the other way round.
                if be32(tkhd, base) == Some(0) && be32(tkhd, base + 16) == Some(0) {
                    std::mem::swap(&mut w, &mut h);
                }
                f.width = Some(w);
                f.height = Some(h);
            }
        }
        f.codec = mdia
            .and_then(|m| child(m, b"minf"))
            .and_then(|m| child(m, b"stbl"))
            .and_then(|s| child(s, b"stsd"))
            .and_then(|s| s.get(12..16))
            .map(fourcc);
        break;
    }
    f
}

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
fn checks(f: &Facts, size: Option<u64>, spec: &Spec) -> Vec<Check> {
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
fn sniff_other(head: &[u8]) -> &'static str {
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

fn rejected(checks: Vec<Check>, message: String) -> (u16, Value) {
    (
        422,
        json!({
            "error": {"code": "video_rejected", "message": message, "field": "file"},
            "checks": checks,
        }),
    )
}

/// The upload body: form fields, the file as it arrives, then the signature.
struct UploadBody<'a> {
    form: Form,
    pending: Vec<Vec<u8>>,
    source: &'a mut dyn Read,
    scanner: BoxScanner,
    md5: Md5,
    size: u64,
    spec: Spec,
    /// The caller's body has ended.
    source_done: bool,
    /// The form's closing pieces have been produced.
    finished: bool,
    /// Set when the file fails a check only the end could tell: the upload is aborted.
    rejection: Option<(Vec<Check>, String)>,
    /// Set when the caller's body could not be read (cut off, over the host's limit).
    read_error: Option<String>,
    checks: Vec<Check>,
}

impl UploadBody<'_> {
    fn read_more(&mut self) -> Result<Option<Vec<u8>>, String> {
        let mut buf = vec![0u8; CHUNK];
        let n = loop {
            match self.source.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let message = format!("could not be read: {e}");
                    self.read_error = Some(message.clone());
                    return Err(message);
                }
            }
        };
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        self.take(&buf)?;
        Ok(Some(buf))
    }

    fn take(&mut self, data: &[u8]) -> Result<(), String> {
        self.size += data.len() as u64;
        if self.size > self.spec.max_bytes {
            let c = vec![Check {
                check: "size",
                ok: false,
                detail: format!("more than {} bytes", self.spec.max_bytes),
            }];
            self.rejection = Some((
                c,
                format!("the file is larger than {} bytes", self.spec.max_bytes),
            ));
            return Err("rejected".into());
        }
        self.md5.update(data);
        self.scanner.feed(data);
        Ok(())
    }

    /// Everything is read: the last checks, then the signature field.
    fn end(&mut self) -> Result<Vec<u8>, String> {
        self.scanner.finish();
        let f = facts(self.scanner.ftyp.as_deref(), self.scanner.moov.as_deref());
        let mut all = checks(&f, Some(self.size), &self.spec);
        if let Some(e) = &self.scanner.error {
            all.push(Check {
                check: "structure",
                ok: false,
                detail: e.clone(),
            });
        }
        if self.scanner.moov.is_none() {
            all.push(Check {
                check: "structure",
                ok: false,
                detail: "no moov box: the file is incomplete".into(),
            });
        }
        if let Some(bad) = all.iter().find(|c| !c.ok) {
            let message = format!("the video fails the {} check: {}", bad.check, bad.detail);
            self.rejection = Some((all, message));
            return Err("rejected".into());
        }
        self.checks = all;
        let md5 = hex::encode(self.md5.clone().finalize());
        let mut tail = self.form.file_end().to_vec();
        tail.extend(self.form.field("video_signature", &md5));
        tail.extend(self.form.end());
        Ok(tail)
    }
}

impl BodySource for UploadBody<'_> {
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        if !self.pending.is_empty() {
            return Ok(Some(self.pending.remove(0)));
        }
        if self.finished {
            return Ok(None);
        }
        if !self.source_done {
            match self.read_more()? {
                Some(chunk) => return Ok(Some(chunk)),
                None => self.source_done = true,
            }
        }
        // The file is all read (here or in the look-ahead): the last checks, then the
        // signature, always.
        self.finished = true;
        self.end().map(Some)
    }
}

/// Checks and uploads a video, then waits for TikTok to process it. A file failing a
/// check is answered 422 with every check's outcome.
pub fn upload(
    env: &Env,
    access: &AdvertiserAccess,
    request: &UploadRequest,
    source: &mut dyn Read,
) -> Result<(u16, Value), ApiError> {
    let spec = Spec::from_env(env)?;
    if let Some(len) = request.content_length
        && len > spec.max_bytes
    {
        return Ok(rejected(
            vec![Check {
                check: "size",
                ok: false,
                detail: format!("{len} bytes (at most {})", spec.max_bytes),
            }],
            format!("the file is larger than {} bytes", spec.max_bytes),
        ));
    }
    let mut body = UploadBody {
        form: Form::new()?,
        pending: Vec::new(),
        source,
        scanner: BoxScanner::default(),
        md5: Md5::new(),
        size: 0,
        spec,
        source_done: false,
        finished: false,
        rejection: None,
        read_error: None,
        checks: Vec::new(),
    };
    // Read ahead until the header is known (or the media data starts).
    let mut head: Vec<Vec<u8>> = Vec::new();
    let mut buffered = 0;
    while body.scanner.moov.is_none()
        && !body.scanner.mdat_seen
        && body.scanner.error.is_none()
        && buffered < LOOKAHEAD_BYTES
    {
        match body.read_more() {
            Ok(Some(chunk)) => {
                buffered += chunk.len();
                head.push(chunk);
            }
            Ok(None) => {
                body.source_done = true;
                break;
            }
            Err(e) => {
                return match body.rejection.take() {
                    Some((c, m)) => Ok(rejected(c, m)),
                    None => Err(ApiError::invalid("body", e)),
                };
            }
        }
    }
    if body.size == 0 {
        return Err(ApiError::invalid(
            "body",
            "is empty; send the video file as the body",
        ));
    }
    let first = head.first().map(Vec::as_slice).unwrap_or_default();
    if body.scanner.ftyp.is_none() && body.scanner.error.is_some() {
        let what = sniff_other(first);
        return Ok(rejected(
            vec![Check {
                check: "container",
                ok: false,
                detail: what.into(),
            }],
            format!(
                "the file is {what}; TikTok takes {TIKTOK_CONTAINERS}, and this service checks and uploads MP4, MOV and 3GP (convert others to MP4)"
            ),
        ));
    }
    if body.scanner.moov.is_some() {
        let size = request
            .content_length
            .or(body.source_done.then_some(body.size));
        let f = facts(body.scanner.ftyp.as_deref(), body.scanner.moov.as_deref());
        let early = checks(&f, size, &spec);
        if let Some(bad) = early.iter().find(|c| !c.ok) {
            let message = format!("the video fails the {} check: {}", bad.check, bad.detail);
            return Ok(rejected(early, message));
        }
    }
    let advertiser_id = access.advertiser.advertiser_id.clone();
    body.pending
        .push(body.form.field("advertiser_id", &advertiser_id));
    body.pending
        .push(body.form.field("upload_type", "UPLOAD_BY_FILE"));
    body.pending
        .push(body.form.field("file_name", &request.file_name));
    body.pending.push(body.form.file_start(
        "video_file",
        &request.file_name,
        "application/octet-stream",
    ));
    body.pending.extend(head);
    let content_type = body.form.content_type();
    let result = access.call_streaming(
        env,
        Call::post_raw("/file/video/ad/upload/", &content_type, Vec::new()),
        &content_type,
        &mut body,
    );
    if let Some((c, m)) = body.rejection.take() {
        return Ok(rejected(c, m));
    }
    if let Some(e) = body.read_error.take() {
        return Err(ApiError::invalid("body", e));
    }
    let reply = result?;
    // TikTok answers a list with the one video (some versions: an object).
    let info = match &reply.data {
        Value::Array(list) => list.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    };
    let video_id = info["video_id"]
        .as_str()
        .ok_or_else(|| ApiError::Internal("TikTok's upload answer has no video_id".into()))?
        .to_string();
    let (ready, latest) = poll(env, access, &video_id)?;
    let status = if ready { 201 } else { 202 };
    Ok((
        status,
        json!({
            "video_id": video_id,
            "status": if ready { "ready" } else { "processing" },
            "video": latest.unwrap_or(info),
            "checks": body.checks,
            "size": body.size,
            "video_signature": hex::encode(body.md5.finalize()),
            "tiktok_request_id": reply.request_id,
        }),
    ))
}

/// [`upload`] once per `Idempotency-Key` (matched on file name and declared length).
pub fn upload_idempotent(
    env: &Env,
    access: &AdvertiserAccess,
    request: &UploadRequest,
    source: &mut dyn Read,
    key: Option<&str>,
) -> Result<Outcome, ApiError> {
    let scope = format!("{}/videos", access.advertiser.advertiser_id);
    let fingerprint =
        json!({"file_name": request.file_name, "content_length": request.content_length});
    let mut out = None;
    let outcome = // An upload may take the component's whole timeout (15 min); only then is a
    // pending attempt taken over.
    idempotency::run_with(env, &access.org, &scope, key, &fingerprint, UPLOAD_PENDING_SECONDS, |_| {
        let (status, body) = upload(env, access, request, source)?;
        if status == 422 {
            // Not remembered: a rejected file created nothing.
            out = Some((status, body));
            return Err(ApiError::Conflict(String::new()));
        }
        Ok((status, body))
    });
    match (outcome, out) {
        (_, Some((status, response))) => Ok(Outcome {
            status,
            response,
            replayed: false,
        }),
        (outcome, None) => outcome,
    }
}

/// Polls `/file/video/ad/info/` until TikTok has processed the video, up to
/// `video_ready_timeout_seconds` (20). Returns whether it is ready and its info.
fn poll(
    env: &Env,
    access: &AdvertiserAccess,
    video_id: &str,
) -> Result<(bool, Option<Value>), ApiError> {
    let timeout = env.int_var("video_ready_timeout_seconds", 20, 0..=300)?;
    let mut waited = 0;
    loop {
        // The upload has succeeded: a refusal or outage while polling must not turn it
        // into an error (a retry would upload again); it is answered "processing".
        let state = match info(env, access, video_id) {
            Ok(state) => state,
            Err(ApiError::Upstream(_)) => return Ok((false, None)),
            Err(e) => return Err(e),
        };
        match state {
            Some(v) => return Ok((true, Some(v))),
            None if waited >= timeout => return Ok((false, None)),
            None => {
                env.transport.sleep(Duration::from_secs(1));
                waited += 1;
            }
        }
    }
}

/// The video's info once processed; `None` while TikTok is still transcoding (40901).
fn info(env: &Env, access: &AdvertiserAccess, video_id: &str) -> Result<Option<Value>, ApiError> {
    let call = Call::get("/file/video/ad/info/")
        .query("advertiser_id", &access.advertiser.advertiser_id)
        .query("video_ids", json!([video_id]).to_string());
    match env.tiktok()?.call_once(&call.token(access.token())) {
        Ok(reply) => Ok(reply.data["list"]
            .as_array()
            .and_then(|l| l.iter().find(|v| v["video_id"] == video_id))
            // Not listed yet: still processing, never "ready".
            .cloned()),
        Err(e) if e.code == 40901 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `GET …/videos/{id}`: processing, or ready with TikTok's info.
pub fn status(env: &Env, access: &AdvertiserAccess, video_id: &str) -> Result<Value, ApiError> {
    if video_id.is_empty()
        || video_id.len() > 64
        || !video_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ApiError::invalid("video_id", "must be TikTok's video id"));
    }
    Ok(match info(env, access, video_id)? {
        Some(v) => json!({"video_id": video_id, "status": "ready", "video": v}),
        None => json!({"video_id": video_id, "status": "processing"}),
    })
}

/// Small, valid ISO-BMFF files for tests and benchmarks: `ftyp`, `moov` (mvhd, one video
/// trak with tkhd, mdhd, hdlr and an `avc1` stsd) and an `mdat` of `media_bytes`.
pub mod sample {
    fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    /// An MP4 of `width`×`height` lasting `seconds`, its `moov` first or last.
    pub fn mp4(
        width: u32,
        height: u32,
        seconds: u32,
        media_bytes: usize,
        moov_first: bool,
    ) -> Vec<u8> {
        mp4_with_codec(width, height, seconds, media_bytes, moov_first, b"avc1")
    }

    pub fn mp4_with_codec(
        width: u32,
        height: u32,
        seconds: u32,
        media_bytes: usize,
        moov_first: bool,
        codec: &[u8; 4],
    ) -> Vec<u8> {
        let ftyp = bx(b"ftyp", b"isom\0\0\x02\0isomiso2avc1mp41");
        let mut mvhd = vec![0u8; 100];
        mvhd[12..16].copy_from_slice(&1000u32.to_be_bytes());
        mvhd[16..20].copy_from_slice(&(seconds * 1000).to_be_bytes());
        let mut tkhd = vec![0u8; 84];
        tkhd[40..44].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // matrix a = 1
        tkhd[56..60].copy_from_slice(&0x0001_0000u32.to_be_bytes()); // matrix d = 1
        tkhd[76..80].copy_from_slice(&(width << 16).to_be_bytes());
        tkhd[80..84].copy_from_slice(&(height << 16).to_be_bytes());
        let mut hdlr = vec![0u8; 24];
        hdlr[8..12].copy_from_slice(b"vide");
        let mut stsd = vec![0u8; 8];
        stsd[4..8].copy_from_slice(&1u32.to_be_bytes());
        stsd.extend(bx(codec, &[0u8; 78]));
        let stbl = bx(b"stbl", &bx(b"stsd", &stsd));
        let minf = bx(b"minf", &stbl);
        let mdia = bx(
            b"mdia",
            &[bx(b"mdhd", &[0u8; 24]), bx(b"hdlr", &hdlr), minf].concat(),
        );
        let trak = bx(b"trak", &[bx(b"tkhd", &tkhd), mdia].concat());
        let moov = bx(b"moov", &[bx(b"mvhd", &mvhd), trak].concat());
        let media: Vec<u8> = (0..media_bytes).map(|i| (i * 31 % 251) as u8).collect();
        let mdat = bx(b"mdat", &media);
        if moov_first {
            [ftyp, moov, mdat].concat()
        } else {
            [ftyp, mdat, moov].concat()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sample::mp4;
    use super::*;

    fn scan(bytes: &[u8], piece: usize) -> BoxScanner {
        let mut s = BoxScanner::default();
        for chunk in bytes.chunks(piece) {
            s.feed(chunk);
        }
        s.finish();
        s
    }

    fn spec() -> Spec {
        Spec {
            max_bytes: MAX_VIDEO_BYTES,
            min_seconds: 5.0,
            max_seconds: 60.0,
            min_kbps: 516.0,
        }
    }

    #[test]
    fn the_header_is_read_whatever_the_chunking_and_wherever_moov_is() {
        for moov_first in [true, false] {
            let file = mp4(1080, 1920, 15, 50_000, moov_first);
            for piece in [1, 7, 4096, file.len()] {
                let s = scan(&file, piece);
                assert_eq!(s.error, None, "piece {piece}");
                let f = facts(s.ftyp.as_deref(), s.moov.as_deref());
                assert_eq!(
                    f,
                    Facts {
                        container: Some("mp4".into()),
                        duration_seconds: Some(15.0),
                        width: Some(1080),
                        height: Some(1920),
                        codec: Some("avc1".into()),
                    },
                    "piece {piece}, moov first {moov_first}"
                );
            }
        }
    }

    #[test]
    fn broken_files_are_named() {
        let file = mp4(1080, 1920, 15, 1000, true);
        assert!(
            scan(&file[..file.len() - 10], 100)
                .error
                .unwrap()
                .contains("truncated")
        );
        assert!(
            scan(b"RIFF\0\0\0\0AVI LIST", 4)
                .error
                .unwrap()
                .contains("ftyp")
        );
        let mut bad = file.clone();
        bad[..4].copy_from_slice(&3u32.to_be_bytes());
        assert!(scan(&bad, 64).error.unwrap().contains("impossible size"));
        assert_eq!(sniff_other(b"RIFF\0\0\0\0AVI LIST"), "an AVI file");
        assert_eq!(sniff_other(b"hello"), "not a video container");
    }

    #[test]
    fn hostile_box_sizes_end_the_scan_without_panic_or_spin() {
        let ftyp = &mp4(1080, 1920, 10, 10, true)[..28];
        for size in [u64::MAX, (1u64 << 32) + 16] {
            let mut file = ftyp.to_vec();
            file.extend_from_slice(&1u32.to_be_bytes());
            file.extend_from_slice(b"mdat");
            file.extend_from_slice(&size.to_be_bytes());
            file.extend_from_slice(&[0u8; 100]);
            let s = scan(&file, 7);
            // Either refused as impossible, or the file ends inside the box.
            assert!(s.error.is_some(), "size {size}");
        }
    }

    #[test]
    fn a_rotated_track_is_measured_as_shown() {
        let mut file = mp4(1920, 1080, 10, 10, true);
        // Rotate 90°: a = d = 0, b = 1, c = -1.
        let tkhd = file.windows(4).position(|w| w == b"tkhd").unwrap() + 4;
        file[tkhd + 40..tkhd + 44].copy_from_slice(&0u32.to_be_bytes());
        file[tkhd + 44..tkhd + 48].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        file[tkhd + 52..tkhd + 56].copy_from_slice(&0xFFFF_0000u32.to_be_bytes());
        file[tkhd + 56..tkhd + 60].copy_from_slice(&0u32.to_be_bytes());
        let s = scan(&file, 512);
        let f = facts(s.ftyp.as_deref(), s.moov.as_deref());
        assert_eq!((f.width, f.height), (Some(1080), Some(1920)));
    }

    fn failing(f: &Facts, size: u64) -> Vec<&'static str> {
        checks(f, Some(size), &spec())
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.check)
            .collect()
    }

    #[test]
    fn the_spec_limits_are_checked() {
        let good = Facts {
            container: Some("mp4".into()),
            duration_seconds: Some(15.0),
            width: Some(1080),
            height: Some(1920),
            codec: Some("avc1".into()),
        };
        let mb = 1 << 20;
        assert!(failing(&good, 5 * mb).is_empty());
        let with = |f: &dyn Fn(&mut Facts)| {
            let mut x = good.clone();
            f(&mut x);
            x
        };
        assert_eq!(
            failing(&with(&|f| f.duration_seconds = Some(4.9)), 5 * mb),
            vec!["duration"]
        );
        assert_eq!(
            failing(&with(&|f| f.duration_seconds = Some(61.0)), 5 * mb),
            vec!["duration"]
        );
        assert_eq!(
            failing(&with(&|f| f.width = Some(1000)), 5 * mb),
            vec!["aspect_ratio"]
        );
        assert_eq!(
            failing(
                &with(&|f| (f.width, f.height) = (Some(360), Some(640))),
                5 * mb
            ),
            vec!["resolution"]
        );
        assert!(
            failing(
                &with(&|f| (f.width, f.height) = (Some(640), Some(640))),
                5 * mb
            )
            .is_empty()
        );
        assert!(
            failing(
                &with(&|f| (f.width, f.height) = (Some(1280), Some(720))),
                5 * mb
            )
            .is_empty()
        );
        assert_eq!(
            failing(&with(&|f| f.codec = Some("vp09".into())), 5 * mb),
            vec!["codec"]
        );
        // 15 s at 516 kbps is 967,500 bytes.
        assert_eq!(failing(&good, 967_000), vec!["bitrate"]);
        assert!(failing(&good, 968_000).is_empty());
        assert_eq!(failing(&good, MAX_VIDEO_BYTES + 1), vec!["size"]);
        assert_eq!(
            failing(&Facts::default(), 1),
            vec!["container", "video_track", "duration"]
        );
    }

    mod upload {
        use super::super::sample::mp4;
        use super::super::*;
        use crate::connections::testing::advertiser_access;
        use crate::testing::TestEnv;
        use crate::tiktok::fake::{err, ok};

        fn setup() -> (TestEnv, AdvertiserAccess) {
            let t = TestEnv::new();
            let access = advertiser_access(&t, "acme");
            (t, access)
        }

        fn request(len: usize) -> UploadRequest {
            UploadRequest {
                file_name: "clip.mp4".into(),
                content_length: Some(len as u64),
            }
        }

        /// Uploads `file` as a body read from memory, with its length declared.
        fn upload_whole(
            t: &TestEnv,
            access: &AdvertiserAccess,
            file: &[u8],
        ) -> Result<(u16, Value), ApiError> {
            upload(&t.env(), access, &request(file.len()), &mut &file[..])
        }

        #[test]
        fn a_good_file_is_sent_with_its_md5_after_it_and_polled_until_ready() {
            let (t, access) = setup();
            let file = mp4(1080, 1920, 10, 700_000, false);
            t.script(vec![
                ok(json!([{"video_id": "v1"}])),
                err(40901, "transcoding"),
                ok(json!({"list": [{"video_id": "v1", "width": 1080}]})),
            ]);
            let (status, body) = upload_whole(&t, &access, &file).unwrap();
            assert_eq!(status, 201, "{body}");
            assert_eq!(body["status"], "ready");
            assert_eq!(body["video"]["width"], 1080);
            let sent = t.tiktok.sent.borrow();
            let form = &sent[0].body;
            let text = String::from_utf8_lossy(form);
            let md5 = crate::multipart::md5_hex(&file);
            assert_eq!(body["video_signature"], md5.as_str());
            let file_at = form
                .windows(file.len())
                .position(|w| w == file.as_slice())
                .expect("the file, whole, in the form");
            let sig_at = text.find("name=\"video_signature\"").unwrap();
            assert!(sig_at > file_at, "the signature follows the file");
            assert!(text.contains(&md5));
            assert_eq!(
                t.tiktok.slept.borrow().len(),
                1,
                "one wait while transcoding"
            );
        }

        #[test]
        fn a_failing_faststart_file_is_refused_before_any_call_and_a_failing_moov_last_file_is_never_completed()
         {
            for moov_first in [true, false] {
                let (t, access) = setup();
                let file = mp4(1080, 1920, 4, 400_000, moov_first);
                let (status, body) = upload_whole(&t, &access, &file).unwrap();
                assert_eq!(status, 422, "{body}");
                assert_eq!(body["error"]["code"], "video_rejected");
                let failed: Vec<&str> = body["checks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|c| c["ok"] == false)
                    .map(|c| c["check"].as_str().unwrap())
                    .collect();
                assert_eq!(failed, vec!["duration"], "moov first: {moov_first}");
                assert!(
                    t.tiktok.sent.borrow().is_empty(),
                    "TikTok never got a whole request"
                );
            }
        }

        /// A body cut off after `good` bytes.
        struct CutOff(Vec<u8>, usize);

        impl std::io::Read for CutOff {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.1 >= self.0.len() {
                    return Err(std::io::Error::other("the client went away"));
                }
                let n = buf.len().min(self.0.len() - self.1);
                buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 += n;
                Ok(n)
            }
        }

        #[test]
        fn a_body_cut_off_is_a_400_and_never_a_complete_upload() {
            for (moov_first, keep) in [(true, 10), (false, 300_000)] {
                let (t, access) = setup();
                let file = mp4(1080, 1920, 10, 700_000, moov_first);
                let mut reader = CutOff(file[..keep].to_vec(), 0);
                let e = upload(&t.env(), &access, &request(file.len()), &mut reader).unwrap_err();
                assert_eq!(e.status(), 400, "{e}");
                assert!(e.to_string().contains("went away"), "{e}");
                assert!(t.tiktok.sent.borrow().is_empty());
            }
        }

        #[test]
        fn a_file_read_whole_in_the_look_ahead_is_still_checked_before_it_completes() {
            let (t, access) = setup();
            // An ftyp box and nothing else: no moov, no media.
            let file = mp4(1080, 1920, 10, 10, true)[..28].to_vec();
            let (status, body) = upload_whole(&t, &access, &file).unwrap();
            assert_eq!(status, 422, "{body}");
            assert!(t.tiktok.sent.borrow().is_empty(), "no complete upload");
            // A short good file also read whole ahead: still signed and closed.
            let file = mp4(640, 640, 6, 400_000, true);
            t.script(vec![
                ok(json!([{"video_id": "v2"}])),
                ok(json!({"list": [{"video_id": "v2"}]})),
            ]);
            let (status, _) = upload_whole(&t, &access, &file).unwrap();
            assert_eq!(status, 201);
            let sent = t.tiktok.sent.borrow();
            let text = String::from_utf8_lossy(&sent[0].body);
            assert!(text.contains("name=\"video_signature\"") && text.trim_end().ends_with("--"));
        }

        #[test]
        fn files_that_are_not_iso_bmff_or_too_big_are_named() {
            let (t, access) = setup();
            let avi = b"RIFF\0\0\0\0AVI LIST and more bytes".to_vec();
            let (status, body) =
                upload(&t.env(), &access, &request(avi.len()), &mut avi.as_slice()).unwrap();
            assert_eq!(status, 422);
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("an AVI file"),
                "{body}"
            );
            let (status, _) = upload(
                &t.env(),
                &access,
                &request(MAX_VIDEO_BYTES as usize + 1),
                &mut &b""[..],
            )
            .unwrap();
            assert_eq!(status, 422);
            let e = upload(&t.env(), &access, &request(0), &mut &b""[..]).unwrap_err();
            assert_eq!(e.status(), 400);
            assert!(t.tiktok.sent.borrow().is_empty());
        }
    }
}
