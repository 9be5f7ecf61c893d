//! Everything the mock remembers, behind one lock; rebuilt from the seed on reset.

use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How the mock is set up.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Seeds ids and synthetic data, so two runs with one seed agree.
    pub seed: u64,
    /// The developer app registered with the mock.
    pub app_id: String,
    pub app_secret: String,
    /// Requests per second per app and endpoint (TikTok's Basic tier: 10); `None` disables limiting.
    pub qps_per_endpoint: Option<f64>,
    /// Requests per second for the Events API endpoints (TikTok: 1,000 at every tier).
    pub events_qps: f64,
    /// Requests per second per advertiser and endpoint (code 40133); `None` disables it.
    pub qps_per_advertiser: Option<f64>,
    /// Smallest campaign daily budget (TikTok: $50) in the account currency.
    pub min_campaign_budget: f64,
    /// Smallest ad group daily budget (TikTok: $20); lifetime budgets need this per scheduled day.
    pub min_adgroup_budget: f64,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            seed: 1,
            app_id: "7300000000000000001".into(),
            app_secret: "sandbox-app-secret".into(),
            qps_per_endpoint: Some(10.0),
            events_qps: 1000.0,
            qps_per_advertiser: None,
            min_campaign_budget: 50.0,
            min_adgroup_budget: 20.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Advertiser {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub timezone: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pixel {
    pub id: String,
    /// What the Events API calls `event_source_id`: 20 uppercase letters and digits.
    pub code: String,
    pub name: String,
    pub advertiser_id: String,
}

impl Pixel {
    pub fn to_json(&self) -> Value {
        serde_json::json!({"pixel_id": self.id, "pixel_code": self.code, "pixel_name": self.name, "advertiser_id": self.advertiser_id, "activity_status": "ACTIVE"})
    }
}

/// An Events API event the mock received (duplicates are kept, flagged).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub source: String,
    pub source_id: String,
    pub event: String,
    pub event_id: Option<String>,
    pub test_event_code: Option<String>,
    /// Same (source id, event, event_id) as an event within the last 48 h: TikTok drops it.
    pub duplicate: bool,
    pub body: Value,
    pub received: Instant,
}

/// What TikTok deduplicates events on: (event_source_id, event, event_id).
pub type EventKey = (String, String, String);

impl StoredEvent {
    pub fn key(&self) -> Option<EventKey> {
        let id = self.event_id.clone()?;
        Some((self.source_id.clone(), self.event.clone(), id))
    }
}

#[derive(Debug, Clone)]
pub struct AuthCode {
    pub app_id: String,
    pub advertiser_ids: Vec<String>,
    pub issued: Instant,
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub app_id: String,
    pub advertiser_ids: Vec<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub struct CreatorToken {
    pub open_id: String,
    pub access_token: String,
    pub access_expires: Instant,
    pub refresh_expires: Instant,
}

/// A request the mock received, for `GET /_mock/requests`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub code: i64,
}

/// A scripted response for the next matching request (`POST /_mock/inject`).
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests whose path contains this (all when empty).
    pub path: String,
    pub kind: FaultKind,
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    /// HTTP 200 with this envelope code and message.
    Code { code: i64, message: String },
    /// An HTTP error with an HTML body, as a proxy in front of TikTok sends.
    Http { status: u16 },
    /// Only the delay; then the request is handled normally.
    DelayOnly,
}

pub const AUTH_CODE_TTL: Duration = Duration::from_secs(3600);
pub const CREATOR_ACCESS_TTL: Duration = Duration::from_secs(24 * 3600);
pub const CREATOR_REFRESH_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct State {
    pub config: MockConfig,
    rng: u64,
    /// Added to the real clock by `POST /_mock/clock`, to test expiry without waiting.
    pub clock_offset: Duration,
    pub advertisers: Vec<Advertiser>,
    pub pixels: Vec<Pixel>,
    pub entities: Vec<crate::campaigns::Entity>,
    pub post_codes: Vec<crate::creative::PostCode>,
    pub identities: Vec<crate::creative::Identity>,
    pub catalogs: Vec<crate::catalog::Catalog>,
    pub feed_logs: Vec<crate::catalog::FeedLog>,
    pub videos: Vec<crate::files::Video>,
    pub audience_files: Vec<crate::files::AudienceFile>,
    pub audiences: Vec<crate::files::Audience>,
    pub events: Vec<StoredEvent>,
    /// The stored events by (source id, event, event_id): when the newest came, and how
    /// many are stored. Finding a duplicate by scanning `events` made each batch cost
    /// its size times every stored event: a drain of 650k events slowed to 300 events/s.
    pub event_index: HashMap<EventKey, (Instant, usize)>,
    pub auth_codes: HashMap<String, AuthCode>,
    pub tokens: HashMap<String, Token>,
    pub creator_codes: HashMap<String, (String, Instant, bool)>,
    pub creator_tokens: HashMap<String, CreatorToken>,
    pub requests: Vec<LoggedRequest>,
    pub faults: VecDeque<Fault>,
    pub buckets: HashMap<(String, String), (f64, Instant)>,
    /// Idempotency of creates: `request_id` values seen per advertiser.
    pub create_request_ids: HashMap<(String, String), Value>,
}

