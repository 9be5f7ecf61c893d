//! Plain HTTP requests and responses, so request handling lives (and is tested) in core;
//! the guest crate only converts them from and to `wasi:http`.

use crate::ApiError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An incoming request with its body read.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The raw query string, without `?` (empty when absent).
    pub query: String,
    /// Header names lowercased; values that are not UTF-8 are skipped.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `scheme://authority` the client used, when the host says (for absolute links).
    pub origin: Option<String>,
}

impl Request {
    /// A request for tests and typed calls.
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            ..Default::default()
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The token of `Authorization: Bearer <token>`.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }

    /// Whether the client prefers JSON to HTML (API clients rather than browsers).
    pub fn wants_json(&self) -> bool {
        let accept = self.header("accept").unwrap_or("");
        accept.contains("application/json") && !accept.contains("text/html")
    }

    /// The body as JSON of type `T`; an empty body is read as `{}`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", json_reason(&e)))
    }
}

/// Says what is wrong with a JSON body in words a caller can act on.
fn json_reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("is not valid JSON ({e})"),
        Category::Data => format!("has a wrong field ({e})"),
        Category::Io => format!("could not be read ({e})"),
    }
}

/// A response to write back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response with `status`.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        let body = serde_json::to_vec(value).expect("response values always serialize");
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    /// An HTML page with `status`; callers escape what they put in it ([`html_escape`]).
    pub fn html(status: u16, body: String) -> Self {
        Response {
            status,
            headers: vec![
                ("content-type".into(), "text/html; charset=utf-8".into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: body.into_bytes(),
        }
    }

    /// A 302 to `location`, never cached.
    pub fn redirect(location: &str) -> Self {
        Response {
            status: 302,
            headers: vec![
                ("location".into(), location.into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body: Vec::new(),
        }
    }

    /// 204 with no body.
    pub fn no_content() -> Self {
        Response {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The JSON error body and status for `error`.
    pub fn error(error: &ApiError) -> Self {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        headers.extend(error.headers().into_iter().map(|(n, v)| (n.to_string(), v)));
        Response {
            status: error.status(),
            headers,
            body: error.to_json(),
        }
    }

    /// 405 naming the allowed methods.
    pub fn method_not_allowed(allowed: &str) -> Self {
        let mut r = Response::error(&ApiError::invalid(
            "method",
            format!("not allowed here; use {allowed}"),
        ));
        r.status = 405;
        r.headers.push(("allow".into(), allowed.into()));
        r
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Splits `/a/b/c` into `["a", "b", "c"]` (empty segments dropped).
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_needs_the_bearer_scheme() {
        let r = Request::new("GET", "/").with_header("Authorization", "Bearer abc ");
        assert_eq!(r.bearer_token(), Some("abc"));
        let r = Request::new("GET", "/").with_header("Authorization", "Basic abc");
        assert_eq!(r.bearer_token(), None);
        let r = Request::new("GET", "/").with_header("Authorization", "Bearer ");
        assert_eq!(r.bearer_token(), None);
    }

    #[test]
    fn malformed_json_body_names_the_body() {
        let r = Request::new("POST", "/").with_body("{nope");
        let e = r.json::<serde_json::Value>().unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }

    #[test]
    fn query_params_are_decoded() {
        let r = Request::new("GET", "/x?state=a%2Bb&code=1");
        assert_eq!(r.query_param("state").as_deref(), Some("a+b"));
        assert_eq!(r.query_param("missing"), None);
    }

    #[test]
    fn html_escape_covers_attribute_breakouts() {
        assert_eq!(
            html_escape("<a href=\"x\" onclick='y'>&"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;"
        );
    }
}
