//! Test fixtures: an [`Env`] over memory, fixed variables and a scripted TikTok.

use crate::ApiError;
use crate::platform::env::{Config, Env};
use crate::platform::kv::{KeyValue, MemoryKv};
use crate::platform::outbound::OutgoingRequest;
use crate::tiktok::client::fake::{FakeTransport, err, ok};
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::HashMap;

pub struct MapConfig(pub HashMap<String, String>);

impl Config for MapConfig {
    fn get(&self, name: &str) -> Result<Option<String>, ApiError> {
        Ok(self.0.get(name).cloned())
    }
}

pub struct TestEnv {
    pub kv: MemoryKv,
    pub config: MapConfig,
    pub tiktok: FakeTransport,
    pub now: Cell<i64>,
}

/// A small TikTok: codes `good-*` exchange for a token covering advertisers 111 and 222;
/// token `revoked` is refused with 40105.
fn fake_tiktok(r: &OutgoingRequest) -> Value {
    let path = r.url.split("/open_api/v1.3").nth(1).unwrap_or("");
    let path = path.split('?').next().unwrap();
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let token = r
        .headers
        .iter()
        .find(|(n, _)| n == "access-token")
        .map(|(_, v)| v.as_str());
    match path {
        "/oauth2/access_token/" => match body["auth_code"].as_str() {
            Some(c) if c.starts_with("good") => ok(json!({
                "access_token": format!("act.{c}"), "advertiser_ids": ["111", 222], "scope": [4]
            })),
            _ => err(40110, "Auth code has been used, cancelled or has expired."),
        },
        _ if token == Some("act.revoked") => {
            err(40105, "Access token is incorrect or has been revoked.")
        }
        "/oauth2/advertiser/get/" => ok(json!({"list": [
            {"advertiser_id": "111", "advertiser_name": "One"},
            {"advertiser_id": "222", "advertiser_name": "Two"}
        ]})),
        "/advertiser/info/" => ok(json!({"list": [
            {"advertiser_id": "111", "name": "One", "currency": "USD", "timezone": "America/Los_Angeles"},
            {"advertiser_id": "222", "name": "Two", "currency": "JPY", "timezone": "Asia/Tokyo"}
        ]})),
        "/oauth2/revoke_token/" | "/tt_user/oauth2/revoke/" | "/event/track/" => ok(json!({})),
        "/tt_user/oauth2/token/" => ok(json!({
            "access_token": "cat.1", "refresh_token": "crt.1", "open_id": "open-1",
            "scope": "user.info.basic,video.list", "expires_in": 86400, "refresh_token_expires_in": 31536000
        })),
        "/tt_user/oauth2/refresh_token/" => match body["refresh_token"].as_str() {
            Some("crt.expired") => err(40103, "Refresh token has expired."),
            _ => ok(json!({
                "access_token": "cat.2", "refresh_token": "crt.2", "open_id": "open-1",
                "expires_in": 86400, "refresh_token_expires_in": 31536000
            })),
        },
        other => err(40008, &format!("fake TikTok has no {other}")),
    }
}

impl TestEnv {
    pub const ADMIN: &'static str = "admin-secret-token";
    pub const KEYS: &'static str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    pub fn new() -> Self {
        let config = [
            ("admin_token", Self::ADMIN),
            ("token_encryption_keys", Self::KEYS),
            ("tiktok_api_base_url", "http://tiktok.test"),
            ("tiktok_app_id", "app-1"),
            ("tiktok_app_secret", "app-secret"),
            ("public_url", "https://edge.example.com"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        TestEnv {
            kv: MemoryKv::new(),
            config: MapConfig(config),
            tiktok: FakeTransport::with(fake_tiktok),
            now: Cell::new(1_700_000_000),
        }
    }

    pub fn env(&self) -> Env<'_> {
        Env {
            kv: &self.kv,
            config: &self.config,
            transport: &self.tiktok,
            now: self.now.get(),
        }
    }

    /// Queues TikTok answers that take precedence over the fake's own.
    pub fn script(&self, answers: Vec<Value>) {
        self.tiktok
            .answers
            .borrow_mut()
            .extend(answers.into_iter().map(|v| {
                Ok(crate::platform::outbound::IncomingResponse {
                    status: 200,
                    body: serde_json::to_vec(&v).unwrap(),
                })
            }));
    }
}

/// Memory that refuses writes (a full disk) to keys containing `fail_on` when it is set.
/// Batch writes go key by key, so a batch whose first key is refused stores nothing.
#[derive(Default)]
pub struct FlakyKv {
    pub inner: MemoryKv,
    pub fail_on: std::cell::RefCell<Option<String>>,
}

impl FlakyKv {
    /// Refuses writes to keys containing `part` from now on.
    pub fn fail_on(&self, part: &str) {
        *self.fail_on.borrow_mut() = Some(part.to_string());
    }
}

impl KeyValue for FlakyKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        match &*self.fail_on.borrow() {
            Some(p) if key.contains(p.as_str()) => Err(ApiError::Storage("disk full".into())),
            _ => self.inner.set(key, value),
        }
    }
    fn delete(&self, key: &str) -> Result<(), ApiError> {
        self.inner.delete(key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, ApiError> {
        self.inner.increment(key, delta)
    }
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, ApiError> {
        self.inner.compare_and_swap(key, expected, new)
    }
}
