//! Ad videos (tiktok-api.md §5.1) and custom audiences (§5.3).

use crate::envelope::{Reply, paginate};
use crate::model::Token;
use crate::multipart::{Form, md5_hex};
use crate::oauth::covers;
use crate::request::{Params, paging};
use crate::state::State;
use serde_json::{Value, json};
use std::time::Duration;

// The stored types live in `model`; re-exported under their old paths.
use crate::model::{Audience, AudienceFile, Video};

/// TikTok's limit for an ad video.
pub const MAX_VIDEO_BYTES: usize = 500 << 20;
/// How long a new video reports 40901 (transcoding) before it is ready.
pub const TRANSCODE_TIME: Duration = Duration::from_secs(2);

pub const CALCULATE_TYPES: &[&str] = &[
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "IDFA_MD5",
    "GAID_SHA256",
    "GAID_MD5",
    "MAID_SHA256",
    "MAID_MD5",
    "FIRST_SHA256",
    "FIRST_MD5",
    "MULTIPLE_TYPES",
];

/// The container format from the file's first bytes.
fn sniff_format(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return Some(match &bytes[8..11] {
            b"qt " => "mov",
            b"3gp" | b"3g2" => "3gp",
            _ => "mp4",
        });
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"AVI " {
        return Some("avi");
    }
    if bytes.len() >= 4 && (bytes[..4] == [0, 0, 1, 0xBA] || bytes[..4] == [0, 0, 1, 0xB3]) {
        return Some("mpeg");
    }
    None
}

/// Duration (s) and size from an ISO-BMFF `moov` (mvhd, tkhd), when the file has them.
fn mp4_metadata(bytes: &[u8]) -> (Option<f64>, Option<(u32, u32)>) {
    fn boxes(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut at = 0usize;
        std::iter::from_fn(move || {
            let head = data.get(at..at + 8)?;
            let size = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
            if size < 8 || at + size > data.len() {
                return None;
            }
            let item = (&head[4..8], &data[at + 8..at + size]);
            at += size;
            Some(item)
        })
    }
    let (mut duration, mut dims) = (None, None);
    for (kind, body) in boxes(bytes) {
        if kind != b"moov" {
            continue;
        }
        for (kind, b) in boxes(body) {
            if kind == b"mvhd" && b.len() >= 20 && b[0] == 0 {
                let scale = u32::from_be_bytes(b[12..16].try_into().unwrap_or_default());
                let units = u32::from_be_bytes(b[16..20].try_into().unwrap_or_default());
                if scale > 0 {
                    duration = Some(f64::from(units) / f64::from(scale));
                }
            }
            if kind == b"trak" {
                for (kind, t) in boxes(b) {
                    if kind == b"tkhd" && t.len() >= 84 && t[0] == 0 {
                        let w = u32::from_be_bytes(t[76..80].try_into().unwrap_or_default()) >> 16;
                        let h = u32::from_be_bytes(t[80..84].try_into().unwrap_or_default()) >> 16;
                        if w > 0 && h > 0 && dims.is_none() {
                            dims = Some((w, h));
                        }
                    }
                }
            }
        }
    }
    (duration, dims)
}

