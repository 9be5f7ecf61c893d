//! A client for the admin API of a running tiktok-edge app (`tiktok-edge orgs …`,
//! `keys …`): the CLI goes through the same HTTP API as everyone else.

use serde_json::Value;

/// Talks to `base_url` with the admin token.
pub struct AdminClient {
    base_url: String,
    token: String,
    http: reqwest::Client,
}

/// What went wrong, in words for a terminal.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach {url}: {source} (is `tiktok-edge up` running?)")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
}

impl AdminClient {
    pub fn new(base_url: &str, token: &str) -> Self {
        AdminClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// Sends `method path` with an optional JSON body; the JSON answer, or the API's error message.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, AdminError> {
        let url = format!("{}{path}", self.base_url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("valid method");
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let unreachable = |source| AdminError::Unreachable {
            url: url.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        let json: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let message = json["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| json.to_string());
            let field = json["error"]["field"]
                .as_str()
                .map(|f| format!(" (field {f})"))
                .unwrap_or_default();
            return Err(AdminError::Refused {
                status,
                message: format!("{message}{field}"),
            });
        }
        Ok(json)
    }
}
