//! Everything the mock remembers, behind one lock; rebuilt from the seed on reset.
//!
//! The records it holds are defined in `model`; this module owns the container, the
//! seeded id generator, the clock and the rate-limit buckets. It depends on `model` and
//! the leaf helpers `request`/`envelope` only, never on the API-area modules.

use crate::envelope::Reply;
use crate::model::{
    Advertiser, AuthCode, CreatorToken, EventKey, Fault, LoggedRequest, Pixel, StoredEvent, Token,
};
use crate::model::{Audience, AudienceFile, Catalog, Entity, FeedLog, Identity, PostCode, Video};
use crate::request::Params;
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
    pub entities: Vec<Entity>,
    pub post_codes: Vec<PostCode>,
    pub identities: Vec<Identity>,
    pub catalogs: Vec<Catalog>,
    pub feed_logs: Vec<FeedLog>,
    pub videos: Vec<Video>,
    pub audience_files: Vec<AudienceFile>,
    pub audiences: Vec<Audience>,
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
        p: &Params,
        create: impl FnOnce(&mut State) -> Result<Value, Reply>,
    ) -> Result<Reply, Reply> {
        let request_id = p.str("request_id")?;
        if let Some(id) = &request_id
            && self
                .create_request_ids
                .contains_key(&(advertiser_id.to_string(), id.clone()))
        {
            return Err(Reply::error(
                40050,
                format!("Duplicated request: request_id {id} was already used."),
            ));
        }
        let data = create(self)?;
        if let Some(id) = request_id {
            self.create_request_ids
                .insert((advertiser_id.to_string(), id), data.clone());
        }
        Ok(Reply::ok(data))
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
