//! An organization's pixels: where its websites' events go (TikTok's pixel code), who
//! may send them (allowed origins), how they are checked, and the Events API token.
//!
//! Storage: the record at `org/{org}/pixels/{id}`, the list at `org/{org}/pixels`, the
//! sealed token at `org/{org}/pixels/{id}/token`, and `pixel/{id}` → org, because the
//! public collection endpoint is addressed by pixel id alone.

use crate::ApiError;
use crate::pixel::event::Rules;
use crate::platform::crypto::random_bytes;
use crate::platform::env::Env;
use crate::platform::kv::{IdIndex, get_json, set_json, update_json};
use crate::tenancy::org_id::OrgId;
use crate::tenancy::vault;
use serde::{Deserialize, Serialize};

/// Most events one request may carry (TikTok's own limit per call, §3.4).
pub const MAX_BATCH: usize = 1000;
/// Where every pixel id is listed (for the forwarder).
pub const ALL_PIXELS: &str = "pixels";

/// When events may be sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentMode {
    /// Send at once.
    #[default]
    None,
    /// pixel.js holds events until the site calls `edge('consent', true)`.
    OptIn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pixel {
    pub id: String,
    pub org: String,
    pub name: String,
    /// TikTok's pixel code (`event_source_id`).
    pub pixel_code: String,
    /// Browser origins allowed to send events, e.g. `https://shop.example`.
    pub allowed_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_event_code: Option<String>,
    #[serde(default)]
    pub consent_mode: ConsentMode,
    /// ISO country for phone numbers without a country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_country: Option<String>,
    #[serde(default = "yes")]
    pub allow_custom_events: bool,
    /// Largest batch accepted on `POST /pixel/events` (≤ 1,000).
    #[serde(default = "max_batch")]
    pub max_batch: usize,
    /// Oldest `event_time` accepted, in days.
    #[serde(default = "window_days")]
    pub event_window_days: u32,
    /// Send with the token of this connected advertiser when no token of its own is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertiser_id: Option<String>,
    /// Whether an Events API token is stored (the token itself is never returned).
    #[serde(default)]
    pub has_access_token: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

fn yes() -> bool {
    true
}
fn max_batch() -> usize {
    MAX_BATCH
}
fn window_days() -> u32 {
    7
}

impl Pixel {
    pub fn rules(&self) -> Rules {
        Rules {
            default_country: self.default_country.clone(),
            allow_custom_events: self.allow_custom_events,
            max_age_secs: i64::from(self.event_window_days) * 86400,
            max_future_secs: 300,
        }
    }

    /// Whether a browser at `origin` may send events.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
    }
}

/// Body of create (all fields) and update (any of them).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelInput {
    pub name: Option<String>,
    pub pixel_code: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, with = "double_option")]
    pub test_event_code: Option<Option<String>>,
    pub consent_mode: Option<ConsentMode>,
    #[serde(default, with = "double_option")]
    pub default_country: Option<Option<String>>,
    pub allow_custom_events: Option<bool>,
    pub max_batch: Option<usize>,
    pub event_window_days: Option<u32>,
    #[serde(default, with = "double_option")]
    pub advertiser_id: Option<Option<String>>,
    /// The Events API access token; stored encrypted, never returned.
    #[serde(default, with = "double_option")]
    pub access_token: Option<Option<String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

fn record_key(org: &OrgId, id: &str) -> String {
    format!("{}pixels/{id}", org.key_prefix())
}

fn token_key(org: &OrgId, id: &str) -> String {
    format!("{}pixels/{id}/token", org.key_prefix())
}

fn owner_key(id: &str) -> String {
    format!("pixel/{id}")
}

/// A pixel id looks like `px_` and 16 hex digits; anything else is not one of ours.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    let ok =
        id.len() == 19 && id.starts_with("px_") && id[3..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("pixel {id} does not exist")))
    }
}

