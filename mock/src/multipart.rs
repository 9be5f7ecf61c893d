//! `multipart/form-data` bodies (video and audience file uploads), read with `multer`.

use crate::envelope::Reply;
use bytes::Bytes;
use std::collections::HashMap;

/// The text fields and files of a form.
#[derive(Debug, Default)]
pub struct Form {
    pub fields: HashMap<String, String>,
    /// field name → (file name, bytes)
    pub files: HashMap<String, (String, Bytes)>,
}

impl Form {
    pub async fn parse(content_type: Option<&str>, body: Bytes) -> Result<Self, Reply> {
        let content_type = content_type
            .ok_or_else(|| Reply::param("Content-Type: multipart/form-data is required."))?;
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            Reply::param("Content-Type: multipart/form-data with a boundary is required.")
        })?;
        let stream =
            futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
        let mut multipart = multer::Multipart::new(stream, boundary);
        let mut form = Form::default();
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| Reply::param(format!("body: Not a valid multipart form ({e}).")))?
        {
            let name = field.name().unwrap_or_default().to_string();
            match field.file_name().map(str::to_string) {
                Some(file_name) => {
                    let bytes = field
                        .bytes()
                        .await
                        .map_err(|e| Reply::param(format!("{name}: {e}")))?;
                    form.files.insert(name, (file_name, bytes));
                }
                None => {
                    let text = field
                        .text()
                        .await
                        .map_err(|e| Reply::param(format!("{name}: {e}")))?;
                    form.fields.insert(name, text);
                }
            }
        }
        Ok(form)
    }

    pub fn required(&self, name: &str) -> Result<&str, Reply> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Reply::param(format!("{name}: Missing data for required field.")))
    }
}

/// Lowercase hex MD5, as TikTok's `video_signature` and `file_signature`.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