/// Most requests kept for `/_mock/requests`; older ones are dropped.
pub const MAX_LOGGED_REQUESTS: usize = 10_000;

impl State {
    pub fn new(config: MockConfig) -> Self {
        let mut state = State {
            rng: config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            config,
            clock_offset: Duration::ZERO,
            advertisers: Vec::new(),
            pixels: Vec::new(),
            entities: Vec::new(),
            post_codes: Vec::new(),
            identities: Vec::new(),
            catalogs: Vec::new(),
            feed_logs: Vec::new(),
            videos: Vec::new(),
            audience_files: Vec::new(),
            audiences: Vec::new(),
            events: Vec::new(),
            event_index: HashMap::new(),
            auth_codes: HashMap::new(),
            tokens: HashMap::new(),
            creator_codes: HashMap::new(),
            creator_tokens: HashMap::new(),
            requests: Vec::new(),
            faults: VecDeque::new(),
            buckets: HashMap::new(),
            create_request_ids: HashMap::new(),
        };
        let demo = state.add_advertiser("Demo Advertiser", "USD", "America/Los_Angeles");
        state.add_pixel(&demo.id, "Demo Pixel");
        state
    }

    pub fn now(&self) -> Instant {
        Instant::now() + self.clock_offset
    }

    /// Unix seconds on the mock's clock.
    pub fn unix_now(&self) -> i64 {
        let real = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (real + self.clock_offset).as_secs() as i64
    }

    /// The next pseudo-random number (xorshift64*): deterministic for a seed.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A 19-digit numeric id, as TikTok's 64-bit ids are (serialized as strings).
    pub fn new_id(&mut self) -> String {
        format!("7{:018}", self.next_u64() % 1_000_000_000_000_000_000)
    }

    /// An opaque 40-hex-character secret (tokens, codes).
    pub fn new_secret(&mut self) -> String {
        format!(
            "{:016x}{:016x}{:08x}",
            self.next_u64(),
            self.next_u64(),
            self.next_u64() as u32
        )
    }

    pub fn add_advertiser(&mut self, name: &str, currency: &str, timezone: &str) -> Advertiser {
        let advertiser = Advertiser {
            id: self.new_id(),
            name: name.into(),
            currency: currency.into(),
            timezone: timezone.into(),
        };
        self.advertisers.push(advertiser.clone());
        advertiser
    }

    pub fn add_pixel(&mut self, advertiser_id: &str, name: &str) -> Pixel {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let code: String = (0..20)
            .map(|_| ALPHABET[(self.next_u64() % 36) as usize] as char)
            .collect();
        let pixel = Pixel {
            id: self.new_id(),
            code,
            name: name.into(),
            advertiser_id: advertiser_id.into(),
        };
        self.pixels.push(pixel.clone());
        pixel
    }

    /// Runs a create once per `request_id` (per advertiser): a repeat is code 40050.
    pub fn idempotent(
        &mut self,
        advertiser_id: &str,
        p: &crate::request::Params,
        create: impl FnOnce(&mut State) -> Result<Value, crate::envelope::Reply>,
    ) -> Result<crate::envelope::Reply, crate::envelope::Reply> {
        let request_id = p.str("request_id")?;
        if let Some(id) = &request_id
            && self
                .create_request_ids
                .contains_key(&(advertiser_id.to_string(), id.clone()))
        {
            return Err(crate::envelope::Reply::error(
                40050,
                format!("Duplicated request: request_id {id} was already used."),
            ));
        }
        let data = create(self)?;
        if let Some(id) = request_id {
            self.create_request_ids
                .insert((advertiser_id.to_string(), id), data.clone());
        }
        Ok(crate::envelope::Reply::ok(data))
    }

    pub fn advertiser(&self, id: &str) -> Option<&Advertiser> {
        self.advertisers.iter().find(|a| a.id == id)
    }

    /// Takes one token from the bucket for `key`, refilled at `qps`; false when empty.
    pub fn take_token(&mut self, key: (String, String), qps: f64) -> bool {
        let now = Instant::now();
        let (tokens, last) = self.buckets.entry(key).or_insert((qps, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * qps).min(qps.max(1.0));
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn log(&mut self, request: LoggedRequest) {
        if self.requests.len() >= MAX_LOGGED_REQUESTS {
            self.requests.remove(0);
        }
        self.requests.push(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_for_a_seed_and_look_like_tiktoks() {
        let a = State::new(MockConfig::default());
        let b = State::new(MockConfig::default());
        assert_eq!(a.advertisers, b.advertisers);
        assert_eq!(a.advertisers[0].id.len(), 19);
        assert!(a.advertisers[0].id.bytes().all(|c| c.is_ascii_digit()));
        let c = State::new(MockConfig {
            seed: 2,
            ..MockConfig::default()
        });
        assert_ne!(a.advertisers[0].id, c.advertisers[0].id);
    }

    #[test]
    fn token_bucket_refuses_beyond_its_rate() {
        let mut s = State::new(MockConfig::default());
        let key = ("app".to_string(), "/x/".to_string());
        let granted = (0..15).filter(|_| s.take_token(key.clone(), 10.0)).count();
        assert_eq!(granted, 10);
    }
}
