//! The HTTP surface of the OAuth flows, served by the `accounts` component together with
//! [`crate::tenancy::api`] (every path not listed here goes there).
//!
//! | route | who |
//! |---|---|
//! | `POST /v1/orgs/{org}/connections/start` `{return_url?, kind?}` | admin or the org's key |
//! | `GET /oauth/start?state=…`, `GET /oauth/callback` | the browser (state is the credential) |
//! | `POST /v1/admin/tasks/refresh-creator-tokens?within=SECONDS` | admin (a scheduler) |

use crate::ApiError;
use crate::oauth::flow;
use crate::platform::env::Env;
use crate::platform::http::{Request, Response, segments};
use crate::tenancy::access::{authorize_org, require_admin};

/// Refresh creator tokens that expire within this window unless told otherwise (2 h:
/// with 24 h tokens and a run every 15 minutes, each token gets several chances).
pub const DEFAULT_REFRESH_WINDOW_SECS: i64 = 2 * 3600;

pub fn handle(env: &Env, req: &Request) -> Result<Response, ApiError> {
    let path = segments(&req.path);
    let method = req.method.as_str();
    match path.as_slice() {
        ["oauth", "start"] => match method {
            "GET" => Ok(flow::browser_start(env, req)),
            _ => Ok(Response::method_not_allowed("GET")),
        },
        ["oauth", "callback"] => match method {
            "GET" => Ok(flow::callback(env, req)),
            _ => Ok(Response::method_not_allowed("GET")),
        },
        ["v1", "orgs", org, "connections", "start"] => {
            let org = authorize_org(env, req, org)?;
            match method {
                "POST" => Ok(Response::json(
                    201,
                    &flow::start(env, req, &org, req.json()?)?,
                )),
                _ => Ok(Response::method_not_allowed("POST")),
            }
        }
        ["v1", "admin", "tasks", "refresh-creator-tokens"] => {
            require_admin(env, req)?;
            if method != "POST" {
                return Ok(Response::method_not_allowed("POST"));
            }
            let within = match req.query_param("within") {
                None => DEFAULT_REFRESH_WINDOW_SECS,
                Some(s) => s
                    .parse::<i64>()
                    .ok()
                    .filter(|s| (0..=366 * 86400).contains(s))
                    .ok_or_else(|| {
                        ApiError::invalid("within", "must be seconds between 0 and 31622400")
                    })?,
            };
            Ok(Response::json(
                200,
                &flow::refresh_creator_tokens(env, within)?,
            ))
        }
        _ => crate::tenancy::api::handle(env, req),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::outbound::TransportError;
    use crate::tenancy::advertiser_access::AdvertiserAccess;
    use crate::tenancy::connections::Status;
    use crate::tenancy::org_id::OrgId;
    use crate::tenancy::organizations::tests::org_with_key;
    use crate::testing::TestEnv;
    use crate::tiktok::client::Call;
    use serde_json::Value;

    fn call(t: &TestEnv, method: &str, path: &str, key: &str, body: &str) -> Response {
        let req = Request::new(method, path)
            .with_header("authorization", &format!("Bearer {key}"))
            .with_body(body);
        handle(&t.env(), &req).unwrap_or_else(|e| Response::error(&e))
    }

    fn json_of(r: &Response) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Starts a flow for `acme` and returns the state.
    fn start(t: &TestEnv, key: &str, body: &str) -> String {
        let r = call(t, "POST", "/v1/orgs/acme/connections/start", key, body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let url = json_of(&r)["authorization_url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(url.starts_with("http://tiktok.test/portal/"), "{url}");
        assert!(url.contains("auth?app_id=app-1&state="), "{url}");
        assert!(url.contains("redirect_uri=https%3A%2F%2Fedge.example.com%2Foauth%2Fcallback"));
        let parsed = url::Url::parse(&url).unwrap();
        parsed
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned()
    }

    fn callback(t: &TestEnv, query: &[(&str, &str)]) -> Response {
        let q = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query.iter())
            .finish();
        handle(
            &t.env(),
            &Request::new("GET", &format!("/oauth/callback?{q}")),
        )
        .unwrap()
    }

    fn location(r: &Response) -> String {
        r.header("location").unwrap_or_default().to_string()
    }

    const RETURN: &str = r#"{"return_url":"https://app.example.com/settings/tiktok"}"#;

    #[test]
    fn the_whole_advertiser_flow_stores_an_encrypted_connection() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let state = start(&t, &key, RETURN);
        let r = callback(&t, &[("auth_code", "good-1"), ("state", &state)]);
        assert_eq!(r.status, 302);
        let to = location(&r);
        assert!(to.starts_with("https://app.example.com/settings/tiktok?tiktok_connection=connected&connection_id=c_"), "{to}");

        let listed = json_of(&call(&t, "GET", "/v1/orgs/acme/connections", &key, ""));
        let c = &listed["connections"][0];
        assert_eq!(c["status"], "active");
        assert_eq!(c["advertisers"][1]["advertiser_id"], "222");
        assert_eq!(c["advertisers"][1]["timezone"], "Asia/Tokyo");
        assert_eq!(c["scopes"], serde_json::json!(["4"]));
        assert!(!listed.to_string().contains("act.good-1"));
        for (k, v) in t.kv.dump() {
            assert!(
                !String::from_utf8_lossy(&v).contains("act.good-1"),
                "{k} holds the token"
            );
        }
        // Any component can now call TikTok for advertiser 222.
        let access =
            AdvertiserAccess::load(&t.env(), &OrgId::parse("acme").unwrap(), "222").unwrap();
        access
            .call(&t.env(), Call::get("/advertiser/info/"))
            .unwrap();
        let sent = t.tiktok.sent.borrow();
        assert!(
            sent.last()
                .unwrap()
                .headers
                .contains(&("access-token".into(), "act.good-1".into()))
        );
    }

    #[test]
    fn a_state_is_single_use_and_expires() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let state = start(&t, &key, "");
        assert_eq!(
            callback(&t, &[("code", "good-1"), ("state", &state)]).status,
            200
        );
        let again = callback(&t, &[("code", "good-2"), ("state", &state)]);
        assert_eq!(again.status, 400);
        assert!(String::from_utf8_lossy(&again.body).contains("already completed"));

        let late = start(&t, &key, "");
        t.now.set(t.now.get() + 601);
        let r = callback(&t, &[("code", "good-3"), ("state", &late)]);
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("10 minutes"));
        for forged in ["", "abc.def", &state.replace('.', "x.")] {
            let r = callback(&t, &[("code", "good-4"), ("state", forged)]);
            assert_eq!(r.status, 400, "{forged}");
            assert!(r.header("location").is_none());
        }
        assert_eq!(
            crate::tenancy::connections::list(&t.env(), &OrgId::parse("acme").unwrap())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn failures_redirect_with_a_reason_and_store_nothing() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let cases: [(&[(&str, &str)], &str); 2] = [
            (&[("error", "access_denied")], "reason=access_denied"),
            (&[("auth_code", "used-code")], "reason=invalid_code"),
        ];
        for (params, reason) in cases {
            let state = start(&t, &key, RETURN);
            let mut q = params.to_vec();
            q.push(("state", &state));
            let r = callback(&t, &q);
            assert!(
                location(&r).contains("tiktok_connection=error"),
                "{}",
                location(&r)
            );
            assert!(location(&r).ends_with(reason), "{}", location(&r));
        }
        // TikTok unreachable: no retry of the single-use code exchange.
        let state = start(&t, &key, RETURN);
        t.tiktok
            .answers
            .borrow_mut()
            .push(Err(TransportError("connection refused".into())));
        let r = callback(&t, &[("auth_code", "good-1"), ("state", &state)]);
        assert!(
            location(&r).ends_with("reason=tiktok_unavailable"),
            "{}",
            location(&r)
        );
        // TikTok fails after the exchange: the token is given back and nothing is kept.
        let state = start(&t, &key, RETURN);
        let sent_before = t.tiktok.sent.borrow().len();
        t.script(vec![
            crate::tiktok::client::fake::ok(
                serde_json::json!({"access_token": "act.x", "advertiser_ids": ["1"]}),
            ),
            crate::tiktok::client::fake::err(50000, "a"),
            crate::tiktok::client::fake::err(50000, "b"),
            crate::tiktok::client::fake::err(50000, "c"),
        ]);
        let r = callback(&t, &[("auth_code", "good-9"), ("state", &state)]);
        assert!(
            location(&r).ends_with("reason=tiktok_unavailable"),
            "{}",
            location(&r)
        );
        assert_eq!(
            t.tiktok.paths()[sent_before..].last().unwrap(),
            "/oauth2/revoke_token/"
        );
        let env = t.env();
        assert!(
            crate::tenancy::connections::list(&env, &OrgId::parse("acme").unwrap())
                .unwrap()
                .is_empty()
        );
        assert!(
            t.kv.dump()
                .iter()
                .all(|(k, _)| !k.contains("/tokens/") && !k.contains("/advertisers/"))
        );
    }

    #[test]
    fn the_browser_start_link_redirects_to_tiktok_until_the_state_expires() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let r = call(&t, "POST", "/v1/orgs/acme/connections/start", &key, RETURN);
        let v = json_of(&r);
        let start_url = v["start_url"].as_str().unwrap();
        let path = start_url.strip_prefix("https://edge.example.com").unwrap();
        let r = handle(&t.env(), &Request::new("GET", path)).unwrap();
        assert_eq!(r.status, 302);
        assert_eq!(location(&r), v["authorization_url"].as_str().unwrap());
        t.now.set(t.now.get() + 601);
        let r = handle(&t.env(), &Request::new("GET", path)).unwrap();
        assert_eq!((r.status, r.header("location")), (400, None));
        let r = handle(
            &t.env(),
            &Request::new("GET", "/oauth/start?state=forged.x"),
        )
        .unwrap();
        assert_eq!(r.status, 400);
    }

    #[test]
    fn api_clients_get_json_from_the_callback() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let state = start(&t, &key, RETURN);
        let req = Request::new(
            "GET",
            &format!("/oauth/callback?auth_code=bad&state={state}"),
        )
        .with_header("accept", "application/json");
        let r = handle(&t.env(), &req).unwrap();
        assert_eq!(r.status, 400);
        assert_eq!(json_of(&r)["error"]["code"], "invalid_code");
    }

    #[test]
    fn return_urls_outside_the_allow_list_are_refused() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        for url in [
            "https://evil.example.com/",
            "https://app.example.com@evil.com/settings",
        ] {
            let r = call(
                &t,
                "POST",
                "/v1/orgs/acme/connections/start",
                &key,
                &format!(r#"{{"return_url":"{url}"}}"#),
            );
            assert_eq!(r.status, 400, "{url}");
            assert_eq!(json_of(&r)["error"]["field"], "return_url");
        }
    }

    #[test]
    fn revoke_calls_tiktok_and_deletes_the_token() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let state = start(&t, &key, "");
        callback(&t, &[("auth_code", "good-1"), ("state", &state)]);
        let org = OrgId::parse("acme").unwrap();
        let id = crate::tenancy::connections::list(&t.env(), &org).unwrap()[0]
            .id
            .clone();
        let r = call(
            &t,
            "DELETE",
            &format!("/v1/orgs/acme/connections/{id}"),
            &key,
            "",
        );
        assert_eq!(r.status, 200);
        assert_eq!(json_of(&r)["status"], "revoked");
        assert_eq!(t.tiktok.paths().last().unwrap(), "/oauth2/revoke_token/");
        assert!(t.kv.dump().iter().all(|(k, _)| !k.contains("/tokens/")));
        assert_eq!(
            AdvertiserAccess::load(&t.env(), &org, "111")
                .unwrap_err()
                .status(),
            404
        );
    }

    #[test]
    fn a_refused_token_marks_the_connection_for_reauthorization() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let state = start(&t, &key, "");
        callback(&t, &[("auth_code", "good-revoked"), ("state", &state)]);
        let org = OrgId::parse("acme").unwrap();
        let c = crate::tenancy::connections::list(&t.env(), &org).unwrap()[0].clone();
        // The fake refuses token act.revoked; rename ours to it by re-sealing.
        crate::tenancy::connections::save_refreshed(
            &t.env(),
            &org,
            &c.id,
            &crate::tenancy::connections::Tokens {
                access_token: "act.revoked".into(),
                refresh_token: None,
            },
            None,
            None,
        )
        .unwrap();
        let r = call(
            &t,
            "POST",
            &format!("/v1/orgs/acme/connections/{}/check", c.id),
            &key,
            "",
        );
        assert_eq!(r.status, 200);
        let v = json_of(&r);
        assert_eq!(v["token_valid"], false);
        assert_eq!(v["connection"]["status"], "reauthorization_required");
        let e = AdvertiserAccess::load(&t.env(), &org, "111").unwrap_err();
        assert_eq!(e.status(), 409);
    }

    #[test]
    fn creator_tokens_are_refreshed_before_they_expire() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let state = start(&t, &key, r#"{"kind":"creator"}"#);
        let r = callback(&t, &[("code", "good-c"), ("state", &state)]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let org = OrgId::parse("acme").unwrap();
        let c = crate::tenancy::connections::list(&t.env(), &org).unwrap()[0].clone();
        assert_eq!(c.open_id.as_deref(), Some("open-1"));
        assert_eq!(c.access_expires_at, Some(t.now.get() + 86400));

        let refresh = |within: &str| {
            call(
                &t,
                "POST",
                &format!("/v1/admin/tasks/refresh-creator-tokens?within={within}"),
                TestEnv::ADMIN,
                "",
            )
        };
        assert_eq!(json_of(&refresh("7200"))["refreshed"], 0);
        t.now.set(t.now.get() + 86400 - 3600);
        assert_eq!(json_of(&refresh("7200"))["refreshed"], 1);
        let (c2, token) =
            crate::tenancy::connections::creator_access_token(&t.env(), &org, &c.id).unwrap();
        assert_eq!(token, "cat.2");
        assert_eq!(c2.access_expires_at, Some(t.now.get() + 86400));
        // An org key may not run the scheduler's task.
        let r = call(
            &t,
            "POST",
            "/v1/admin/tasks/refresh-creator-tokens",
            &key,
            "",
        );
        assert_eq!(r.status, 403);
    }

    #[test]
    fn a_failed_creator_refresh_asks_for_reauthorization() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let state = start(&t, &key, r#"{"kind":"creator"}"#);
        callback(&t, &[("code", "good-c"), ("state", &state)]);
        let org = OrgId::parse("acme").unwrap();
        let id = crate::tenancy::connections::list(&t.env(), &org).unwrap()[0]
            .id
            .clone();
        crate::tenancy::connections::save_refreshed(
            &t.env(),
            &org,
            &id,
            &crate::tenancy::connections::Tokens {
                access_token: "cat.1".into(),
                refresh_token: Some("crt.expired".into()),
            },
            Some(t.now.get() + 60),
            None,
        )
        .unwrap();
        let r = call(
            &t,
            "POST",
            "/v1/admin/tasks/refresh-creator-tokens",
            TestEnv::ADMIN,
            "",
        );
        assert_eq!(json_of(&r)["reauthorization_required"], 1);
        let c = crate::tenancy::connections::get(&t.env(), &org, &id).unwrap();
        assert_eq!(c.status, Status::ReauthorizationRequired);
        assert!(c.last_error.unwrap().starts_with("40103"));
    }

    #[test]
    fn another_orgs_key_is_refused_on_every_route_and_changes_nothing() {
        let t = TestEnv::new();
        let a = org_with_key(&t, "acme");
        let b = org_with_key(&t, "other");
        let state = start(&t, &a, "");
        callback(&t, &[("auth_code", "good-1"), ("state", &state)]);
        let id = crate::tenancy::connections::list(&t.env(), &OrgId::parse("acme").unwrap())
            .unwrap()[0]
            .id
            .clone();
        let key_id = crate::tenancy::api_keys::list_keys(&t.env(), &OrgId::parse("acme").unwrap())
            .unwrap()[0]
            .key_id
            .clone();
        let routes = [
            ("GET", "/v1/orgs/acme".to_string()),
            ("PATCH", "/v1/orgs/acme".to_string()),
            ("GET", "/v1/orgs/acme/keys".to_string()),
            ("POST", "/v1/orgs/acme/keys".to_string()),
            ("DELETE", format!("/v1/orgs/acme/keys/{key_id}")),
            ("GET", "/v1/orgs/acme/connections".to_string()),
            ("POST", "/v1/orgs/acme/connections/start".to_string()),
            ("GET", format!("/v1/orgs/acme/connections/{id}")),
            ("DELETE", format!("/v1/orgs/acme/connections/{id}")),
            ("POST", format!("/v1/orgs/acme/connections/{id}/check")),
            ("GET", "/v1/orgs/acme/no-such-route".to_string()),
        ];
        let before = t.kv.dump();
        let sent = t.tiktok.sent.borrow().len();
        for (method, path) in &routes {
            let r = call(&t, method, path, &b, r#"{"name":"x"}"#);
            assert_eq!(r.status, 403, "{method} {path}");
            assert_eq!(json_of(&r)["error"]["code"], "forbidden");
            let r = call(&t, method, path, "tte_acme_0123456789abcdef_guess", "{}");
            assert_eq!(r.status, 401, "{method} {path}");
        }
        assert_eq!(t.kv.dump(), before);
        assert_eq!(t.tiktok.sent.borrow().len(), sent);
        for (method, path) in [
            ("GET", "/v1/orgs"),
            ("POST", "/v1/orgs"),
            ("POST", "/v1/admin/token-keys/rotate"),
        ] {
            assert_eq!(
                call(&t, method, path, &a, "{}").status,
                403,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn rotation_keeps_tokens_readable() {
        let mut t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        let state = start(&t, &key, "");
        callback(&t, &[("auth_code", "good-1"), ("state", &state)]);
        let new_key = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
        t.config.0.insert(
            "token_encryption_keys".into(),
            format!("{new_key},{}", TestEnv::KEYS),
        );
        let r = call(
            &t,
            "POST",
            "/v1/admin/token-keys/rotate",
            TestEnv::ADMIN,
            "",
        );
        assert_eq!(json_of(&r)["reencrypted"], 1);
        t.config
            .0
            .insert("token_encryption_keys".into(), new_key.into());
        let org = OrgId::parse("acme").unwrap();
        let access = AdvertiserAccess::load(&t.env(), &org, "111").unwrap();
        access
            .call(&t.env(), Call::get("/advertiser/info/"))
            .unwrap();
    }

    #[test]
    fn admin_creates_orgs_and_keys_with_validation() {
        let t = TestEnv::new();
        let admin = TestEnv::ADMIN;
        let r = call(&t, "POST", "/v1/orgs", admin, r#"{"id":"Bad Id"}"#);
        assert_eq!(
            (r.status, json_of(&r)["error"]["field"].as_str()),
            (400, Some("id"))
        );
        let r = call(
            &t,
            "POST",
            "/v1/orgs",
            admin,
            r#"{"id":"acme","unknown":1}"#,
        );
        assert_eq!(r.status, 400);
        let r = call(
            &t,
            "POST",
            "/v1/orgs",
            admin,
            r#"{"id":"acme","allowed_return_urls":["http://evil.com/"]}"#,
        );
        assert_eq!(json_of(&r)["error"]["field"], "allowed_return_urls[0]");
        assert_eq!(
            call(&t, "POST", "/v1/orgs", admin, r#"{"id":"acme"}"#).status,
            201
        );
        let r = call(&t, "POST", "/v1/orgs/acme/keys", admin, r#"{"name":"ci"}"#);
        assert_eq!(r.status, 201);
        let v = json_of(&r);
        assert!(
            v["key"]
                .as_str()
                .unwrap()
                .starts_with(v["prefix"].as_str().unwrap())
        );
        assert_eq!(
            json_of(&call(&t, "GET", "/v1/orgs", admin, ""))["orgs"][0]["id"],
            "acme"
        );
        assert_eq!(call(&t, "PUT", "/v1/orgs/acme", admin, "").status, 405);
    }
}
