//! The `TikTok-Signature: t=…,s=…` header: parsing, signing and constant-time verification
//! against every active secret of an app.

use crate::platform::crypto::{constant_time_eq, hmac_sha256};

/// A `TikTok-Signature` header longer than this is refused unread.
const MAX_HEADER_LEN: usize = 1024;
/// Why a delivery was refused before anything was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingHeader,
    MalformedHeader(&'static str),
    SignatureMismatch,
    /// `|now - t|` is over the tolerance; the signature itself verified.
    OutsideTolerance,
}

impl Rejection {
    /// The counter (and `error.reason`) for this rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingHeader => "missing_signature",
            Rejection::MalformedHeader(_) => "malformed_signature",
            Rejection::SignatureMismatch => "signature_mismatch",
            Rejection::OutsideTolerance => "timestamp_outside_tolerance",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Rejection::MissingHeader => "the TikTok-Signature header is missing".into(),
            Rejection::MalformedHeader(why) => {
                format!("the TikTok-Signature header is malformed: {why}")
            }
            Rejection::SignatureMismatch => {
                "the signature does not match the body under any of the app's secrets".into()
            }
            Rejection::OutsideTolerance => {
                "the signature's timestamp is outside the accepted window".into()
            }
        }
    }
}

/// The parsed `TikTok-Signature: t=…,s=…` header.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub t: i64,
    /// One or more candidate signatures (32 bytes each).
    pub signatures: Vec<[u8; 32]>,
}

/// Splits on `,` then on the first `=`, in any order; unknown elements are ignored (the
/// scheme may grow), `t` must appear once, `s` at least once.
pub fn parse_header(value: &str) -> Result<SignatureHeader, Rejection> {
    if value.len() > MAX_HEADER_LEN {
        return Err(Rejection::MalformedHeader("longer than 1024 bytes"));
    }
    let mut t = None;
    let mut signatures = Vec::new();
    for element in value.split(',') {
        let Some((name, v)) = element.trim().split_once('=') else {
            continue;
        };
        match name.trim() {
            "t" => {
                if t.is_some() {
                    return Err(Rejection::MalformedHeader("more than one t"));
                }
                let v = v.trim();
                if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Rejection::MalformedHeader("t is not Unix seconds"));
                }
                t = Some(v.parse::<i64>().expect("at most 12 digits"));
            }
            "s" => {
                let mut sig = [0u8; 32];
                hex::decode_to_slice(v.trim(), &mut sig)
                    .map_err(|_| Rejection::MalformedHeader("s is not 64 hex digits"))?;
                if signatures.len() < 4 {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(Rejection::MalformedHeader("no t element"))?;
    if signatures.is_empty() {
        return Err(Rejection::MalformedHeader("no s element"));
    }
    Ok(SignatureHeader { t, signatures })
}

/// `hex(HMAC-SHA256(secret, t + "." + body))`, what TikTok sends as `s`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut payload = format!("{t}.").into_bytes();
    payload.extend_from_slice(body);
    hex::encode(hmac_sha256(secret.as_bytes(), &payload))
}

/// Checks a delivery: the header, the signature under any of `secrets` (constant time,
/// every candidate compared), then `|now - t| <= tolerance`. Returns `t`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now: i64,
    tolerance: i64,
) -> Result<i64, Rejection> {
    let header = parse_header(header.ok_or(Rejection::MissingHeader)?)?;
    let mut payload = format!("{}.", header.t).into_bytes();
    payload.extend_from_slice(body);
    let mut matched = false;
    for secret in secrets {
        let expected = hmac_sha256(secret.as_bytes(), &payload);
        for candidate in &header.signatures {
            matched |= constant_time_eq(&expected, candidate);
        }
    }
    if !matched {
        return Err(Rejection::SignatureMismatch);
    }
    if (now - header.t).abs() > tolerance {
        return Err(Rejection::OutsideTolerance);
    }
    Ok(header.t)
}
