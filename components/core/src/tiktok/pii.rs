//! Normalizing and hashing the personal data TikTok's Events API takes only as SHA-256
//! (tiktok-api.md §3.2): email, phone and external_id. Raw values go no further than
//! these functions; what is stored, logged or sent is the lowercase hex digest.
//!
//! - email: trim, lowercase, SHA-256.
//! - phone: E.164 (`+`, country code, national number; no spaces, symbols or trunk `0`),
//!   using the pixel's default country for numbers written without one, then SHA-256.
//! - external_id: trimmed, SHA-256 (TikTok's own tag trims only; it does not lowercase).
//! - a value that already is 64 hex digits is taken as a digest and passed through
//!   (lowercased), as TikTok's tag and the major CDPs do.

use crate::platform::crypto::sha256_hex;

/// Why a value could not be normalized; it is refused rather than hashed wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PiiError {
    #[error("is empty")]
    Empty,
    #[error("is not an email address")]
    NotAnEmail,
    #[error(
        "is not a phone number with a country code (E.164); set the pixel's default country for national numbers"
    )]
    NotAPhone,
    #[error("is longer than {0} characters")]
    TooLong(usize),
}

/// Longest raw value accepted (emails are at most 254; ids are bounded the same way).
const MAX_LEN: usize = 256;

/// Whether `value` already is a SHA-256 hex digest.
pub fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

fn prehashed(value: &str) -> Option<String> {
    is_sha256_hex(value).then(|| value.to_ascii_lowercase())
}

fn bounded(raw: &str) -> Result<&str, PiiError> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(PiiError::Empty);
    }
    if value.chars().count() > MAX_LEN {
        return Err(PiiError::TooLong(MAX_LEN));
    }
    Ok(value)
}

/// The SHA-256 of a normalized email.
pub fn hash_email(raw: &str) -> Result<String, PiiError> {
    let value = bounded(raw)?;
    if let Some(digest) = prehashed(value) {
        return Ok(digest);
    }
    let email = value.to_lowercase();
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if !valid {
        return Err(PiiError::NotAnEmail);
    }
    Ok(sha256_hex(email.as_bytes()))
}

/// The SHA-256 of a trimmed external id.
pub fn hash_external_id(raw: &str) -> Result<String, PiiError> {
    let value = bounded(raw)?;
    Ok(prehashed(value).unwrap_or_else(|| sha256_hex(value.as_bytes())))
}

/// Country calling codes by ISO 3166-1 alpha-2 code, for national phone numbers.
const CALLING_CODES: &[(&str, &str)] = &[
    ("AE", "971"),
    ("AR", "54"),
    ("AT", "43"),
    ("AU", "61"),
    ("BE", "32"),
    ("BD", "880"),
    ("BG", "359"),
    ("BR", "55"),
    ("CA", "1"),
    ("CH", "41"),
    ("CL", "56"),
    ("CN", "86"),
    ("CO", "57"),
    ("CZ", "420"),
    ("DE", "49"),
    ("DK", "45"),
    ("EG", "20"),
    ("ES", "34"),
    ("FI", "358"),
    ("FR", "33"),
    ("GB", "44"),
    ("GR", "30"),
    ("HK", "852"),
    ("HU", "36"),
    ("ID", "62"),
    ("IE", "353"),
    ("IL", "972"),
    ("IN", "91"),
    ("IT", "39"),
    ("JP", "81"),
    ("KE", "254"),
    ("KR", "82"),
    ("KW", "965"),
    ("MA", "212"),
    ("MX", "52"),
    ("MY", "60"),
    ("NG", "234"),
    ("NL", "31"),
    ("NO", "47"),
    ("NZ", "64"),
    ("PE", "51"),
    ("PH", "63"),
    ("PK", "92"),
    ("PL", "48"),
    ("PT", "351"),
    ("QA", "974"),
    ("RO", "40"),
    ("SA", "966"),
    ("SE", "46"),
    ("SG", "65"),
    ("TH", "66"),
    ("TR", "90"),
    ("TW", "886"),
    ("UA", "380"),
    ("US", "1"),
    ("VN", "84"),
    ("ZA", "27"),
];

/// The calling code of an ISO country (`US` → `1`), if known.
pub fn calling_code(country: &str) -> Option<&'static str> {
    let country = country.trim().to_ascii_uppercase();
    CALLING_CODES
        .iter()
        .find(|(c, _)| *c == country)
        .map(|(_, code)| *code)
}