fn check_origin(i: usize, origin: &str) -> Result<String, ApiError> {
    let field = format!("allowed_origins[{i}]");
    let url = url::Url::parse(origin)
        .map_err(|_| ApiError::invalid(&field, "must be an origin like https://shop.example"))?;
    let origin_only = url.origin().ascii_serialization();
    if !matches!(url.scheme(), "http" | "https") || origin_only != origin.trim_end_matches('/') {
        return Err(ApiError::invalid(
            field,
            "must be an origin like https://shop.example (scheme, host, optional port; no path)",
        ));
    }
    Ok(origin_only)
}

fn apply(p: &mut Pixel, input: &PixelInput) -> Result<(), ApiError> {
    if let Some(name) = &input.name {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(ApiError::invalid("name", "must be 1-200 characters"));
        }
        p.name = name.to_string();
    }
    if let Some(code) = &input.pixel_code {
        let code = code.trim();
        if code.is_empty() || code.len() > 64 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiError::invalid(
                "pixel_code",
                "must be TikTok's pixel code (letters and digits)",
            ));
        }
        p.pixel_code = code.to_string();
    }
    if let Some(origins) = &input.allowed_origins {
        if origins.len() > 50 {
            return Err(ApiError::invalid("allowed_origins", "at most 50 origins"));
        }
        p.allowed_origins = origins
            .iter()
            .enumerate()
            .map(|(i, o)| check_origin(i, o))
            .collect::<Result<_, _>>()?;
    }
    if let Some(code) = &input.test_event_code {
        if code.as_ref().is_some_and(|c| c.is_empty() || c.len() > 64) {
            return Err(ApiError::invalid(
                "test_event_code",
                "must be 1-64 characters",
            ));
        }
        p.test_event_code = code.clone();
    }
    if let Some(mode) = input.consent_mode {
        p.consent_mode = mode;
    }
    if let Some(country) = &input.default_country {
        if let Some(c) = country
            && crate::tiktok::pii::calling_code(c).is_none()
        {
            return Err(ApiError::invalid(
                "default_country",
                "must be an ISO 3166 country code such as US or GB",
            ));
        }
        p.default_country = country.as_ref().map(|c| c.to_ascii_uppercase());
    }
    if let Some(allow) = input.allow_custom_events {
        p.allow_custom_events = allow;
    }
    if let Some(n) = input.max_batch {
        if !(1..=MAX_BATCH).contains(&n) {
            return Err(ApiError::invalid("max_batch", "must be between 1 and 1000"));
        }
        p.max_batch = n;
    }
    if let Some(days) = input.event_window_days {
        if !(1..=90).contains(&days) {
            return Err(ApiError::invalid(
                "event_window_days",
                "must be between 1 and 90",
            ));
        }
        p.event_window_days = days;
    }
    if let Some(advertiser) = &input.advertiser_id {
        if advertiser
            .as_ref()
            .is_some_and(|a| a.is_empty() || a.len() > 32 || !a.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ApiError::invalid(
                "advertiser_id",
                "must be TikTok's numeric advertiser id",
            ));
        }
        p.advertiser_id = advertiser.clone();
    }
    Ok(())
}

pub fn create(env: &Env, org: &OrgId, input: PixelInput) -> Result<Pixel, ApiError> {
    let id = format!("px_{}", hex::encode(random_bytes::<8>()?));
    let mut pixel = Pixel {
        id: id.clone(),
        org: org.to_string(),
        name: String::new(),
        pixel_code: String::new(),
        allowed_origins: Vec::new(),
        test_event_code: None,
        consent_mode: ConsentMode::None,
        default_country: None,
        allow_custom_events: true,
        max_batch: MAX_BATCH,
        event_window_days: 7,
        advertiser_id: None,
        has_access_token: false,
        created_at: env.now,
        updated_at: env.now,
    };
    if input.pixel_code.is_none() {
        return Err(ApiError::invalid("pixel_code", "is required"));
    }
    if input.name.is_none() {
        pixel.name = input.pixel_code.clone().unwrap_or_default();
    }
    apply(&mut pixel, &input)?;
    if let Some(Some(token)) = &input.access_token {
        store_token(env, org, &id, token)?;
        pixel.has_access_token = true;
    }
    env.kv.set(&owner_key(&id), org.as_str().as_bytes())?;
    set_json(env.kv, &record_key(org, &id), &pixel)?;
    IdIndex::new(env.kv, format!("{}pixels", org.key_prefix())).insert(&id)?;
    IdIndex::new(env.kv, ALL_PIXELS).insert(&id)?;
    Ok(pixel)
}

