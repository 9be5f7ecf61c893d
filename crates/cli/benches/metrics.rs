//! metrics-fetch throughput: a 90-day ad-level backfill of 1,000 ads (90,000 rows, 90
//! report pages) from an in-process tiktok-mock through tiktok-edge's `App` and the
//! metrics-fetch component, then the latency of 90-day aggregate queries.
//! `cargo bench -p tiktok-edge --bench metrics`
//!
//! The mock runs in the same process and computes its synthetic rows on demand, so the
//! rows/s figure includes TikTok's side too; the printed mock share says how much.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use tiktok_edge_runtime::{App, AppOptions};
use tiktok_mock::model::{Entity, Kind};
use tiktok_mock::{MockConfig, MockServer};

const ADMIN: &str = "bench-admin";
const KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

async fn send(app: &App, method: &str, path_and_query: &str, body: Value) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", "localhost")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Full::new(Bytes::from(if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        })))
        .unwrap();
    let r = app.handle(req, "127.0.0.1:1".parse().unwrap()).await;
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// 10 campaigns × 10 ad groups × 10 ads.
fn seed(mock: &MockServer, advertiser: &str) {
    mock.mock.with_state(|s| {
        for c in 0..10 {
            for g in 0..10 {
                for a in 0..10 {
                    let mut fields = Map::new();
                    fields.insert("advertiser_id".into(), json!(advertiser));
                    fields.insert("campaign_id".into(), json!(format!("1800000000{c:02}000")));
                    fields.insert(
                        "adgroup_id".into(),
                        json!(format!("1800000000{c:02}{g:02}0")),
                    );
                    fields.insert("ad_id".into(), json!(format!("1800000000{c:02}{g:02}{a}")));
                    fields.insert("operation_status".into(), json!("ENABLE"));
                    s.entities.push(Entity {
                        kind: Kind::Ad,
                        fields,
                    });
                }
            }
        }
    });
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "90-day ad-level backfill of 1,000 ads through tiktok-edge (metrics-fetch) from tiktok-mock:"
    );
    println!("  with TikTok's rate limit (the mock's 10 requests/s per endpoint):");
    runtime.block_on(run(MockConfig::default(), false));
    println!("  without a rate limit (what tiktok-edge itself sustains):");
    runtime.block_on(run(
        MockConfig {
            qps_per_endpoint: None,
            ..MockConfig::default()
        },
        true,
    ));
}

