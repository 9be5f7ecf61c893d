//! Custom audiences from files of identifiers, and lookalikes (tiktok-api.md §5.3).
//!
//! A file arrives with one identifier per line (a CSV's first column is used). Plain
//! emails, phones and device ids are normalized and SHA-256-hashed here, the same way
//! the pixel hashes (`pii`); values already hashed pass through. Only digests leave:
//! the file TikTok receives holds no raw identifier. It is uploaded with its MD5
//! `file_signature`, then the audience is created from its `file_path`.

use crate::ApiError;
use crate::ads::idempotency::{self, Outcome};
use crate::ads::rules::is_id;
use crate::platform::crypto::sha256_hex;
use crate::platform::env::Env;
use crate::platform::http::Request;
use crate::platform::multipart::{Form, md5_hex};
use crate::tenancy::advertiser_access::AdvertiserAccess;
use crate::tiktok::client::{Call, id_string};
use crate::tiktok::pii;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Identifier types hashed here from plain values.
pub const HASHED_HERE: &[&str] = &[
    "EMAIL_SHA256",
    "PHONE_SHA256",
    "IDFA_SHA256",
    "GAID_SHA256",
    "MAID_SHA256",
];
/// Types taken only already hashed (their normalization is not in our reference).
pub const PREHASHED_ONLY: &[(&str, usize)] = &[
    ("IDFA_MD5", 32),
    ("GAID_MD5", 32),
    ("MAID_MD5", 32),
    ("FIRST_SHA256", 64),
    ("FIRST_MD5", 32),
];
/// Most identifiers one file may hold: bounds the digests and the dedup set within a
/// component instance's memory. Larger lists go in several files.
pub const MAX_IDENTIFIERS: usize = 200_000;
/// How many rejected lines the answer lists.
const LISTED_REJECTIONS: usize = 20;
/// TikTok's smallest lookalike source (§5.3).
pub const MIN_LOOKALIKE_SOURCE: u64 = 100;

/// `POST audiences?name=&calculate_type=[&retention_in_days=&country=]` with the file as body.
#[derive(Debug, Clone)]
pub struct FileAudience {
    pub name: String,
    pub calculate_type: String,
    pub retention_in_days: Option<u32>,
    /// Country for phone numbers written without one (ISO 3166 alpha-2).
    pub country: Option<String>,
}

impl FileAudience {
    pub fn from_request(req: &Request) -> Result<Self, ApiError> {
        let name = req
            .query_param("name")
            .ok_or_else(|| ApiError::invalid("name", "is required"))?;
        if name.trim().is_empty() || name.chars().count() > 128 {
            return Err(ApiError::invalid("name", "must be 1 to 128 characters"));
        }
        let calculate_type = req
            .query_param("calculate_type")
            .ok_or_else(|| ApiError::invalid("calculate_type", "is required"))?;
        let known = HASHED_HERE.contains(&calculate_type.as_str())
            || PREHASHED_ONLY.iter().any(|(t, _)| *t == calculate_type);
        if !known {
            let all: Vec<&str> = HASHED_HERE
                .iter()
                .copied()
                .chain(PREHASHED_ONLY.iter().map(|(t, _)| *t))
                .collect();
            return Err(ApiError::invalid(
                "calculate_type",
                format!("must be one of {} (one type per file)", all.join(", ")),
            ));
        }
        let retention_in_days = match req.query_param("retention_in_days") {
            None => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|d| (1..=365).contains(d))
                    .ok_or_else(|| ApiError::invalid("retention_in_days", "must be 1 to 365"))?,
            ),
        };
        let country = req.query_param("country");
        if let Some(c) = &country
            && pii::calling_code(c).is_none()
        {
            return Err(ApiError::invalid(
                "country",
                "must be an ISO 3166 alpha-2 country code we know",
            ));
        }
        Ok(FileAudience {
            name,
            calculate_type,
            retention_in_days,
            country,
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    pub line: usize,
    pub reason: String,
}

/// How the file's lines were read.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FileReport {
    pub lines: usize,
    pub hashed_here: usize,
    pub already_hashed: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub rejections: Vec<Rejection>,
}

