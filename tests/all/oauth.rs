//! Organizations, API keys and advertiser OAuth end to end: the repository's spin.toml
//! served by tiktok-edge, TikTok played by tiktok-mock (its `/portal/auth` consent page
//! included), a browser played by a client that does not follow redirects.

use crate::common::world::{location, world};
use serde_json::{Value, json};
use tiktok_edge_runtime::scheduler::{self, Schedule};

const RETURN: &str = "http://localhost:8080/done";

#[tokio::test]
async fn an_advertiser_connects_through_the_consent_page_and_its_token_is_stored_encrypted() {
    let w = world().await;
    let key = w.org("acme").await;
    let r = w
        .authorize("acme", &key, json!({"return_url": RETURN}), "auto_approve")
        .await;
    assert_eq!(r.status(), 302);
    let to = location(&r);
    assert!(
        to.starts_with("http://localhost:8080/done?tiktok_connection=connected&connection_id=c_"),
        "{to}"
    );

    let (s, v) = w.call("GET", "/v1/orgs/acme/connections", &key, None).await;
    assert_eq!(s, 200);
    let demo = w.mock.mock.demo_advertiser();
    let c = &v["connections"][0];
    assert_eq!(c["status"], "active");
    assert_eq!(c["advertisers"][0]["advertiser_id"], demo.id);
    assert_eq!(c["advertisers"][0]["timezone"], demo.timezone);

    // The token TikTok issued is nowhere in our answers or in the stored bytes.
    let tokens: Vec<String> = w
        .mock
        .mock
        .with_state(|s| s.tokens.keys().cloned().collect());
    assert_eq!(tokens.len(), 1);
    assert!(!v.to_string().contains(&tokens[0]));
    let (_, one) = w
        .call(
            "GET",
            &format!("/v1/orgs/acme/connections/{}", c["id"].as_str().unwrap()),
            &key,
            None,
        )
        .await;
    assert!(!one.to_string().contains(&tokens[0]));
    let db = std::fs::read(crate::common::data_dir(w.dir.path()).join("key-value.sqlite")).unwrap();
    let wal = std::fs::read(crate::common::data_dir(w.dir.path()).join("key-value.sqlite-wal"))
        .unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes
                .windows(tokens[0].len())
                .any(|win| win == tokens[0].as_bytes()),
            "plaintext token on disk"
        );
    }
}

#[tokio::test]
async fn denied_consent_replayed_state_and_tiktok_failures_leave_nothing_behind() {
    let w = world().await;
    let key = w.org("acme").await;
    let r = w
        .authorize("acme", &key, json!({"return_url": RETURN}), "auto_deny")
        .await;
    assert_eq!(
        location(&r),
        "http://localhost:8080/done?tiktok_connection=error&reason=access_denied"
    );

    // The callback link replayed: refused with a page, no redirect anywhere.
    let (_, v) = w
        .call(
            "POST",
            "/v1/orgs/acme/connections/start",
            &key,
            Some(json!({})),
        )
        .await;
    let consent = format!(
        "{}&auto_approve=1",
        v["authorization_url"].as_str().unwrap()
    );
    let callback = location(&w.http.get(consent).send().await.unwrap());
    assert_eq!(w.http.get(&callback).send().await.unwrap().status(), 200);
    let replay = w.http.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("already completed"));

    // TikTok down during the exchange, then a code TikTok calls used (40110).
    for (fault, reason) in [
        (
            json!({"path": "/oauth2/access_token/", "http_status": 503}),
            "tiktok_unavailable",
        ),
        (
            json!({"path": "/oauth2/access_token/", "code": 40110}),
            "invalid_code",
        ),
    ] {
        w.inject(fault).await;
        let r = w
            .authorize("acme", &key, json!({"return_url": RETURN}), "auto_approve")
            .await;
        assert!(
            location(&r).ends_with(&format!("reason={reason}")),
            "{}",
            location(&r)
        );
    }
    let (_, v) = w.call("GET", "/v1/orgs/acme/connections", &key, None).await;
    assert_eq!(
        v["connections"].as_array().unwrap().len(),
        1,
        "only the one approved flow connected"
    );

    // An open redirect attempt never gets a state.
    let (s, v) = w
        .call(
            "POST",
            "/v1/orgs/acme/connections/start",
            &key,
            Some(json!({"return_url": "https://evil.example/"})),
        )
        .await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("return_url")));
}

