//! Organization (tenant) ids.
//!
//! Every key an organization owns starts with `org/{org_id}/` (design.md §4). The id is
//! validated before it is ever used in a key, so no request can name another
//! organization's keys with `/`, `..` or similar tricks.

use crate::ApiError;
use std::fmt;

/// A validated organization id: 1–64 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrgId(String);

impl OrgId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let reason = if raw.is_empty() {
            Some("must not be empty")
        } else if raw.len() > Self::MAX_LEN {
            Some("must be at most 64 characters")
        } else if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            Some("may contain only lowercase letters, digits and '-'")
        } else if raw.starts_with('-') || raw.ends_with('-') {
            Some("must not start or end with '-'")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(ApiError::invalid("org", reason)),
            None => Ok(OrgId(raw.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key-value prefix under which everything of this organization lives.
    pub fn key_prefix(&self) -> String {
        format!("org/{}/", self.0)
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_slugs() {
        for ok in ["acme", "acme-2", "a", &"x".repeat(64)] {
            assert_eq!(OrgId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_anything_that_could_escape_its_key_prefix() {
        for bad in [
            "",
            "Acme",
            "acme/..",
            "../b",
            "a b",
            "a%2Fb",
            "-a",
            "a-",
            "é",
            &"x".repeat(65),
        ] {
            let err = OrgId::parse(bad).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_prefixed_by_org() {
        assert_eq!(OrgId::parse("acme").unwrap().key_prefix(), "org/acme/");
    }
}
