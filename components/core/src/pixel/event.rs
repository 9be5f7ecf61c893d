//! One website event, checked and turned into what TikTok's Events API 2.0 takes
//! (tiktok-api.md §3.1): validated field by field, enriched with the client's IP and
//! user agent and the `ttclid` of the page URL, its personal data hashed ([`crate::tiktok::pii`]).
//!
//! Rejections name the field (`user.email`, `properties.contents[2].price`) so a caller can
//! fix its tag; one bad event never rejects its neighbours in a batch.

use crate::platform::json_reader::{Json, Object};
use crate::platform::json_writer::{Members, ToJson};
use crate::tiktok::pii::{self, PiiError};
use serde::Serialize;
use std::fmt::Display;

/// TikTok's standard web events (§3.5); any other name is a custom event. Sorted
/// (byte order), for a binary search.
pub const STANDARD_EVENTS: &[&str] = &[
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "ApplicationApproval",
    "ClickButton",
    "CompletePayment",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Download",
    "FindLocation",
    "InitiateCheckout",
    "Lead",
    "PageView",
    "Pageview",
    "PlaceAnOrder",
    "Purchase",
    "Schedule",
    "Search",
    "StartTrial",
    "SubmitApplication",
    "SubmitForm",
    "Subscribe",
    "ViewContent",
];

/// Currencies TikTok lists for `currency` (ISO 4217). Sorted, for a binary search.
pub const CURRENCIES: &[&str] = &[
    "AED", "ARS", "AUD", "BDT", "BGN", "BHD", "BOB", "BRL", "CAD", "CHF", "CLP", "CNY", "COP",
    "CRC", "CZK", "DKK", "DZD", "EGP", "EUR", "GBP", "GTQ", "HKD", "HNL", "HUF", "IDR", "ILS",
    "INR", "ISK", "JOD", "JPY", "KES", "KRW", "KWD", "KZT", "LBP", "MAD", "MOP", "MXN", "MYR",
    "NGN", "NIO", "NOK", "NZD", "OMR", "PEN", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RUB",
    "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "UYU", "VES", "VND", "ZAR",
];

/// Per-pixel rules for incoming events.
#[derive(Debug, Clone)]
pub struct Rules {
    /// ISO country for phone numbers written without a country code.
    pub default_country: Option<String>,
    pub allow_custom_events: bool,
    /// Oldest accepted `event_time`, in seconds before now.
    pub max_age_secs: i64,
    /// How far in the future `event_time` may be (clock skew), in seconds.
    pub max_future_secs: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            default_country: None,
            allow_custom_events: true,
            max_age_secs: 7 * 86400,
            max_future_secs: 300,
        }
    }
}

/// What the edge knows about the request that carried the event.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Seconds since the epoch.
    pub now: i64,
}

/// TikTok's `data[]` item (§3.1), as [`prepare`] builds it. Typed rather than a JSON
/// map: an event is built, serialized and dropped once per request on the hot path,
/// and a map costs an allocation and a sorted insert per field. Absent fields are
/// left out.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    pub event: String,
    pub event_time: i64,
    pub event_id: String,
    pub user: User,
    #[serde(skip_serializing_if = "Page::is_empty")]
    pub page: Page,
    #[serde(skip_serializing_if = "Properties::is_empty")]
    pub properties: Properties,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_data_use: Option<bool>,
}

/// `user`: what identifies the shopper, personal data hashed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Hashed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Hashed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<Hashed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttclid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// A hashed user field: one SHA-256 hex digest, or a list of them, as it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Hashed {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Page {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrer: Option<String>,
}

