//! The repository's spin.toml served by tiktok-edge against an in-process tiktok-mock,
//! with an admin token and vault key set, and a client that does not follow redirects.

#![allow(dead_code)]

use super::{Running, start};
use serde_json::{Value, json};
use tiktok_mock::{MockConfig, MockServer};

pub const ADMIN: &str = "test-admin-token";
pub const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

pub struct World {
    pub edge: Running,
    pub mock: MockServer,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// The repository's manifest, with component sources pointing at the built .wasm files.
fn repository_manifest() -> String {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../spin.toml")).unwrap();
    text.replace(
        "source = \"target/components/wasm32-wasip2/component/",
        "source = \"{COMPONENTS}/",
    )
}

pub async fn world() -> World {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let config = MockConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let url = mock.url();
    let edge = start(dir.path(), &repository_manifest(), |o| {
        // The repository's per-component settings (campaign-ops streams its bodies);
        // its schedules are left out so tests decide when tasks run.
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime-config.toml");
        o.runtime_config.component =
            tiktok_edge_runtime::runtime_config::RuntimeConfig::load(shipped.as_ref())
                .unwrap()
                .component;
        for (k, v) in [
            ("tiktok_api_base_url", url.as_str()),
            ("tiktok_app_id", config.app_id.as_str()),
            ("tiktok_app_secret", config.app_secret.as_str()),
            ("admin_token", ADMIN),
            ("token_encryption_keys", KEYS),
        ] {
            o.variables.insert(k.into(), v.into());
        }
    })
    .await
    .unwrap();
    World {
        edge,
        mock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        dir,
    }
}

impl World {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method.parse().unwrap(), self.edge.url(path))
            .bearer_auth(key);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates `org` (return URLs under http://localhost:8080/done) and one API key.
    pub async fn org(&self, org: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/v1/orgs",
                ADMIN,
                Some(json!({"id": org, "allowed_return_urls": ["http://localhost:8080/done"]})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/orgs/{org}/keys"),
                ADMIN,
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["key"].as_str().unwrap().to_string()
    }

    /// Starts a flow and lets the mock's consent page decide; returns our callback's answer.
    pub async fn authorize(
        &self,
        org: &str,
        key: &str,
        start: Value,
        decision: &str,
    ) -> reqwest::Response {
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/orgs/{org}/connections/start"),
                key,
                Some(start),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let consent = format!("{}&{decision}=1", v["authorization_url"].as_str().unwrap());
        let to_callback = self.http.get(consent).send().await.unwrap();
        assert_eq!(to_callback.status(), 302);
        let callback = to_callback.headers()["location"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            callback.starts_with(&self.edge.url("/oauth/callback?")),
            "{callback}"
        );
        self.http.get(callback).send().await.unwrap()
    }

    /// Queues a fault in the mock (`POST /_mock/inject`).
    pub async fn inject(&self, fault: Value) {
        let r = self
            .http
            .post(format!("{}/_mock/inject", self.mock.url()))
            .json(&fault)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{fault}");
    }

    pub fn mock_paths(&self) -> Vec<String> {
        self.mock
            .mock
            .with_state(|s| s.requests.iter().map(|r| r.path.clone()).collect())
    }
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}