/// `POST /file/video/ad/upload/` (multipart, `UPLOAD_BY_FILE`): MD5 `video_signature`
/// checked (40900), 500 MB (40907), container sniffed (40908).
pub fn upload_video(s: &mut State, token: &Token, form: &Form) -> Result<Reply, Reply> {
    let advertiser_id = form.required("advertiser_id")?.to_string();
    covers(token, &advertiser_id)?;
    let upload_type = form
        .fields
        .get("upload_type")
        .map(String::as_str)
        .unwrap_or("UPLOAD_BY_FILE");
    if upload_type != "UPLOAD_BY_FILE" {
        return Err(Reply::error(
            40008,
            format!(
                "upload_type {upload_type} is not supported by tiktok-mock; use UPLOAD_BY_FILE."
            ),
        ));
    }
    let (file_name, bytes) = form
        .files
        .get("video_file")
        .ok_or_else(|| Reply::param("video_file: Missing data for required field."))?;
    if bytes.is_empty() {
        return Err(Reply::error(40906, "video_file: The file is empty."));
    }
    if bytes.len() > MAX_VIDEO_BYTES {
        return Err(Reply::error(
            40907,
            "video_file: The file is larger than 500 MB.",
        ));
    }
    let signature = form.required("video_signature")?.to_ascii_lowercase();
    let actual = md5_hex(bytes);
    if signature != actual {
        return Err(Reply::error(
            40900,
            "video_signature: The signature does not match the file's MD5.",
        ));
    }
    let format = sniff_format(bytes).ok_or_else(|| {
        Reply::error(
            40908,
            "video_file: Unsupported file type; use mp4, mov, mpeg, 3gp or avi.",
        )
    })?;
    let (duration, dims) = if matches!(format, "mp4" | "mov" | "3gp") {
        mp4_metadata(bytes)
    } else {
        (None, None)
    };
    let id = format!("v10033g50000{}", &s.new_secret()[..20]);
    let info = json!({
        "video_id": id, "file_name": form.fields.get("file_name").cloned().unwrap_or_else(|| file_name.clone()),
        "format": format, "size": bytes.len(), "signature": actual,
        "duration": duration, "width": dims.map(|d| d.0), "height": dims.map(|d| d.1),
        "material_id": s.new_id(), "allowed_placements": ["PLACEMENT_TIKTOK"],
    });
    s.videos.push(Video {
        id,
        advertiser_id,
        info: info.clone(),
        uploaded: s.now(),
    });
    Ok(Reply::ok(json!([info])))
}

/// `GET /file/video/ad/info/?advertiser_id&video_ids=[…]` (≤ 60): 40901 while transcoding.
pub fn video_info(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let ids = p
        .str_list("video_ids")?
        .ok_or_else(|| Reply::param("video_ids: Missing data for required field."))?;
    if ids.is_empty() || ids.len() > 60 {
        return Err(Reply::param("video_ids: Length must be between 1 and 60."));
    }
    let now = s.now();
    let mut list = Vec::new();
    for id in &ids {
        let video = s
            .videos
            .iter()
            .find(|v| v.id == *id && v.advertiser_id == advertiser_id)
            .ok_or_else(|| Reply::error(40007, format!("video_ids: {id} does not exist.")))?;
        if now.duration_since(video.uploaded) < TRANSCODE_TIME {
            return Err(Reply::error(
                40901,
                format!("Video {id} is being transcoded; try again later."),
            ));
        }
        let mut info = video.info.clone();
        info["poster_url"] = json!(format!("https://mock.tiktok.invalid/poster/{id}.jpg"));
        info["preview_url"] = json!(format!("https://mock.tiktok.invalid/preview/{id}.mp4"));
        list.push(info);
    }
    Ok(Reply::ok(json!({"list": list})))
}

/// `POST /dmp/custom_audience/file/upload/` (multipart): a .csv/.txt of identifiers, MD5-signed.
pub fn upload_audience_file(s: &mut State, token: &Token, form: &Form) -> Result<Reply, Reply> {
    let advertiser_id = form.required("advertiser_id")?.to_string();
    covers(token, &advertiser_id)?;
    let calculate_type = form.required("calculate_type")?.to_string();
    if !CALCULATE_TYPES.contains(&calculate_type.as_str()) {
        return Err(Reply::param(format!(
            "calculate_type: Must be one of: {}.",
            CALCULATE_TYPES.join(", ")
        )));
    }
    let (file_name, bytes) = form
        .files
        .get("file")
        .ok_or_else(|| Reply::param("file: Missing data for required field."))?;
    if !(file_name.ends_with(".csv") || file_name.ends_with(".txt")) {
        return Err(Reply::error(
            40908,
            "file: Only .csv and .txt files are accepted.",
        ));
    }
    if form.required("file_signature")?.to_ascii_lowercase() != md5_hex(bytes) {
        return Err(Reply::error(
            40900,
            "file_signature: The signature does not match the file's MD5.",
        ));
    }
    let members = String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64;
    let path = format!("mock/audience/{}", s.new_secret());
    s.audience_files.push(AudienceFile {
        path: path.clone(),
        advertiser_id,
        calculate_type,
        members,
    });
    Ok(Reply::ok(json!({"file_path": path})))
}

