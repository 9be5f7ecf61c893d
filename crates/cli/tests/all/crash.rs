//! Crash safety of the pixel collector: `kill -9` the host while it acknowledges a stream
//! of events, start it again on the same data dir, and every acknowledged event reaches
//! TikTok (here tiktok-mock, outside the killed process) once by event_id.

use crate::{BIN, workspace};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tiktok_mock::{MockConfig, MockServer};

const ADMIN: &str = "crash-test-admin";
const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Starts `up` on the repository's manifest (and its runtime config: the pixel flush runs
/// every second); returns the child and its address.
fn up(data: &Path, mock: &str) -> (Child, String) {
    let config = MockConfig::default();
    let mut child = Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .current_dir(workspace())
        .env("SPIN_VARIABLE_TIKTOK_API_BASE_URL", mock)
        .env("SPIN_VARIABLE_TIKTOK_APP_ID", &config.app_id)
        .env("SPIN_VARIABLE_TIKTOK_APP_SECRET", &config.app_secret)
        .env("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN)
        .env("SPIN_VARIABLE_TOKEN_ENCRYPTION_KEYS", KEYS)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(120));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("Ready") {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// `GET url` as the admin, the answer's JSON body.
async fn admin_get(http: &reqwest::Client, url: String) -> Value {
    http.get(url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Four senders call `send(client, sender, n)` for n = 0, 1, … as fast as the host answers,
/// keeping the ids it returns (what the host acknowledged); after 1.5 s the host gets
/// SIGKILL mid-stream. Returns the acknowledged ids.
async fn send_until_killed<F, Fut>(child: &mut Child, send: F) -> HashSet<String>
where
    F: Fn(reqwest::Client, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Option<String>, reqwest::Error>> + Send,
{
    let http = reqwest::Client::new();
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (http, acked, stop, send) = (http.clone(), acked.clone(), stop.clone(), send.clone());
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match send(http.clone(), sender, n).await {
                    Ok(Some(id)) => {
                        acked.lock().unwrap().insert(id);
                    }
                    Ok(None) => {}
                    // The host is gone (or answered garbage while dying).
                    Err(_) => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    acked.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_and_arrive_once() {
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = up(data.path(), &mock.url());
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    assert!(
        admin(reqwest::Method::POST, "/v1/orgs", json!({"id": "acme"}))
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let demo = mock.mock.demo_pixel();
    let token = mock
        .mock
        .token_for(std::slice::from_ref(&demo.advertiser_id));
    let pixel: Value = admin(
        reqwest::Method::POST,
        "/v1/orgs/acme/pixels",
        json!({"pixel_code": demo.code, "access_token": token, "allowed_origins": ["https://shop.example"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let pixel = pixel["id"].as_str().unwrap().to_string();

    // Four senders post events as fast as they are acknowledged; the host dies mid-stream.
    let url = format!("{base}/pixel/events?pixel={pixel}");
    let acked = send_until_killed(&mut child, move |http, sender, n| {
        let url = url.clone();
        async move {
            let id = format!("s{sender}-{n}");
            let response = http
                .post(&url)
                .body(json!({"event": "ViewContent", "event_id": id}).to_string())
                .send()
                .await?;
            let v: Value = response.json().await?;
            Ok((v["accepted"] == 1).then_some(id))
        }
    })
    .await;
    assert!(
        acked.len() > 20,
        "only {} events were acknowledged before the kill",
        acked.len()
    );

    let (mut child, _) = up(data.path(), &mock.url());
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(60);
    let missing = loop {
        let delivered: HashSet<String> = mock.mock.with_state(|s| {
            s.events
                .iter()
                .filter(|e| !e.duplicate)
                .filter_map(|e| e.event_id.clone())
                .collect()
        });
        let missing: Vec<&String> = acked.iter().filter(|id| !delivered.contains(*id)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing.len();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let caught_up = restarted.elapsed();
    let (counted, resent) = mock.mock.with_state(|s| {
        let ours = s
            .events
            .iter()
            .filter(|e| e.event_id.as_ref().is_some_and(|id| acked.contains(id)));
        let counted = ours.clone().filter(|e| !e.duplicate).count();
        (counted, ours.filter(|e| e.duplicate).count())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged events never reached TikTok",
        acked.len()
    );
    assert_eq!(
        counted,
        acked.len(),
        "each acknowledged event counted once at TikTok"
    );
    println!(
        "{} acknowledged before kill -9; all delivered {:.1} s after the restart; {resent} re-sent \
         copies deduplicated by TikTok",
        acked.len(),
        caught_up.as_secs_f64()
    );
}

/// A creator connection of `org` made through the mock's consent page; returns its open_id.
async fn creator_connection(http: &reqwest::Client, base: &str, org: &str) -> String {
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started: Value = http
        .post(format!("{base}/v1/orgs/{org}/connections/start"))
        .bearer_auth(ADMIN)
        .json(&json!({"kind": "creator"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let consent = format!(
        "{}&auto_approve=1",
        started["authorization_url"].as_str().unwrap()
    );
    let to_callback = no_redirects.get(consent).send().await.unwrap();
    let callback = to_callback.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let done = no_redirects.get(callback).send().await.unwrap();
    assert_eq!(done.status(), 200);
    let list = admin_get(http, format!("{base}/v1/orgs/{org}/connections")).await;
    list["connections"][0]["open_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Webhooks: `kill -9` while deliveries are being acknowledged and processed; after the
/// restart every acknowledged delivery is processed, and listed for the organization it
/// concerns exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_webhooks_survive_kill_9_and_are_processed_once() {
    let config = MockConfig::default();
    let mock = MockServer::start(config.clone()).await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (mut child, addr) = up(data.path(), &mock.url());
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let created = http
        .post(format!("{base}/v1/orgs"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "acme"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let open_id = creator_connection(&http, &base, "acme").await;

    let url = format!("{base}/webhooks/tiktok/{}", config.app_id);
    let (client_key, secret) = (config.app_id.clone(), config.app_secret.clone());
    let acked = send_until_killed(&mut child, move |http, sender, n| {
        let (url, client_key, secret, open_id) = (
            url.clone(),
            client_key.clone(),
            secret.clone(),
            open_id.clone(),
        );
        async move {
            let now = unix_now();
            let body = tiktok_mock::webhooks::delivery_body(
                &client_key,
                "video.publish.completed",
                now,
                &open_id,
                &json!({"share_id": format!("video.s{sender}-{n}")}),
            );
            let signature = tiktok_mock::webhooks::signature_header(&secret, now, &body);
            let response = http
                .post(&url)
                .header("tiktok-signature", signature)
                .body(body)
                .send()
                .await?;
            let v: Value = response.json().await?;
            Ok((v["duplicate"] == false).then(|| v["id"].as_str().unwrap_or("").to_string()))
        }
    })
    .await;
    let killed_at = unix_now();
    assert!(
        acked.len() > 20,
        "only {} deliveries were acknowledged",
        acked.len()
    );

    let (mut child, addr) = up(data.path(), &mock.url());
    let base = format!("http://{addr}");
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(60);
    let listed = loop {
        let mut ids = Vec::new();
        let mut cursor: Option<u64> = None;
        loop {
            let page = admin_get(
                &http,
                format!(
                    "{base}/v1/orgs/acme/webhooks/deliveries?limit=200{}",
                    cursor.map_or(String::new(), |c| format!("&cursor={c}"))
                ),
            )
            .await;
            for d in page["deliveries"].as_array().unwrap() {
                ids.push((
                    d["id"].as_str().unwrap().to_string(),
                    d["processed_at"].as_i64().unwrap_or(0),
                ));
            }
            match page["next_cursor"].as_u64() {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let done = acked.iter().all(|id| ids.iter().any(|(i, _)| i == id));
        if done || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let caught_up = restarted.elapsed();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !listed.iter().any(|(i, _)| i == *id))
        .collect();
    // What the app's own record says about each missing one (stored? its log slot, status).
    let mut records = Vec::new();
    for id in &missing {
        let record = admin_get(
            &http,
            format!("{base}/webhooks/apps/{}/deliveries/{id}", config.app_id),
        )
        .await;
        records.push(json!({
            "id": id,
            "seq": record["seq"],
            "status": record["status"],
            "attempts": record["attempts"],
            "error": record["error"],
            "received_at": record["received_at"],
        }));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        missing.len(),
        0,
        "{} of {} acknowledged deliveries were never processed (killed at {killed_at}, {} \
         listed): {records:?}",
        missing.len(),
        acked.len(),
        listed.len()
    );
    let distinct: HashSet<&String> = listed.iter().map(|(i, _)| i).collect();
    assert_eq!(
        distinct.len(),
        listed.len(),
        "a delivery was listed (processed) twice"
    );
    let after_restart = listed.iter().filter(|(_, at)| *at >= killed_at).count();
    println!(
        "{} deliveries acknowledged before kill -9; {after_restart} processed after the restart, \
         all {:.1} s after it; each listed once",
        acked.len(),
        caught_up.as_secs_f64()
    );
}