#[tokio::test]
async fn revoke_reaches_tiktok_and_check_notices_a_token_revoked_there() {
    let w = world().await;
    let key = w.org("acme").await;
    w.authorize("acme", &key, json!({}), "auto_approve").await;
    let (_, v) = w.call("GET", "/v1/orgs/acme/connections", &key, None).await;
    let id = v["connections"][0]["id"].as_str().unwrap().to_string();

    // The advertiser removes the app at TikTok: our check notices.
    w.mock
        .mock
        .with_state(|s| s.tokens.values_mut().for_each(|t| t.revoked = true));
    let (s, v) = w
        .call(
            "POST",
            &format!("/v1/orgs/acme/connections/{id}/check"),
            &key,
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_valid"], false);
    assert_eq!(v["connection"]["status"], "reauthorization_required");

    // A fresh connection revoked through our API is revoked at TikTok too.
    w.authorize("acme", &key, json!({}), "auto_approve").await;
    let (_, v) = w.call("GET", "/v1/orgs/acme/connections", &key, None).await;
    let fresh = v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "active")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = w
        .call(
            "DELETE",
            &format!("/v1/orgs/acme/connections/{fresh}"),
            &key,
            None,
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("revoked")), "{v}");
    assert!(
        w.mock_paths()
            .iter()
            .any(|p| p.ends_with("/oauth2/revoke_token/"))
    );
    assert!(
        w.mock
            .mock
            .with_state(|s| s.tokens.values().all(|t| t.revoked))
    );
}

#[tokio::test]
async fn every_organization_route_refuses_another_organizations_key() {
    let w = world().await;
    let a = w.org("acme").await;
    let b = w.org("other").await;
    let routes = [
        ("GET", "/v1/orgs/acme"),
        ("PATCH", "/v1/orgs/acme"),
        ("GET", "/v1/orgs/acme/keys"),
        ("POST", "/v1/orgs/acme/keys"),
        ("DELETE", "/v1/orgs/acme/keys/0123456789abcdef"),
        ("GET", "/v1/orgs/acme/connections"),
        ("POST", "/v1/orgs/acme/connections/start"),
        ("GET", "/v1/orgs/acme/connections/c_0123456789abcdef"),
        ("DELETE", "/v1/orgs/acme/connections/c_0123456789abcdef"),
        ("POST", "/v1/orgs/acme/connections/c_0123456789abcdef/check"),
        ("GET", "/v1/orgs/acme/pixels"),
        ("POST", "/v1/orgs/acme/pixels"),
        ("GET", "/v1/orgs/acme/webhooks/deliveries"),
        ("GET", "/v1/orgs/acme/advertisers/1/campaigns"),
        ("POST", "/v1/orgs/acme/advertisers/1/campaigns"),
        ("GET", "/v1/orgs/acme/metrics"),
    ];
    for (method, path) in routes {
        let (s, v) = w.call(method, path, &b, Some(json!({}))).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{method} {path}: {v}"
        );
        let (s, _) = w
            .call(
                method,
                path,
                "tte_acme_0123456789abcdef_guessed",
                Some(json!({})),
            )
            .await;
        assert_eq!(s, 401, "{method} {path}");
        let (s, _) = w.call(method, path, &a, Some(json!({}))).await;
        assert!(
            s != 401 && s != 403,
            "{method} {path}: acme's own key got {s}"
        );
    }
    // Admin-only calls refuse organization keys.
    for (method, path) in [
        ("GET", "/v1/orgs"),
        ("POST", "/v1/orgs"),
        ("POST", "/v1/admin/token-keys/rotate"),
    ] {
        assert_eq!(
            w.call(method, path, &a, Some(json!({}))).await.0,
            403,
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn creator_tokens_are_refreshed_by_the_scheduled_route() {
    let w = world().await;
    let key = w.org("acme").await;
    let r = w
        .authorize("acme", &key, json!({"kind": "creator"}), "auto_approve")
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, v) = w.call("GET", "/v1/orgs/acme/connections", &key, None).await;
    let c = &v["connections"][0];
    assert_eq!(c["kind"], "creator");
    assert!(c["open_id"].as_str().unwrap().starts_with("act."));
    let first_expiry = c["access_expires_at"].as_i64().unwrap();

    // The host's scheduler makes the call, with the admin token from the app's variables.
    let schedule = Schedule {
        name: "refresh".into(),
        path: "/v1/admin/tasks/refresh-creator-tokens?within=90000".into(),
        method: "POST".into(),
        every_secs: 900,
        headers: [(
            "authorization".to_string(),
            "Bearer {{ admin_token }}".to_string(),
        )]
        .into(),
    };
    // Expiry has one-second resolution: let a second pass so the new one is later.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = scheduler::run_once(&w.edge.app, &schedule).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (report["checked"].as_i64(), report["refreshed"].as_i64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert!(
        w.mock_paths()
            .iter()
            .any(|p| p.ends_with("/tt_user/oauth2/refresh_token/"))
    );
    let (_, v) = w.call("GET", "/v1/orgs/acme/connections", &key, None).await;
    assert!(v["connections"][0]["access_expires_at"].as_i64().unwrap() > first_expiry);

    // The refresh token stops working at TikTok: the connection asks for re-authorization.
    w.mock.mock.with_state(|s| s.creator_tokens.clear());
    let (_, body) = scheduler::run_once(&w.edge.app, &schedule).await.unwrap();
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["reauthorization_required"], 1, "{report}");
    let (_, v) = w.call("GET", "/v1/orgs/acme/connections", &key, None).await;
    assert_eq!(v["connections"][0]["status"], "reauthorization_required");
}