impl Page {
    fn is_empty(&self) -> bool {
        self.url.is_none() && self.referrer.is_none()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Properties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contents: Option<Vec<Content>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search_string: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shop_id: Option<String>,
}

impl Properties {
    fn is_empty(&self) -> bool {
        self.value.is_none()
            && self.currency.is_none()
            && self.content_type.is_none()
            && self.contents.is_none()
            && self.description.is_none()
            && self.query.is_none()
            && self.search_string.is_none()
            && self.order_id.is_none()
            && self.shop_id.is_none()
    }
}

/// One item of `properties.contents`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Content {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
}

// What the queue stores, written by hand for speed ([`crate::platform::json_writer`]): the same
// members in the same order as the `Serialize` derives above (a test holds them
// together). Each destructures its whole struct, so a new field will not compile until
// it is written here too.

impl ToJson for Prepared {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Prepared {
            event,
            event_time,
            event_id,
            user,
            page,
            properties,
            limited_data_use,
        } = self;
        let mut m = Members::new(out);
        m.field("event", event)
            .field("event_time", event_time)
            .field("event_id", event_id)
            .field("user", user);
        if !page.is_empty() {
            m.field("page", page);
        }
        if !properties.is_empty() {
            m.field("properties", properties);
        }
        m.some("limited_data_use", limited_data_use).end();
    }
}

impl ToJson for User {
    fn write_json(&self, out: &mut Vec<u8>) {
        let User {
            email,
            phone,
            external_id,
            ttclid,
            ttp,
            locale,
            ip,
            user_agent,
        } = self;
        Members::new(out)
            .some("email", email)
            .some("phone", phone)
            .some("external_id", external_id)
            .some("ttclid", ttclid)
            .some("ttp", ttp)
            .some("locale", locale)
            .some("ip", ip)
            .some("user_agent", user_agent)
            .end();
    }
}

impl ToJson for Hashed {
    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Hashed::One(digest) => digest.write_json(out),
            Hashed::Many(digests) => digests.write_json(out),
        }
    }
}

impl ToJson for Page {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Page { url, referrer } = self;
        Members::new(out)
            .some("url", url)
            .some("referrer", referrer)
            .end();
    }
}

impl ToJson for Properties {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Properties {
            value,
            currency,
            content_type,
            contents,
            description,
            query,
            search_string,
            order_id,
            shop_id,
        } = self;
        Members::new(out)
            .some("value", value)
            .some("currency", currency)
            .some("content_type", content_type)
            .some("contents", contents)
            .some("description", description)
            .some("query", query)
            .some("search_string", search_string)
            .some("order_id", order_id)
            .some("shop_id", shop_id)
            .end();
    }
}

impl ToJson for Content {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Content {
            content_id,
            content_type,
            content_name,
            content_category,
            brand,
            price,
            quantity,
        } = self;
        Members::new(out)
            .some("content_id", content_id)
            .some("content_type", content_type)
            .some("content_name", content_name)
            .some("content_category", content_category)
            .some("brand", brand)
            .some("price", price)
            .some("quantity", quantity)
            .end();
    }
}

/// Why an event was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

fn reject(field: impl Into<String>, reason: impl Into<String>) -> Rejection {
    Rejection {
        field: field.into(),
        reason: reason.into(),
    }
}

const MAX_STRING: usize = 1024;
const MAX_URL: usize = 2048;
const MAX_CONTENTS: usize = 200;

/// Whether `s` has more than `max` characters (a string of at most `max` bytes has
/// not; most are, and need no count).
fn longer_than(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().count() > max
}

/// The first `max` characters of `s`.
fn first_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// `field` names the field in a rejection, and is formatted only for one: most events are
/// accepted, and a field name formatted for each of their fields was an allocation each.
fn string(v: &Json, field: impl Display, max: usize) -> Result<Option<String>, Rejection> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) if longer_than(s, max) => Err(reject(
            field.to_string(),
            format!("must be at most {max} characters"),
        )),
        Json::String(s) if s.is_empty() => Ok(None),
        Json::String(s) => Ok(Some(s.to_string())),
        Json::Number(n) => Ok(Some(n.to_string())),
        _ => Err(reject(field.to_string(), "must be a string")),
    }
}

