//! Streaming an ad video to TikTok with its MD5 `video_signature`, checked on the way,
//! then polling until TikTok has transcoded it.

use super::TIKTOK_CONTAINERS;
use super::mp4::{BoxScanner, facts};
use super::spec::{Check, Spec, checks, rejected, sniff_other};
use crate::ApiError;
use crate::ads::idempotency::{self, Outcome};
use crate::platform::env::Env;
use crate::platform::http::Request;
use crate::platform::multipart::Form;
use crate::platform::outbound::BodySource;
use crate::tenancy::advertiser_access::AdvertiserAccess;
use crate::tiktok::client::Call;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use std::io::Read;
use std::time::Duration;

/// How much of the file is read ahead looking for `moov` before the upload starts.
const LOOKAHEAD_BYTES: usize = 16 << 20;
const CHUNK: usize = 64 << 10;
/// How long an upload attempt holds its Idempotency-Key before another may take over:
/// the component's request timeout in the shipped runtime config, and a minute more.
const UPLOAD_PENDING_SECONDS: i64 = 16 * 60;

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
