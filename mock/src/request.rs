//! Reading a request the way TikTok does: JSON bodies for POST, and GET parameters where
//! arrays and objects are JSON text (`advertiser_ids=["1","2"]`). Errors are envelope
//! `Reply`s (40002); `envelope` does not depend on this module.

use crate::envelope::Reply;
use serde_json::{Map, Value};

/// Parameters from the query string (GET) or the JSON body (POST), as JSON values.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Map<String, Value>);

impl Params {
    /// Query parameters: values that parse as JSON arrays/objects become them; the rest stay strings.
    pub fn from_query(query: &str) -> Self {
        let mut map = Map::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let value = if v.starts_with('[') || v.starts_with('{') {
                serde_json::from_str(&v).unwrap_or(Value::String(v.into_owned()))
            } else {
                Value::String(v.into_owned())
            };
            map.insert(k.into_owned(), value);
        }
        Params(map)
    }

    /// A JSON object body; anything else is 40002.
    pub fn from_json(body: &[u8]) -> Result<Self, Reply> {
        if body.is_empty() {
            return Ok(Params::default());
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Params(map)),
            Ok(_) => Err(Reply::param("request body must be a JSON object")),
            Err(e) => Err(Reply::param(format!("request body is not valid JSON: {e}"))),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A string (numbers are accepted and turned into their decimal text, as IDs may be).
    pub fn str(&self, key: &str) -> Result<Option<String>, Reply> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(Reply::param(format!("{key}: Not a valid string."))),
        }
    }

    pub fn required_str(&self, key: &str) -> Result<String, Reply> {
        self.str(key)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Reply::param(format!("{key}: Missing data for required field.")))
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, Reply> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| Reply::param(format!("{key}: Not a valid integer."))),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| Reply::param(format!("{key}: Not a valid integer."))),
            Some(_) => Err(Reply::param(format!("{key}: Not a valid integer."))),
        }
    }

    /// A list of strings (IDs given as numbers are accepted).
    pub fn str_list(&self, key: &str) -> Result<Option<Vec<String>>, Reply> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(Reply::param(format!("{key}: Not a valid list of strings."))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(Reply::param(format!("{key}: Not a valid list."))),
        }
    }
}

/// Reads `page` (≥ 1, default 1) and `page_size` (1..=max, default 10) from params.
pub fn paging(params: &Params, max: u64) -> Result<(u64, u64), Reply> {
    let page = params.u64("page")?.unwrap_or(1);
    let page_size = params.u64("page_size")?.unwrap_or(10);
    if page < 1 {
        return Err(Reply::param("page: must be greater than or equal to 1"));
    }
    if !(1..=max).contains(&page_size) {
        return Err(Reply::param(format!(
            "page_size: must be between 1 and {max}"
        )));
    }
    Ok((page, page_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_arrays_are_json_text() {
        let p = Params::from_query("advertiser_ids=%5B%221%22%2C%222%22%5D&page=2&fields=not-json");
        assert_eq!(p.str_list("advertiser_ids").unwrap().unwrap(), ["1", "2"]);
        assert_eq!(p.u64("page").unwrap(), Some(2));
        assert_eq!(p.str("fields").unwrap().as_deref(), Some("not-json"));
    }

    #[test]
    fn bad_types_are_40002_naming_the_field() {
        let p = Params::from_json(br#"{"page": "x", "ids": [{}]}"#).unwrap();
        assert_eq!(p.u64("page").unwrap_err().code, 40002);
        assert!(p.str_list("ids").unwrap_err().message.starts_with("ids:"));
        assert_eq!(Params::from_json(b"[1]").unwrap_err().code, 40002);
        assert_eq!(Params::from_json(b"{nope").unwrap_err().code, 40002);
    }
}