/// A device id: a UUID (IDFA, GAID), any case.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// One identifier's digest; `Ok((digest, hashed_here))`.
fn digest(kind: &str, raw: &str, country: Option<&str>) -> Result<(String, bool), String> {
    let value = raw.trim().trim_matches('"').trim();
    if let Some((_, len)) = PREHASHED_ONLY.iter().find(|(t, _)| *t == kind) {
        return if value.len() == *len && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok((value.to_ascii_lowercase(), false))
        } else {
            Err(format!(
                "{kind} values must already be hashed ({len} hex digits)"
            ))
        };
    }
    if pii::is_sha256_hex(value) {
        return Ok((value.to_ascii_lowercase(), false));
    }
    let hashed = match kind {
        "EMAIL_SHA256" => pii::hash_email(value).map_err(|e| format!("email {e}"))?,
        "PHONE_SHA256" => pii::hash_phone(value, country).map_err(|e| format!("phone {e}"))?,
        _ if is_uuid(value) => sha256_hex(value.to_ascii_lowercase().as_bytes()),
        _ => return Err("is not a device id (a UUID) or a SHA-256 digest".into()),
    };
    Ok((hashed, true))
}

/// Reads the file: one identifier per line (first CSV column), a header line skipped,
/// blank lines ignored, duplicates dropped. Answers the digests, one per line.
pub fn hash_file(
    kind: &str,
    file: &[u8],
    country: Option<&str>,
) -> Result<(Vec<u8>, FileReport), ApiError> {
    let text = std::str::from_utf8(file)
        .map_err(|_| ApiError::invalid("body", "must be UTF-8 text, one identifier per line"))?;
    let mut report = FileReport::default();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let first = line.split(',').next().unwrap_or("").trim();
        if first.is_empty() {
            continue;
        }
        report.lines += 1;
        if report.lines > MAX_IDENTIFIERS {
            return Err(ApiError::invalid(
                "body",
                format!(
                    "holds more than {MAX_IDENTIFIERS} identifiers; split it into several files"
                ),
            ));
        }
        match digest(kind, first, country) {
            Ok((d, here)) => {
                if !seen.insert(d.clone()) {
                    report.duplicates += 1;
                    continue;
                }
                if here {
                    report.hashed_here += 1;
                } else {
                    report.already_hashed += 1;
                }
                out.extend_from_slice(d.as_bytes());
                out.push(b'\n');
            }
            // A first line that is no identifier is the CSV's header.
            Err(_)
                if report.lines == 1
                    && first
                        .chars()
                        .all(|c| c.is_ascii_alphabetic() || c == '_' || c == ' ') =>
            {
                report.lines -= 1;
            }
            Err(reason) => {
                report.rejected += 1;
                if report.rejections.len() < LISTED_REJECTIONS {
                    report.rejections.push(Rejection {
                        line: i + 1,
                        reason,
                    });
                }
            }
        }
    }
    if seen.is_empty() {
        return Err(ApiError::invalid(
            "body",
            format!(
                "holds no usable identifier ({} lines rejected)",
                report.rejected
            ),
        ));
    }
    Ok((out, report))
}

/// Hashes the file, uploads it, and creates the audience; once per `Idempotency-Key`.
pub fn create(
    env: &Env,
    access: &AdvertiserAccess,
    upload: &FileAudience,
    file: &[u8],
    key: Option<&str>,
) -> Result<Outcome, ApiError> {
    let (digests, report) = hash_file(&upload.calculate_type, file, upload.country.as_deref())?;
    let fingerprint = json!({
        "name": upload.name, "calculate_type": upload.calculate_type,
        "retention_in_days": upload.retention_in_days, "file": sha256_hex(&digests),
    });
    let scope = format!("{}/audiences", access.advertiser.advertiser_id);
    let advertiser_id = access.advertiser.advertiser_id.clone();
    idempotency::run(env, &access.org, &scope, key, &fingerprint, |request_id| {
        let form = Form::new()?;
        let signature = md5_hex(&digests);
        let body = form.whole(
            &[
                ("advertiser_id", &advertiser_id),
                ("calculate_type", &upload.calculate_type),
                ("file_signature", &signature),
            ],
            ("file", "audience.txt", "text/plain", &digests),
        );
        let uploaded = access.call(
            env,
            Call::post_raw(
                "/dmp/custom_audience/file/upload/",
                &form.content_type(),
                body,
            ),
        )?;
        let file_path = uploaded.data["file_path"]
            .as_str()
            .ok_or_else(|| ApiError::Internal("TikTok's upload answer has no file_path".into()))?;
        let mut create = json!({
            "advertiser_id": advertiser_id, "custom_audience_name": upload.name,
            "calculate_type": upload.calculate_type, "file_paths": [file_path], "request_id": request_id,
        });
        if let Some(days) = upload.retention_in_days {
            create["retention_in_days"] = json!(days);
        }
        let created = access.call(env, Call::post("/dmp/custom_audience/create/", create))?;
        Ok((
            201,
            json!({
                "custom_audience_id": id_string(&created.data["custom_audience_id"]),
                "name": upload.name,
                "calculate_type": upload.calculate_type,
                "identifiers": report,
                "tiktok_request_id": created.request_id,
            }),
        ))
    })
}

