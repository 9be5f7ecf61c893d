//! pixel.js in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs), driven over the WebDriver protocol,
//! loads a shop page that embeds the snippet. The page view and an AddToCart reach the
//! mock hashed, with the click id kept in a first-party cookie and the exposed event ids.

use crate::common::world::{World, world};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tiktok_edge_runtime::scheduler::{self, Schedule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A ChromeDriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (Debian packages chromium and chromium-driver; .ci/run installs them)");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{url}/status")).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

/// The few WebDriver commands the test needs.
struct Browser {
    http: reqwest::Client,
    session: String,
}

impl Browser {
    async fn open(driver: &Driver, profile: &std::path::Path) -> Self {
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.display())]
        }}}});
        let v: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            http,
            session: format!("{}/session/{session}", driver.url),
        }
    }

    async fn go(&self, url: &str) {
        let v: Value = self
            .http
            .post(format!("{}/url", self.session))
            .json(&json!({"url": url}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(v["value"].is_null(), "navigation failed: {v}");
    }

    async fn eval(&self, script: &str) -> Value {
        let v: Value = self
            .http
            .post(format!("{}/execute/sync", self.session))
            .json(&json!({"script": script, "args": []}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].clone()
    }

    async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

/// A shop on its own origin: every path serves a page with the snippet; `/cart` also
/// identifies the shopper and tracks an AddToCart with a chosen event id.
async fn shop(edge: String, pixel: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let (edge, pixel) = (edge.clone(), pixel.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                let cart = request.starts_with("GET /cart");
                let extra = if cart {
                    "edge('identify',{email:' Browser.Shopper@Example.com ',phone:'+1 (213) 373-4253'});\
                     edge('track','AddToCart',{value:12.5,currency:'USD',contents:[{content_id:'sku-9',quantity:1}]},{event_id:'atc-browser-1'});"
                } else {
                    ""
                };
                let page = format!(
                    "<!doctype html><html><head><title>shop</title>\
                     <script>window.edge=window.edge||function(){{(edge.q=edge.q||[]).push(arguments)}};{extra}</script>\
                     <script async src=\"{edge}/pixel.js?pixel={pixel}\"></script></head><body>shop</body></html>"
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    origin
}

async fn flush(w: &World) {
    let schedule = Schedule {
        name: "flush".into(),
        path: "/pixel/flush".into(),
        method: "POST".into(),
        every_secs: 1,
        headers: [(
            "authorization".to_string(),
            "Bearer {{ admin_token }}".to_string(),
        )]
        .into(),
    };
    scheduler::run_once(&w.edge.app, &schedule).await.unwrap();
}

/// Waits until the mock holds `n` events, flushing as the host's scheduler would.
async fn mock_events(w: &World, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        flush(w).await;
        let events: Vec<Value> = w
            .mock
            .mock
            .with_state(|s| s.events.iter().map(|e| e.body.clone()).collect());
        if events.len() >= n || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn the_snippet_in_chromium_sends_hashed_events_with_cookie_kept_click_id() {
    let w = world().await;
    let key = w.org("acme").await;
    let demo = w.mock.mock.demo_pixel();
    let token = w
        .mock
        .mock
        .token_for(std::slice::from_ref(&demo.advertiser_id));
    // The shop's origin is known only once it listens; allow it on the pixel after.
    let (_, v) = w
        .call(
            "POST",
            "/v1/orgs/acme/pixels",
            &key,
            Some(json!({"pixel_code": demo.code, "access_token": token})),
        )
        .await;
    let pixel = v["id"].as_str().unwrap().to_string();
    let edge = w.edge.url("");
    let origin = shop(edge.trim_end_matches('/').to_string(), pixel.clone()).await;
    let (s, v) = w
        .call(
            "PATCH",
            &format!("/v1/orgs/acme/pixels/{pixel}"),
            &key,
            Some(json!({"allowed_origins": [origin]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let driver = chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = Browser::open(&driver, profile.path()).await;
    // Landing from a TikTok ad: ttclid in the URL, an automatic page view.
    browser
        .go(&format!("{origin}/landing?ttclid=E.C.P.browser-click"))
        .await;
    let page_view_id = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let id = browser
                .eval("return window.edge && window.edge.lastEventId || null")
                .await;
            if id.is_string() || Instant::now() > deadline {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let cookie = browser.eval("return document.cookie").await;
    assert!(
        cookie
            .as_str()
            .unwrap()
            .contains("ttclid=E.C.P.browser-click"),
        "{cookie}"
    );
    // A later page without ttclid: the cookie carries it.
    browser.go(&format!("{origin}/cart")).await;
    let events = mock_events(&w, 3).await;
    browser.close().await;

    let page_view = events
        .iter()
        .find(|e| e["event_id"] == page_view_id)
        .unwrap_or_else(|| panic!("page view {page_view_id} missing: {events:?}"));
    assert_eq!(page_view["event"], "PageView");
    assert_eq!(page_view["user"]["ttclid"], "E.C.P.browser-click");
    let cart = events
        .iter()
        .find(|e| e["event"] == "AddToCart")
        .unwrap_or_else(|| panic!("no AddToCart: {events:?}"));
    assert_eq!(cart["event_id"], "atc-browser-1");
    assert_eq!(
        cart["user"]["ttclid"], "E.C.P.browser-click",
        "kept in the first-party cookie"
    );
    assert_eq!(cart["user"]["email"], sha256("browser.shopper@example.com"));
    assert_eq!(cart["user"]["phone"], sha256("+12133734253"));
    assert!(
        cart["user"]["user_agent"]
            .as_str()
            .unwrap()
            .contains("Chrome")
    );
    assert_eq!(cart["page"]["url"], format!("{origin}/cart"));
    assert_eq!(cart["properties"]["value"], 12.5);
    let all = serde_json::to_string(&events).unwrap().to_lowercase();
    assert!(
        !all.contains("browser.shopper") && !all.contains("373-4253"),
        "no raw PII at TikTok"
    );
}