/// `POST /dmp/custom_audience/create/`.
pub fn create_audience(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let name = p.required_str("custom_audience_name")?;
    if name.chars().count() > 128 {
        return Err(Reply::param(
            "custom_audience_name: Length must be between 1 and 128.",
        ));
    }
    let calculate_type = p.required_str("calculate_type")?;
    let paths = p
        .str_list("file_paths")?
        .ok_or_else(|| Reply::param("file_paths: Missing data for required field."))?;
    if paths.is_empty() || paths.len() > 500 {
        return Err(Reply::param(
            "file_paths: Length must be between 1 and 500.",
        ));
    }
    if let Some(days) = p.u64("retention_in_days")?
        && !(1..=365).contains(&days)
    {
        return Err(Reply::param(
            "retention_in_days: Must be between 1 and 365.",
        ));
    }
    let mut members = 0;
    for path in &paths {
        let file = s
            .audience_files
            .iter()
            .find(|f| f.path == *path && f.advertiser_id == advertiser_id)
            .ok_or_else(|| Reply::param(format!("file_paths: {path} does not exist.")))?;
        if file.calculate_type != calculate_type {
            return Err(Reply::param(format!(
                "calculate_type: {path} was uploaded as {}.",
                file.calculate_type
            )));
        }
        members += file.members;
    }
    s.idempotent(&advertiser_id, p, |s| {
        let audience = Audience {
            id: s.new_id(),
            advertiser_id: advertiser_id.clone(),
            name,
            members,
            lookalike: false,
            calculate_type: Some(calculate_type),
        };
        let id = audience.id.clone();
        s.audiences.push(audience);
        Ok(json!({"custom_audience_id": id}))
    })
}

/// `GET /dmp/custom_audience/list/` (page_size ≤ 100).
pub fn list_audiences(s: &State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let (page, page_size) = paging(p, 100)?;
    let list: Vec<Value> = s
        .audiences
        .iter()
        .filter(|a| a.advertiser_id == advertiser_id)
        .map(|a| {
            json!({"custom_audience_id": a.id, "name": a.name, "audience_type": if a.lookalike { "Lookalike Audience" } else { "Customer File" },
                   "cover_num": a.members, "is_valid": true, "is_expiring": false, "calculate_type": a.calculate_type})
        })
        .collect();
    let (list, page_info) = paginate(&list, page, page_size);
    Ok(Reply::ok(json!({"list": list, "page_info": page_info})))
}

/// `POST /dmp/custom_audience/lookalike/create/`: the source needs ≥ 100 members and must not be a lookalike.
pub fn create_lookalike(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let name = p.required_str("custom_audience_name")?;
    let spec = match p.get("lookalike_spec") {
        Some(Value::Object(m)) => Params(m.clone()),
        _ => {
            return Err(Reply::param(
                "lookalike_spec: Missing data for required field.",
            ));
        }
    };
    let source_id = spec
        .required_str("source_audience_id")
        .map_err(|e| Reply::param(format!("lookalike_spec.{}", e.message)))?;
    let locations = spec.str_list("location_ids")?.unwrap_or_default();
    if locations.is_empty() {
        return Err(Reply::param(
            "lookalike_spec.location_ids: At least one location is required.",
        ));
    }
    let size = spec
        .str("audience_size")?
        .unwrap_or_else(|| "BALANCED".into());
    if !matches!(size.as_str(), "NARROW" | "BALANCED" | "BROAD") {
        return Err(Reply::param(
            "lookalike_spec.audience_size: Must be one of: NARROW, BALANCED, BROAD.",
        ));
    }
    let source = s
        .audiences
        .iter()
        .find(|a| a.id == source_id && a.advertiser_id == advertiser_id)
        .ok_or_else(|| {
            Reply::param(format!(
                "lookalike_spec.source_audience_id: {source_id} does not exist."
            ))
        })?;
    if source.lookalike {
        return Err(Reply::param(
            "lookalike_spec.source_audience_id: A lookalike audience cannot be a source.",
        ));
    }
    if source.members < 100 {
        return Err(Reply::param(
            "lookalike_spec.source_audience_id: The source audience needs at least 100 members.",
        ));
    }
    let members = source.members
        * match size.as_str() {
            "NARROW" => 10,
            "BALANCED" => 50,
            _ => 100,
        };
    s.idempotent(&advertiser_id, p, |s| {
        let audience = Audience {
            id: s.new_id(),
            advertiser_id: advertiser_id.clone(),
            name,
            members,
            lookalike: true,
            calculate_type: None,
        };
        let id = audience.id.clone();
        s.audiences.push(audience);
        Ok(json!({"custom_audience_id": id}))
    })
}