/// `GET audiences`: the account's custom audiences as TikTok lists them.
pub fn list(
    env: &Env,
    access: &AdvertiserAccess,
    page: u32,
    page_size: u32,
) -> Result<Value, ApiError> {
    crate::ads::entities::page_of(
        env,
        access,
        "/dmp/custom_audience/list/",
        page,
        page_size,
        100,
    )
}

/// Finds an audience in TikTok's list (paged at 100).
fn find(env: &Env, access: &AdvertiserAccess, id: &str) -> Result<Option<Value>, ApiError> {
    for page in 1..=100 {
        let p = list(env, access, page, 100)?;
        if let Some(a) = p["list"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| id_string(&a["custom_audience_id"]).as_deref() == Some(id))
        {
            return Ok(Some(a.clone()));
        }
        if p["page_info"]["total_page"]
            .as_u64()
            .is_none_or(|t| t <= u64::from(page))
        {
            break;
        }
    }
    Ok(None)
}

/// `POST audiences/lookalikes {name, source_audience_id, location_ids, audience_size?,
/// include_source?, mobile_os?, placements?}`: the source must exist, have ≥ 100 members
/// and not itself be a lookalike; at least one location; size NARROW/BALANCED/BROAD.
pub fn create_lookalike(
    env: &Env,
    access: &AdvertiserAccess,
    body: &Value,
    key: Option<&str>,
) -> Result<Outcome, ApiError> {
    let name = body["name"]
        .as_str()
        .ok_or_else(|| ApiError::invalid("name", "is required"))?;
    if name.trim().is_empty() || name.chars().count() > 128 {
        return Err(ApiError::invalid("name", "must be 1 to 128 characters"));
    }
    let source = body["source_audience_id"]
        .as_str()
        .filter(|s| is_id(s))
        .ok_or_else(|| {
            ApiError::invalid(
                "source_audience_id",
                "is required: TikTok's numeric id, as a string",
            )
        })?;
    let locations: Vec<&str> = match &body["location_ids"] {
        Value::Array(l) => l
            .iter()
            .map(|v| v.as_str().filter(|s| is_id(s)))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::invalid("location_ids", "must be numeric ids, as strings"))?,
        Value::Null => Vec::new(),
        _ => return Err(ApiError::invalid("location_ids", "must be a list of ids")),
    };
    if locations.is_empty() {
        return Err(ApiError::invalid(
            "location_ids",
            "needs at least one location",
        ));
    }
    let size = match &body["audience_size"] {
        Value::Null => "BALANCED",
        Value::String(s) if matches!(s.as_str(), "NARROW" | "BALANCED" | "BROAD") => s.as_str(),
        _ => {
            return Err(ApiError::invalid(
                "audience_size",
                "must be NARROW, BALANCED or BROAD",
            ));
        }
    };
    let os = match &body["mobile_os"] {
        Value::Null => "ALL",
        Value::String(s) if matches!(s.as_str(), "ALL" | "ANDROID" | "IOS") => s.as_str(),
        _ => {
            return Err(ApiError::invalid(
                "mobile_os",
                "must be ALL, ANDROID or IOS",
            ));
        }
    };
    let include_source = match &body["include_source"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(ApiError::invalid("include_source", "must be true or false")),
    };
    // The key first: a replay reads nothing from TikTok.
    let scope = format!("{}/lookalikes", access.advertiser.advertiser_id);
    idempotency::run(env, &access.org, &scope, key, body, |request_id| {
        let source_audience = find(env, access, source)?.ok_or_else(|| {
            ApiError::invalid(
                "source_audience_id",
                format!("audience {source} does not exist for this advertiser"),
            )
        })?;
        let kind = source_audience["audience_type"]
            .as_str()
            .unwrap_or_default();
        if kind.to_ascii_lowercase().contains("lookalike") {
            return Err(ApiError::invalid(
                "source_audience_id",
                "is a lookalike audience; a lookalike needs a custom audience as its source",
            ));
        }
        let members = source_audience["cover_num"].as_u64().unwrap_or(0);
        if members < MIN_LOOKALIKE_SOURCE {
            return Err(ApiError::invalid(
                "source_audience_id",
                format!(
                    "has {members} members; a lookalike source needs at least {MIN_LOOKALIKE_SOURCE}"
                ),
            ));
        }
        let mut spec = json!({
            "source_audience_id": source, "include_source": include_source, "mobile_os": os,
            "location_ids": locations, "audience_size": size,
        });
        if let Some(p) = body.get("placements").filter(|v| !v.is_null()) {
            spec["placements"] = p.clone();
        }
        let reply = access.call(
            env,
            Call::post(
                "/dmp/custom_audience/lookalike/create/",
                json!({"advertiser_id": access.advertiser.advertiser_id, "custom_audience_name": name,
                       "lookalike_spec": spec, "request_id": request_id}),
            ),
        )?;
        Ok((
            201,
            json!({
                "custom_audience_id": id_string(&reply.data["custom_audience_id"]),
                "name": name, "source_audience_id": source, "audience_size": size,
                "tiktok_request_id": reply.request_id,
            }),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_are_hashed_here_and_digests_pass_through() {
        let known = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"; // test@example.com
        let file = format!(
            "email\nTest@Example.com\n\n {known} \nnot-an-email\ntest@example.com\nother@example.com,extra\n"
        );
        let (out, r) = hash_file("EMAIL_SHA256", file.as_bytes(), None).unwrap();
        let lines: Vec<&str> = std::str::from_utf8(&out).unwrap().lines().collect();
        assert_eq!(lines[0], known);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (
                r.lines,
                r.hashed_here,
                r.already_hashed,
                r.duplicates,
                r.rejected
            ),
            (5, 2, 0, 2, 1)
        );
        assert_eq!(r.rejections[0].line, 5);
        assert!(
            !String::from_utf8(out).unwrap().contains('@'),
            "no raw email leaves"
        );
    }

    #[test]
    fn phones_use_e164_and_the_given_country() {
        let (out, _) = hash_file("PHONE_SHA256", b"(650) 555-1212\n", Some("US")).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap().trim(),
            sha256_hex(b"+16505551212")
        );
        assert!(hash_file("PHONE_SHA256", b"555\n", None).is_err());
    }

    #[test]
    fn device_ids_must_be_uuids_and_md5_types_must_come_hashed() {
        let (out, _) = hash_file(
            "IDFA_SHA256",
            b"6D92078A-8246-4BA4-AE5B-76104861E7DC\n",
            None,
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap().trim(),
            sha256_hex(b"6d92078a-8246-4ba4-ae5b-76104861e7dc")
        );
        let (_, r) = hash_file(
            "GAID_SHA256",
            b"6D92078A-8246-4BA4-AE5B-76104861E7DC\nnope-1\n",
            None,
        )
        .unwrap();
        assert_eq!(r.rejected, 1);
        let e = hash_file("IDFA_MD5", b"6D92078A-8246-4BA4-AE5B-76104861E7DC\n", None).unwrap_err();
        assert_eq!(e.status(), 400);
        let (_, r) = hash_file("IDFA_MD5", b"0123456789ABCDEF0123456789abcdef\n", None).unwrap();
        assert_eq!(r.already_hashed, 1);
    }

    #[test]
    fn a_file_over_the_identifier_cap_is_refused_by_name() {
        let file: String = (0..=MAX_IDENTIFIERS)
            .map(|i| format!("{i:064x}\n"))
            .collect();
        let e = hash_file("EMAIL_SHA256", file.as_bytes(), None).unwrap_err();
        assert!(e.to_string().contains("split it"), "{e}");
    }

    #[test]
    fn a_file_without_identifiers_or_not_text_is_refused() {
        assert!(hash_file("EMAIL_SHA256", b"\n\n", None).is_err());
        assert!(hash_file("EMAIL_SHA256", &[0xff, 0xfe], None).is_err());
    }

    #[test]
    fn upload_parameters_are_checked() {
        let r = |q: &str| FileAudience::from_request(&Request::new("POST", &format!("/x?{q}")));
        assert!(r("name=Buyers&calculate_type=EMAIL_SHA256&retention_in_days=30").is_ok());
        for (q, field) in [
            ("calculate_type=EMAIL_SHA256", "name"),
            ("name=Buyers", "calculate_type"),
            ("name=Buyers&calculate_type=EMAIL", "calculate_type"),
            (
                "name=Buyers&calculate_type=MULTIPLE_TYPES",
                "calculate_type",
            ),
            (
                "name=Buyers&calculate_type=EMAIL_SHA256&retention_in_days=400",
                "retention_in_days",
            ),
            (
                "name=Buyers&calculate_type=PHONE_SHA256&country=XX",
                "country",
            ),
        ] {
            match r(q).unwrap_err() {
                ApiError::InvalidInput(f) => assert_eq!(f.field, field, "{q}"),
                e => panic!("{e}"),
            }
        }
    }
}