fn number(v: &Json, field: impl Display) -> Result<Option<f64>, Rejection> {
    match v {
        Json::Null => Ok(None),
        Json::Number(n) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Some)
            .ok_or_else(|| reject(field.to_string(), "must be a number of at least 0")),
        Json::String(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Some)
            .ok_or_else(|| {
                reject(
                    field.to_string(),
                    "must be a number of at least 0 (no currency symbols or commas)",
                )
            }),
        _ => Err(reject(field.to_string(), "must be a number")),
    }
}

/// `user.email` / `phone` / `external_id`: a string or a list of strings, hashed.
fn hashed(
    v: &Json,
    field: &str,
    hash: impl Fn(&str) -> Result<String, PiiError>,
) -> Result<Option<Hashed>, Rejection> {
    let one = |s: &str, field: &dyn Display| {
        hash(s).map_err(|e| reject(field.to_string(), e.to_string()))
    };
    match v {
        Json::Null => Ok(None),
        Json::String(s) if s.trim().is_empty() => Ok(None),
        Json::String(s) => Ok(Some(Hashed::One(one(s, &field)?))),
        Json::Array(items) if items.len() > 10 => Err(reject(field, "at most 10 values")),
        Json::Array(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Json::String(s) = item else {
                    return Err(reject(format!("{field}[{i}]"), "must be a string"));
                };
                out.push(one(s, &format_args!("{field}[{i}]"))?);
            }
            Ok((!out.is_empty()).then_some(Hashed::Many(out)))
        }
        _ => Err(reject(field, "must be a string or a list of strings")),
    }
}

/// Page URLs checked for one request. A URL is parsed once, for the check and the
/// ttclid, and the last one is kept: the events of a batch sent from one page share its
/// URL, and a URL parse was 4 % of the server's time under such 50-event batches. Kept
/// for one request only (a URL may carry personal data).
#[derive(Default)]
pub struct PageUrls {
    /// The last valid URL and its ttclid.
    last: Option<(String, Option<String>)>,
}

impl PageUrls {
    /// Checks that `url` is an absolute http(s) URL; returns its ttclid.
    fn check(&mut self, url: &str) -> Result<Option<String>, Rejection> {
        if let Some((last, ttclid)) = &self.last
            && last == url
        {
            return Ok(ttclid.clone());
        }
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| reject("page.url", "must be an absolute http(s) URL"))?;
        let ttclid = ttclid_of(&parsed);
        self.last = Some((url.to_string(), ttclid.clone()));
        Ok(ttclid)
    }
}

/// The `ttclid` query parameter of a page URL.
fn ttclid_of(url: &url::Url) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == "ttclid")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty() && v.len() <= 512)
}

fn object<'a, 'b>(v: &'a Json<'b>, field: &str) -> Result<Option<&'a Object<'b>>, Rejection> {
    match v {
        Json::Null => Ok(None),
        Json::Object(m) => Ok(Some(m)),
        _ => Err(reject(field, "must be an object")),
    }
}