fn store_token(env: &Env, org: &OrgId, id: &str, token: &str) -> Result<(), ApiError> {
    if token.is_empty() || token.len() > 512 {
        return Err(ApiError::invalid(
            "access_token",
            "must be 1-512 characters",
        ));
    }
    vault::put_secret(
        env.kv,
        &env.keyring()?,
        &token_key(org, id),
        token.as_bytes(),
    )
}

pub fn update(env: &Env, org: &OrgId, id: &str, input: PixelInput) -> Result<Pixel, ApiError> {
    check_id(id)?;
    let mut probe = get(env, org, id)?;
    apply(&mut probe, &input)?;
    match &input.access_token {
        Some(Some(token)) => store_token(env, org, id, token)?,
        Some(None) => vault::delete_secret(env.kv, &token_key(org, id))?,
        None => {}
    }
    update_json(env.kv, &record_key(org, id), |current: Option<Pixel>| {
        let mut p =
            current.ok_or_else(|| ApiError::NotFound(format!("pixel {id} does not exist")))?;
        apply(&mut p, &input)?;
        if let Some(token) = &input.access_token {
            p.has_access_token = token.is_some();
        }
        p.updated_at = env.now;
        Ok((Some(p.clone()), p))
    })
}

pub fn get(env: &Env, org: &OrgId, id: &str) -> Result<Pixel, ApiError> {
    check_id(id)?;
    get_json(env.kv, &record_key(org, id))?
        .ok_or_else(|| ApiError::NotFound(format!("pixel {id} does not exist")))
}

/// A pixel by id alone (the public endpoint); 404 when unknown.
pub fn find(env: &Env, id: &str) -> Result<Pixel, ApiError> {
    check_id(id)?;
    let org = env
        .kv
        .get(&owner_key(id))?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|o| OrgId::parse(&o).ok())
        .ok_or_else(|| ApiError::NotFound(format!("pixel {id} does not exist")))?;
    get(env, &org, id)
}

pub fn list(env: &Env, org: &OrgId) -> Result<Vec<Pixel>, ApiError> {
    let mut out = Vec::new();
    for id in IdIndex::new(env.kv, format!("{}pixels", org.key_prefix())).list()? {
        if let Some(p) = get_json(env.kv, &record_key(org, &id))? {
            out.push(p);
        }
    }
    Ok(out)
}

/// The token events of this pixel are sent with: its own, else its advertiser connection's.
pub fn access_token(env: &Env, pixel: &Pixel) -> Result<String, ApiError> {
    let org = OrgId::parse(&pixel.org)?;
    if let Some(token) = vault::get_secret(env.kv, &env.keyring()?, &token_key(&org, &pixel.id))? {
        return String::from_utf8(token)
            .map_err(|_| ApiError::Storage("pixel token is unreadable".into()));
    }
    match &pixel.advertiser_id {
        Some(advertiser) => {
            crate::tenancy::advertiser_access::AdvertiserAccess::load(env, &org, advertiser)
                .map(|a| a.token().to_string())
        }
        None => Err(ApiError::Conflict(format!(
            "pixel {} has no access_token and no advertiser_id: TikTok cannot be called",
            pixel.id
        ))),
    }
}