async fn run(config: MockConfig, queries: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockServer::start(config.clone()).await.unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    let manifest = std::fs::read_to_string(workspace.join("spin.toml"))
        .unwrap()
        .replace(
            "source = \"target/components/wasm32-wasip2/component/",
            &format!("source = \"{}/", tiktok_edge_components::DIR),
        );
    let manifest_path = dir.path().join("spin.toml");
    std::fs::write(&manifest_path, manifest).unwrap();
    let mut options = AppOptions::new(&manifest_path, dir.path().join("data"));
    let url = mock.url();
    for (k, v) in [
        ("admin_token", ADMIN),
        ("token_encryption_keys", KEYS),
        ("tiktok_api_base_url", url.as_str()),
        ("tiktok_app_id", config.app_id.as_str()),
        ("tiktok_app_secret", config.app_secret.as_str()),
        ("metrics_qps", "1000"),
        ("public_url", "http://localhost"),
    ] {
        options.variables.insert(k.into(), v.into());
    }
    let app = App::load(options).unwrap();
    send(&app, "POST", "/v1/orgs", json!({"id": "bench"})).await;

    // Connect the mock's demo advertiser through the consent page, as a browser would.
    let (_, started) = send(&app, "POST", "/v1/orgs/bench/connections/start", json!({})).await;
    let consent = format!(
        "{}&auto_approve=1",
        started["authorization_url"].as_str().unwrap()
    );
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let to_callback = browser.get(consent).send().await.unwrap();
    let callback = to_callback.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let path = &callback[callback.find("/oauth/callback").unwrap()..];
    let (status, _) = send(&app, "GET", path, Value::Null).await;
    assert_eq!(
        status, 200,
        "the OAuth callback connects the demo advertiser"
    );
    let advertiser = mock.mock.demo_advertiser().id;
    seed(&mock, &advertiser);

    // 90 local days ending 60 days ago (the demo advertiser is in Los Angeles).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let today = chrono::DateTime::from_timestamp(now, 0)
        .unwrap()
        .date_naive();
    let to = today - chrono::Days::new(60);
    let from = to - chrono::Days::new(89);
    let body = json!({"advertiser_id": advertiser, "levels": ["ad"], "from": from.to_string(), "to": to.to_string()});
    let started = Instant::now();
    let (status, report) = send(&app, "POST", "/v1/orgs/bench/metrics/sync", body).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{report}");
    let level = &report["levels"][0];
    assert_eq!(level["status"], "ok", "{report}");
    let rows = level["rows"].as_u64().unwrap();
    let requests = level["requests"].as_u64().unwrap();

    if !queries {
        println!(
            "    {rows} rows in {requests} report requests, {:.2} s: {:.0} rows/s ({:.1} requests/s)",
            elapsed.as_secs_f64(),
            rows as f64 / elapsed.as_secs_f64(),
            requests as f64 / elapsed.as_secs_f64()
        );
        return;
    }
    // The mock's share: the same pages asked of it directly.
    let token = mock.mock.token_for(std::slice::from_ref(&advertiser));
    let http = reqwest::Client::new();
    let mock_started = Instant::now();
    let mut window = from;
    while window <= to {
        let end = (window + chrono::Days::new(29)).min(to);
        for page in 1.. {
            let r: Value = http
                .get(format!("{url}/open_api/v1.3/report/integrated/get/"))
                .header("Access-Token", &token)
                .query(&[
                    ("advertiser_id", advertiser.as_str()),
                    ("report_type", "BASIC"),
                    ("data_level", "AUCTION_AD"),
                    ("dimensions", "[\"ad_id\",\"stat_time_day\"]"),
                    (
                        "metrics",
                        &json!(tiktok_edge_core::metrics::report::BASE).to_string(),
                    ),
                    ("start_date", &window.to_string()),
                    ("end_date", &end.to_string()),
                    ("page", &page.to_string()),
                    ("page_size", "1000"),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(r["code"], 0, "{r}");
            if page >= r["data"]["page_info"]["total_page"].as_u64().unwrap_or(1) {
                break;
            }
        }
        window = end + chrono::Days::new(1);
    }
    let mock_time = mock_started.elapsed();

    println!(
        "    {rows} rows in {requests} report requests, {:.2} s: {:.0} rows/s end to end; the mock alone takes {:.2} s of it ({:.0}%)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        mock_time.as_secs_f64(),
        mock_time.as_secs_f64() / elapsed.as_secs_f64() * 100.0
    );
    let ours = elapsed.saturating_sub(mock_time);
    println!(
        "    without the mock's share: {:.0} rows/s",
        rows as f64 / ours.as_secs_f64().max(1e-9)
    );

    if !queries {
        return;
    }
    for group_by in ["total", "day", "ad"] {
        let path = format!(
            "/v1/orgs/bench/metrics?advertiser={advertiser}&level=ad&from={from}&to={to}&group_by={group_by}"
        );
        let mut times: Vec<Duration> = Vec::new();
        let mut n_rows = 0;
        for _ in 0..20 {
            let started = Instant::now();
            let (status, v) = send(&app, "GET", &path, Value::Null).await;
            times.push(started.elapsed());
            assert_eq!(status, 200, "{v}");
            n_rows = v["rows"].as_array().unwrap().len();
        }
        times.sort();
        println!(
            "    query 90 days of 1,000 ads, group_by={group_by:<5} ({n_rows:>4} rows out): p50 {:>6.1} ms, max {:>6.1} ms",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
}