/// Checks one of a request's events and builds TikTok's `data[]` item. `event_id` must
/// be present (the caller generates one for events that arrive without it). `urls`: the
/// page URLs the request's other events had.
pub fn prepare(
    raw: &Json,
    rules: &Rules,
    ctx: &Context,
    urls: &mut PageUrls,
) -> Result<Prepared, Rejection> {
    let Json::Object(event) = raw else {
        return Err(reject("event", "must be a JSON object"));
    };
    let null = Json::Null;
    let get = |k: &str| event.get(k).unwrap_or(&null);

    let name = match get("event") {
        Json::Null => return Err(reject("event", "is required")),
        Json::String(s) if s.is_empty() => return Err(reject("event", "is required")),
        Json::String(s) if longer_than(s, 100) => {
            return Err(reject("event", "must be at most 100 characters"));
        }
        Json::String(s) => s.to_string(),
        _ => return Err(reject("event", "must be a string")),
    };
    let standard = STANDARD_EVENTS.binary_search(&name.as_str()).is_ok();
    if !standard {
        if !rules.allow_custom_events {
            return Err(reject(
                "event",
                "is not one of TikTok's standard events and this pixel allows no custom events",
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ' ')
        {
            return Err(reject(
                "event",
                "custom event names use letters, digits, '_', '-' and spaces",
            ));
        }
    }

    let event_time = match get("event_time") {
        Json::Null => ctx.now,
        Json::Number(n) => n
            .as_i64()
            .ok_or_else(|| reject("event_time", "must be whole seconds since the epoch"))?,
        _ => {
            return Err(reject(
                "event_time",
                "must be whole seconds since the epoch",
            ));
        }
    };
    if event_time > 100_000_000_000 {
        return Err(reject("event_time", "must be seconds, not milliseconds"));
    }
    if event_time > ctx.now + rules.max_future_secs {
        return Err(reject("event_time", "is in the future"));
    }
    if event_time < ctx.now - rules.max_age_secs {
        return Err(reject(
            "event_time",
            format!("is older than {} days", rules.max_age_secs / 86400),
        ));
    }

    let event_id = string(get("event_id"), "event_id", 256)?
        .ok_or_else(|| reject("event_id", "is required"))?;

    // user
    let mut user = User::default();
    let body_user = object(get("user"), "user")?;
    if let Some(u) = body_user {
        let f = |k: &str| u.get(k).unwrap_or(&null);
        let country = rules.default_country.as_deref();
        user.email = hashed(f("email"), "user.email", pii::hash_email)?;
        user.phone = hashed(f("phone"), "user.phone", |s| pii::hash_phone(s, country))?;
        user.external_id = hashed(f("external_id"), "user.external_id", pii::hash_external_id)?;
        user.ttclid = string(f("ttclid"), "user.ttclid", 512)?;
        user.ttp = string(f("ttp"), "user.ttp", 512)?;
        user.locale = string(f("locale"), "user.locale", 35)?;
    }

    // page
    let mut page = Page::default();
    if let Some(p) = object(get("page"), "page")? {
        let url = string(p.get("url").unwrap_or(&null), "page.url", MAX_URL)?;
        if let Some(url) = &url {
            let ttclid = urls.check(url)?;
            if user.ttclid.is_none() {
                user.ttclid = ttclid;
            }
        }
        page.url = url;
        page.referrer = string(p.get("referrer").unwrap_or(&null), "page.referrer", MAX_URL)?;
    }
    // The request's own IP and user agent win; server-side senders (no request context)
    // pass the shopper's in `user`.
    let from_body = |k: &str, max: usize| -> Result<Option<String>, Rejection> {
        match body_user.and_then(|u| u.get(k)) {
            Some(v) => string(v, format_args!("user.{k}"), max),
            None => Ok(None),
        }
    };
    let ip = match &ctx.ip {
        Some(ip) => Some(ip.clone()),
        None => from_body("ip", 64)?
            .map(|ip| {
                ip.parse::<std::net::IpAddr>()
                    .map(|ip| ip.to_string())
                    .map_err(|_| reject("user.ip", "must be an IPv4 or IPv6 address"))
            })
            .transpose()?,
    };
    let user_agent = match &ctx.user_agent {
        Some(ua) => Some(first_chars(ua, MAX_STRING).to_string()),
        None => from_body("user_agent", MAX_STRING)?,
    };
    user.ip = ip;
    user.user_agent = user_agent;

    // properties
    let mut properties = Properties::default();
    if let Some(p) = object(get("properties"), "properties")? {
        let f = |k: &str| p.get(k).unwrap_or(&null);
        let value = number(f("value"), "properties.value")?;
        let currency =
            string(f("currency"), "properties.currency", 3)?.map(|c| c.to_ascii_uppercase());
        if let Some(c) = &currency
            && CURRENCIES.binary_search(&c.as_str()).is_err()
        {
            return Err(reject(
                "properties.currency",
                "is not an ISO 4217 currency TikTok supports",
            ));
        }
        if value.is_some() && currency.is_none() {
            return Err(reject("properties.currency", "is required with value"));
        }
        properties.value = value;
        properties.currency = currency;
        let content_type = string(f("content_type"), "properties.content_type", 20)?;
        if let Some(t) = &content_type
            && t != "product"
            && t != "product_group"
        {
            return Err(reject(
                "properties.content_type",
                "must be product or product_group",
            ));
        }
        properties.content_type = content_type;
        match f("contents") {
            Json::Null => {}
            Json::Array(items) if items.len() > MAX_CONTENTS => {
                return Err(reject(
                    "properties.contents",
                    format!("at most {MAX_CONTENTS} items"),
                ));
            }
            Json::Array(items) => {
                let mut contents = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let Json::Object(c) = item else {
                        return Err(reject(
                            format!("properties.contents[{i}]"),
                            "must be an object",
                        ));
                    };
                    let g = |k: &str| c.get(k).unwrap_or(&null);
                    let text = |k: &str| {
                        string(
                            g(k),
                            format_args!("properties.contents[{i}].{k}"),
                            MAX_STRING,
                        )
                    };
                    contents.push(Content {
                        content_id: text("content_id")?,
                        content_type: text("content_type")?,
                        content_name: text("content_name")?,
                        content_category: text("content_category")?,
                        brand: text("brand")?,
                        price: number(g("price"), format_args!("properties.contents[{i}].price"))?,
                        quantity: match g("quantity") {
                            Json::Null => None,
                            Json::Number(n) if n.as_u64().is_some_and(|q| q <= 1_000_000) => {
                                n.as_u64()
                            }
                            _ => {
                                return Err(reject(
                                    format!("properties.contents[{i}].quantity"),
                                    "must be a whole number up to 1000000",
                                ));
                            }
                        },
                    });
                }
                properties.contents = Some(contents);
            }
            _ => return Err(reject("properties.contents", "must be a list")),
        }
        let text = |k: &str| string(f(k), format_args!("properties.{k}"), MAX_STRING);
        properties.description = text("description")?;
        properties.query = text("query")?;
        properties.search_string = text("search_string")?;
        properties.order_id = text("order_id")?;
        properties.shop_id = text("shop_id")?;
    }

    Ok(Prepared {
        event: name,
        event_time,
        event_id,
        user,
        page,
        properties,
        limited_data_use: event.get("limited_data_use").and_then(Json::as_bool),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ctx() -> Context {
        Context {
            ip: Some("203.0.113.1".into()),
            user_agent: Some("Mozilla/5.0".into()),
            now: 1_700_000_000,
        }
    }

    /// Prepares an event written as a `Value`.
    fn prepare(v: &Value, rules: &Rules, ctx: &Context) -> Result<Prepared, Rejection> {
        super::prepare(&Json::from_value(v), rules, ctx, &mut PageUrls::default())
    }

    /// The event as TikTok gets it.
    fn prepared(v: &Value, rules: &Rules, ctx: &Context) -> Value {
        serde_json::to_value(prepare(v, rules, ctx).unwrap()).unwrap()
    }

    fn ok(v: Value) -> Value {
        prepared(&v, &Rules::default(), &ctx())
    }

    fn refused(v: Value) -> Rejection {
        prepare(&v, &Rules::default(), &ctx()).unwrap_err()
    }

    #[test]
    fn fields_without_a_value_are_left_out_not_sent_as_null() {
        let bare = ok(json!({"event": "Lead", "event_id": "1"}));
        assert_eq!(
            bare,
            json!({"event": "Lead", "event_time": 1_700_000_000, "event_id": "1",
                "user": {"ip": "203.0.113.1", "user_agent": "Mozilla/5.0"}})
        );
        let server = Context {
            now: 1_700_000_000,
            ..Context::default()
        };
        let empty = prepared(
            &json!({"event": "Lead", "event_id": "1", "user": {"email": " "},
                "page": {"url": ""}, "properties": {"contents": [{}]}, "limited_data_use": false}),
            &Rules::default(),
            &server,
        );
        assert_eq!(
            empty,
            json!({"event": "Lead", "event_time": 1_700_000_000, "event_id": "1", "user": {},
                "properties": {"contents": [{}]}, "limited_data_use": false})
        );
    }

    #[test]
    fn the_lists_searched_by_halves_are_sorted() {
        assert!(STANDARD_EVENTS.is_sorted());
        assert!(CURRENCIES.is_sorted());
        assert!(
            ok(json!({"event": "ViewContent", "event_id": "1",
            "properties": {"value": 1, "currency": "ZAR"}}))
            .is_object()
        );
        assert_eq!(
            refused(json!({"event": "Lead", "event_id": "1",
                "properties": {"value": 1, "currency": "ZZZ"}}))
            .field,
            "properties.currency"
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let e = "é".repeat(100);
        assert!(!longer_than(&e, 100), "200 bytes, 100 characters");
        assert!(longer_than(&format!("{e}a"), 100));
        assert_eq!(first_chars(&e, 3), "ééé");
        assert_eq!(first_chars("ab", 3), "ab");
        let ua = format!("Mozilla/{}", "ü".repeat(MAX_STRING));
        let long = Context {
            user_agent: Some(ua.clone()),
            ..ctx()
        };
        let out = prepared(
            &json!({"event": "Lead", "event_id": "1"}),
            &Rules::default(),
            &long,
        );
        let kept = out["user"]["user_agent"].as_str().unwrap();
        assert_eq!(kept.chars().count(), MAX_STRING);
        assert!(ua.starts_with(kept));
        assert_eq!(
            refused(json!({"event": "é".repeat(101), "event_id": "1"})).reason,
            "must be at most 100 characters"
        );
        assert!(
            prepare(
                &json!({"event": "é".repeat(100), "event_id": "1"}),
                &Rules::default(),
                &ctx()
            )
            .is_err_and(|r| r.reason != "must be at most 100 characters")
        );
    }

    #[test]
    fn stored_events_are_written_as_their_serde_derives_write_them() {
        let s = |v: &str| Some(v.to_string());
        let content = Content {
            content_id: s("sku-\"1\""),
            content_type: s("product"),
            content_name: s("Tee\n“Ünïcode” 🎉"),
            content_category: s("apparel"),
            brand: s("b\\rand"),
            price: Some(10.25),
            quantity: Some(u64::MAX),
        };
        let full = Prepared {
            event: "Purchase".into(),
            event_time: -1,
            event_id: "id\u{1}\t".into(),
            user: User {
                email: Some(Hashed::One("a".repeat(64))),
                phone: Some(Hashed::Many(vec!["b".repeat(64), "c".repeat(64)])),
                external_id: Some(Hashed::Many(Vec::new())),
                ttclid: s("E.C.P"),
                ttp: s("ttp"),
                locale: s("en-US"),
                ip: s("2001:db8::1"),
                user_agent: s("Mozilla/5.0 (X11; \"quoted\")"),
            },
            page: Page {
                url: s("https://shop.example/p?a=1&b=\"2\""),
                referrer: s("https://ref.example/"),
            },
            properties: Properties {
                value: Some(1e21),
                currency: s("USD"),
                content_type: s("product"),
                contents: Some(vec![content.clone(), Content::default()]),
                description: s("d"),
                query: s("q"),
                search_string: s("s"),
                order_id: s("o"),
                shop_id: s("shop"),
            },
            limited_data_use: Some(false),
        };
        let mut bare = full.clone();
        bare.user = User::default();
        bare.page = Page::default();
        bare.properties = Properties::default();
        bare.limited_data_use = None;
        let mut partial = full.clone();
        partial.page.url = None;
        partial.properties = Properties {
            value: Some(f64::NAN),
            ..Properties::default()
        };
        let prepared = prepare(&json!({"event": "AddToCart", "event_id": "x", "user": {"email": "A@b.co"},
            "page": {"url": "https://shop.example/?ttclid=t"}, "properties": {"value": 9.5, "currency": "usd"}}),
            &Rules::default(), &ctx()).unwrap();
        for event in [full, bare, partial, prepared] {
            let queued = crate::pixel::queue::QueuedEvent {
                data: event,
                received_at: 1_700_000_000,
            };
            let mut out = Vec::new();
            queued.write_json(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&queued).unwrap()
            );
        }
    }

    #[test]
    fn events_of_one_request_each_get_their_own_pages_check_and_ttclid() {
        let mut urls = PageUrls::default();
        let mut page = |url: &str, ttclid: Option<&str>| {
            let mut user = json!({});
            if let Some(t) = ttclid {
                user["ttclid"] = json!(t);
            }
            let v = json!({"event": "ViewContent", "event_id": "1", "user": user, "page": {"url": url}});
            super::prepare(&Json::from_value(&v), &Rules::default(), &ctx(), &mut urls)
                .map(|p| p.user.ttclid)
        };
        let a = "https://shop.example/p?ttclid=A";
        assert_eq!(page(a, None).unwrap().as_deref(), Some("A"));
        assert_eq!(
            page(a, None).unwrap().as_deref(),
            Some("A"),
            "the same page again"
        );
        assert_eq!(
            page(a, Some("own")).unwrap().as_deref(),
            Some("own"),
            "an event's own ttclid still wins"
        );
        assert_eq!(page("https://shop.example/p", None).unwrap(), None);
        assert_eq!(
            page("ftp://shop.example/p?ttclid=A", None)
                .unwrap_err()
                .field,
            "page.url"
        );
        assert_eq!(page("not a url", None).unwrap_err().field, "page.url");
        assert_eq!(
            page("not a url", None).unwrap_err().field,
            "page.url",
            "refused again"
        );
        assert_eq!(page(a, None).unwrap().as_deref(), Some("A"));
        assert_eq!(
            page("https://shop.example/p?ttclid=B", None)
                .unwrap()
                .as_deref(),
            Some("B")
        );
    }

    #[test]
    fn a_purchase_becomes_tiktoks_shape_with_hashed_user_data() {
        let out = ok(json!({
            "event": "CompletePayment", "event_id": "order-1", "event_time": 1_699_999_990,
            "user": {"email": " ALICE_abc@gmail.com ", "phone": "(+1)2133734253", "external_id": "user_123"},
            "page": {"url": "https://shop.example/checkout?ttclid=E.C.P.abc"},
            "properties": {"value": "20.50", "currency": "usd", "content_type": "product",
                           "contents": [{"content_id": "sku1", "price": 10.25, "quantity": 2}]}
        }));
        assert_eq!(
            out["user"]["email"],
            "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"
        );
        assert_eq!(
            out["user"]["phone"],
            "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"
        );
        assert_eq!(out["user"]["ttclid"], "E.C.P.abc");
        assert_eq!(out["user"]["ip"], "203.0.113.1");
        assert_eq!(out["properties"]["value"], 20.5);
        assert_eq!(out["properties"]["currency"], "USD");
        assert_eq!(out["properties"]["contents"][0]["quantity"], 2);
        assert!(!out.to_string().contains("alice"), "no raw PII: {out}");
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = || json!({"event": "AddToCart", "event_id": "e1"});
        let with = |k: &str, v: Value| {
            let mut e = base();
            e[k] = v;
            e
        };
        let cases = [
            (json!([]), "event"),
            (json!({"event_id": "e"}), "event"),
            (json!({"event": "AddToCart"}), "event_id"),
            (
                with("event_time", json!(1_700_000_000_000i64)),
                "event_time",
            ),
            (with("event_time", json!(1_700_001_000)), "event_time"),
            (with("event_time", json!(1_600_000_000)), "event_time"),
            (with("event_time", json!("yesterday")), "event_time"),
            (with("user", json!({"email": "nope"})), "user.email"),
            (
                with("user", json!({"email": ["a@example.com", "nope"]})),
                "user.email[1]",
            ),
            (
                with("user", json!({"phone": ["+12133734253", 5]})),
                "user.phone[1]",
            ),
            (
                with("page", json!({"url": "javascript:alert(1)"})),
                "page.url",
            ),
            (
                with("properties", json!({"value": 5})),
                "properties.currency",
            ),
            (
                with("properties", json!({"value": "$5", "currency": "USD"})),
                "properties.value",
            ),
            (
                with("properties", json!({"currency": "XXX"})),
                "properties.currency",
            ),
            (
                with("properties", json!({"contents": [{"price": -1}]})),
                "properties.contents[0].price",
            ),
            (
                with("properties", json!({"contents": [{"quantity": 1.5}]})),
                "properties.contents[0].quantity",
            ),
            (with("event", json!("<script>")), "event"),
            (
                with("properties", json!({"order_id": ["o1"]})),
                "properties.order_id",
            ),
            (
                with(
                    "properties",
                    json!({"contents": [{"content_id": "a"}, {"content_id": {"id": "b"}}]}),
                ),
                "properties.contents[1].content_id",
            ),
        ];
        for (event, field) in cases {
            assert_eq!(refused(event.clone()).field, field, "{event}");
        }
    }

    #[test]
    fn server_side_events_carry_the_shoppers_ip_but_browsers_cannot_spoof_it() {
        let e = json!({"event": "Lead", "event_id": "e", "user": {"ip": "198.51.100.7", "user_agent": "UA"}});
        let server = Context {
            now: 1_700_000_000,
            ..Context::default()
        };
        let out = prepared(&e, &Rules::default(), &server);
        assert_eq!(
            (
                out["user"]["ip"].as_str(),
                out["user"]["user_agent"].as_str()
            ),
            (Some("198.51.100.7"), Some("UA"))
        );
        assert_eq!(ok(e)["user"]["ip"], "203.0.113.1");
        let bad = json!({"event": "Lead", "event_id": "e", "user": {"ip": "not-an-ip"}});
        assert_eq!(
            prepare(&bad, &Rules::default(), &server).unwrap_err().field,
            "user.ip"
        );
        let bad = json!({"event": "Lead", "event_id": "e", "user": {"user_agent": {"name": "UA"}}});
        assert_eq!(
            prepare(&bad, &Rules::default(), &server).unwrap_err().field,
            "user.user_agent"
        );
    }

    #[test]
    fn custom_events_follow_the_pixels_rule() {
        let e = json!({"event": "Quiz Finished", "event_id": "e"});
        assert!(prepare(&e, &Rules::default(), &ctx()).is_ok());
        let strict = Rules {
            allow_custom_events: false,
            ..Rules::default()
        };
        assert_eq!(prepare(&e, &strict, &ctx()).unwrap_err().field, "event");
    }

    #[test]
    fn national_phones_use_the_pixels_country() {
        let rules = Rules {
            default_country: Some("GB".into()),
            ..Rules::default()
        };
        let e = json!({"event": "Lead", "event_id": "e", "user": {"phone": "07700 900123"}});
        let out = prepared(&e, &rules, &ctx());
        assert_eq!(
            out["user"]["phone"],
            crate::platform::crypto::sha256_hex(b"+447700900123")
        );
    }
}
