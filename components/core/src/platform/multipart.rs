//! Writing `multipart/form-data` bodies (RFC 7578) for TikTok's upload endpoints, in
//! pieces, so a file part can be streamed between its header and the rest of the form.

use crate::ApiError;
use crate::platform::crypto::random_token;

/// One form's boundary and the pieces around its parts.
pub struct Form {
    boundary: String,
}

impl Form {
    pub fn new() -> Result<Self, ApiError> {
        Ok(Form {
            boundary: format!("tiktok-edge-{}", random_token::<18>()?),
        })
    }

    /// The `Content-Type` header value.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// A text field, whole.
    pub fn field(&self, name: &str, value: &str) -> Vec<u8> {
        format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{value}\r\n",
            self.boundary,
            quote(name)
        )
        .into_bytes()
    }

    /// The header of a file part; the file's bytes follow, then [`file_end`](Self::file_end).
    pub fn file_start(&self, name: &str, file_name: &str, content_type: &str) -> Vec<u8> {
        format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {content_type}\r\n\r\n",
            self.boundary,
            quote(name),
            quote(file_name)
        )
        .into_bytes()
    }

    pub fn file_end(&self) -> &'static [u8] {
        b"\r\n"
    }

    /// The closing boundary.
    pub fn end(&self) -> Vec<u8> {
        format!("--{}--\r\n", self.boundary).into_bytes()
    }

    /// A whole form of text fields and one file, in memory.
    pub fn whole(&self, fields: &[(&str, &str)], file: (&str, &str, &str, &[u8])) -> Vec<u8> {
        let mut out = Vec::with_capacity(file.3.len() + 512);
        for (n, v) in fields {
            out.extend(self.field(n, v));
        }
        out.extend(self.file_start(file.0, file.1, file.2));
        out.extend_from_slice(file.3);
        out.extend_from_slice(self.file_end());
        out.extend(self.end());
        out
    }
}

/// Names and file names go inside quotes: quotes, backslashes and line breaks are
/// replaced, so a hostile file name cannot add a part or a header.
fn quote(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '"' | '\\' | '\r' | '\n' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect()
}

/// The lowercase hex MD5 TikTok signs uploads with.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex::encode(Md5::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_file_name_cannot_break_out_of_its_header() {
        let f = Form::new().unwrap();
        let head =
            String::from_utf8(f.file_start("file", "a\"\r\nX-Evil: 1\r\n.txt", "text/plain"))
                .unwrap();
        assert_eq!(
            head.matches("\r\n").count(),
            4,
            "three header lines and the blank one: {head}"
        );
        assert!(head.contains("filename=\"a___X-Evil: 1__.txt\""));
    }

    #[test]
    fn md5_is_tiktoks_lowercase_hex() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