/// A phone number in E.164. Numbers with `+` or `00` carry their country code; others
/// are national numbers of `default_country` (trunk `0`s dropped). Without a default
/// country, digits are taken to start with the country code, as Segment does.
pub fn normalize_phone(raw: &str, default_country: Option<&str>) -> Result<String, PiiError> {
    let value = bounded(raw)?;
    if value
        .chars()
        .any(|c| c.is_alphabetic() && !matches!(c, 'x' | 'X'))
    {
        return Err(PiiError::NotAPhone);
    }
    // Extensions ("x123", "ext") are not part of the number.
    let number = value.split(['x', 'X']).next().unwrap_or(value);
    let international = number.trim_start().starts_with('+') || number.contains("(+");
    let mut digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let e164_digits = if international {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(code) = default_country.and_then(calling_code) {
        let national = digits.trim_start_matches('0');
        // NANP numbers are often written with their leading 1 but no '+'.
        if code == "1" && national.len() == 11 && national.starts_with('1') {
            national.to_string()
        } else {
            format!("{code}{national}")
        }
    } else {
        digits = digits.trim_start_matches('0').to_string();
        digits
    };
    let e164_digits = e164_digits.trim_start_matches('0');
    if !(8..=15).contains(&e164_digits.len()) {
        return Err(PiiError::NotAPhone);
    }
    Ok(format!("+{e164_digits}"))
}

/// The SHA-256 of a phone number in E.164.
pub fn hash_phone(raw: &str, default_country: Option<&str>) -> Result<String, PiiError> {
    if let Some(digest) = prehashed(raw.trim()) {
        return Ok(digest);
    }
    Ok(sha256_hex(
        normalize_phone(raw, default_country)?.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // TikTok's worked examples (Events API 2.0 reference, "user parameters") and
    // Segment's formatter tests (segmentio/action-destinations, tiktok-conversions formatter.test.ts), digests re-computed.
    #[test]
    fn tiktoks_own_examples() {
        assert_eq!(
            hash_email(" ALICE_abc@gmail.com ").unwrap(),
            "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
        );
        assert_eq!(
            normalize_phone("(+1)2133734253", None).unwrap(),
            "+12133734253"
        );
        assert_eq!(
            hash_phone("(+1)2133734253", None).unwrap(),
            "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"
        );
        assert_eq!(
            hash_external_id("user_123").unwrap(),
            "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"
        );
    }

    #[test]
    fn segments_vectors() {
        assert_eq!(
            hash_email("bugsbunny@warnerbros.com").unwrap(),
            "67e28cdcc3e845d3a4da05ca9fe5ddb7320a83b4cc2167f0555a3b04f63511e3"
        );
        assert_eq!(
            hash_phone("12345678901234", None).unwrap(),
            "00a63bd0437d6ca0fa7b95c00ab2e7c020faa71440e5246750d6b517689e6777"
        );
        assert_eq!(
            hash_phone("+1555-555-5555", None).unwrap(),
            "910a625c4ba147b544e6bd2f267e130ae14c591b6ba9c25cb8573322dedbebd0"
        );
    }

    #[test]
    fn digests_pass_through_once() {
        let d = "C17C025FB9ED44EAE8A9D5C9DF0312AF5C6161BD79BD669692364FC5ECAF108A";
        assert_eq!(hash_email(d).unwrap(), d.to_ascii_lowercase());
        assert_eq!(hash_phone(d, None).unwrap(), d.to_ascii_lowercase());
        assert_eq!(hash_external_id(d).unwrap(), d.to_ascii_lowercase());
    }

    #[test]
    fn national_numbers_use_the_default_country() {
        for (raw, country, e164) in [
            ("(213) 373-4253", "US", "+12133734253"),
            ("1 213 373 4253", "US", "+12133734253"),
            ("07700 900123", "GB", "+447700900123"),
            ("090-1234-5678", "jp", "+819012345678"),
            ("0049 30 1234567", "US", "+49301234567"),
            ("+44 7700 900123 x12", "US", "+447700900123"),
        ] {
            assert_eq!(normalize_phone(raw, Some(country)).unwrap(), e164, "{raw}");
        }
    }

    #[test]
    fn garbage_is_refused_not_hashed() {
        assert_eq!(hash_email("not-an-email"), Err(PiiError::NotAnEmail));
        assert_eq!(hash_email("a@b"), Err(PiiError::NotAnEmail));
        assert_eq!(hash_email("a b@c.com"), Err(PiiError::NotAnEmail));
        assert_eq!(hash_email("   "), Err(PiiError::Empty));
        assert_eq!(
            normalize_phone("call me", Some("US")),
            Err(PiiError::NotAPhone)
        );
        assert_eq!(normalize_phone("123", Some("US")), Err(PiiError::NotAPhone));
        assert_eq!(
            normalize_phone("+1234567890123456", None),
            Err(PiiError::NotAPhone)
        );
        assert!(matches!(
            hash_external_id(&"x".repeat(300)),
            Err(PiiError::TooLong(_))
        ));
    }
}
