//! Organizations (tenants): their profiles and the return URLs their OAuth flows may
//! send a browser back to. Only the admin creates them ([`super::access`]).

use crate::ApiError;
use crate::platform::env::Env;
use crate::platform::kv::{IdIndex, create_json, get_json, update_json};
use crate::tenancy::org_id::OrgId;
use serde::{Deserialize, Serialize};

/// Where the ids of all organizations are listed.
const ORG_INDEX: &str = "orgs";
/// Most return URLs one organization may allow.
const MAX_RETURN_URLS: usize = 20;

/// An organization's profile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// Where the OAuth flow may send the browser back to: URL prefixes (scheme, host and
    /// port equal; path starting with the prefix's path).
    pub allowed_return_urls: Vec<String>,
}

fn profile_key(org: &OrgId) -> String {
    format!("{}profile", org.key_prefix())
}

/// Body of `POST /v1/orgs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrg {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub allowed_return_urls: Vec<String>,
}

/// Body of `PATCH /v1/orgs/{org}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgChanges {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub allowed_return_urls: Option<Vec<String>>,
}

pub(super) fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1-200 characters without control characters",
        ));
    }
    Ok(name.to_string())
}

fn check_return_urls(urls: &[String]) -> Result<Vec<String>, ApiError> {
    if urls.len() > MAX_RETURN_URLS {
        return Err(ApiError::invalid(
            "allowed_return_urls",
            format!("at most {MAX_RETURN_URLS} entries"),
        ));
    }
    urls.iter()
        .enumerate()
        .map(|(i, u)| {
            parse_return_url(u)
                .map(|u| u.to_string())
                .map_err(|reason| ApiError::invalid(format!("allowed_return_urls[{i}]"), reason))
        })
        .collect()
}

/// A return URL must be absolute https (http only for loopback), with no user info or
/// fragment: the checks that stop `https://good.example@evil.example` tricks.
fn parse_return_url(raw: &str) -> Result<url::Url, String> {
    if raw.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("is not an absolute URL ({e})"))?;
    let loopback = matches!(
        url.host(),
        Some(url::Host::Domain("localhost"))
            | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            | Some(url::Host::Ipv6(std::net::Ipv6Addr::LOCALHOST))
    );
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err("must use https (http is allowed only for localhost)".into()),
        other => return Err(format!("scheme {other} is not allowed; use https")),
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user info".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment".into());
    }
    Ok(url)
}

/// Checks `candidate` against the organization's allow-list; returns it normalized.
pub fn allowed_return_url(org: &Org, candidate: &str) -> Result<String, ApiError> {
    let url = parse_return_url(candidate).map_err(|r| ApiError::invalid("return_url", r))?;
    let allowed = org.allowed_return_urls.iter().any(|entry| {
        let Ok(prefix) = url::Url::parse(entry) else {
            return false;
        };
        prefix.origin() == url.origin() && {
            let base = prefix.path().trim_end_matches('/');
            let path = url.path();
            path == base || path.starts_with(&format!("{base}/")) || base.is_empty()
        }
    });
    if !allowed {
        return Err(ApiError::invalid(
            "return_url",
            "is not in the organization's allowed_return_urls",
        ));
    }
    Ok(url.to_string())
}

pub fn create_org(env: &Env, new: NewOrg) -> Result<Org, ApiError> {
    let id = OrgId::parse(&new.id).map_err(|_| {
        ApiError::invalid(
            "id",
            "must be 1-64 lowercase letters, digits or '-', not starting or ending with '-'",
        )
    })?;
    let org = Org {
        name: check_name(new.name.as_deref().unwrap_or(id.as_str()))?,
        id: id.to_string(),
        created_at: env.now,
        allowed_return_urls: check_return_urls(&new.allowed_return_urls)?,
    };
    if !create_json(env.kv, &profile_key(&id), &org)? {
        return Err(ApiError::Conflict(format!(
            "organization {id} already exists"
        )));
    }
    IdIndex::new(env.kv, ORG_INDEX).insert(id.as_str())?;
    Ok(org)
}

pub fn get_org(env: &Env, org: &OrgId) -> Result<Org, ApiError> {
    get_json(env.kv, &profile_key(org))?
        .ok_or_else(|| ApiError::NotFound(format!("organization {org} does not exist")))
}

pub fn list_orgs(env: &Env) -> Result<Vec<Org>, ApiError> {
    let mut orgs = Vec::new();
    for id in IdIndex::new(env.kv, ORG_INDEX).list()? {
        if let Ok(org) = OrgId::parse(&id)
            && let Some(profile) = get_json(env.kv, &profile_key(&org))?
        {
            orgs.push(profile);
        }
    }
    Ok(orgs)
}

/// Ids of every organization (for scheduled tasks that visit them all).
pub fn org_ids(env: &Env) -> Result<Vec<OrgId>, ApiError> {
    Ok(IdIndex::new(env.kv, ORG_INDEX)
        .list()?
        .iter()
        .filter_map(|id| OrgId::parse(id).ok())
        .collect())
}

pub fn update_org(env: &Env, org: &OrgId, changes: OrgChanges) -> Result<Org, ApiError> {
    let name = changes.name.as_deref().map(check_name).transpose()?;
    let urls = changes
        .allowed_return_urls
        .as_deref()
        .map(check_return_urls)
        .transpose()?;
    update_json(env.kv, &profile_key(org), |current: Option<Org>| {
        let mut profile = current
            .ok_or_else(|| ApiError::NotFound(format!("organization {org} does not exist")))?;
        if let Some(name) = &name {
            profile.name = name.clone();
        }
        if let Some(urls) = &urls {
            profile.allowed_return_urls = urls.clone();
        }
        Ok((Some(profile.clone()), profile))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::platform::http::Request;
    use crate::tenancy::access::*;
    use crate::tenancy::api_keys::*;
    use crate::testing::TestEnv;

    pub fn org_with_key(t: &TestEnv, id: &str) -> String {
        let env = t.env();
        create_org(
            &env,
            NewOrg {
                id: id.into(),
                name: None,
                allowed_return_urls: vec!["https://app.example.com/settings".into()],
            },
        )
        .unwrap();
        create_key(&env, &OrgId::parse(id).unwrap(), NewKey::default())
            .unwrap()
            .key
    }

    fn req(key: &str) -> Request {
        Request::new("GET", "/").with_header("authorization", &format!("Bearer {key}"))
    }

    #[test]
    fn keys_are_stored_only_as_digests() {
        let t = TestEnv::new();
        let key = org_with_key(&t, "acme");
        // The secret is everything after the third '_' (it may itself contain '_').
        let secret = key.splitn(4, '_').nth(3).unwrap();
        assert_eq!(secret.len(), 43);
        for (k, v) in t.kv.dump() {
            let text = String::from_utf8_lossy(&v);
            assert!(!text.contains(&key), "{k} holds the key");
            assert!(!text.contains(secret), "{k} holds the secret");
        }
        let listed = list_keys(&t.env(), &OrgId::parse("acme").unwrap()).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(key.starts_with(&listed[0].prefix));
        assert!(
            serde_json::to_string(&listed)
                .unwrap()
                .find("digest")
                .is_none()
        );
    }

    #[test]
    fn a_key_opens_only_its_own_organization() {
        let t = TestEnv::new();
        let a = org_with_key(&t, "org-a");
        let b = org_with_key(&t, "org-b");
        let env = t.env();
        assert_eq!(
            authorize_org(&env, &req(&a), "org-a").unwrap().as_str(),
            "org-a"
        );
        assert_eq!(
            authorize_org(&env, &req(&a), "org-b").unwrap_err().status(),
            403
        );
        assert_eq!(
            authorize_org(&env, &req(&b), "org-a").unwrap_err().status(),
            403
        );
        // A key whose org part was edited to B's: the digest no longer matches.
        let forged = a.replacen("org-a", "org-b", 1);
        assert_eq!(
            authorize_org(&env, &req(&forged), "org-b")
                .unwrap_err()
                .status(),
            401
        );
    }

    #[test]
    fn bad_keys_are_401_and_unknown_orgs_404_only_after_authentication() {
        let t = TestEnv::new();
        let a = org_with_key(&t, "org-a");
        let env = t.env();
        for bad in [
            "",
            "nope",
            "tte_org-a_zz_x",
            &format!("{a}x"),
            "tte_../x_0123456789abcdef_s",
        ] {
            let e = authorize_org(&env, &req(bad), "org-a").unwrap_err();
            assert_eq!(e.status(), 401, "{bad:?}");
        }
        assert_eq!(
            authorize_org(&env, &Request::new("GET", "/"), "org-a")
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            authorize_org(&env, &req("nope"), "missing")
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            authorize_org(&env, &req(TestEnv::ADMIN), "missing")
                .unwrap_err()
                .status(),
            404
        );
    }

    #[test]
    fn guard_checks_only_org_paths() {
        let t = TestEnv::new();
        let a = org_with_key(&t, "org-a");
        let env = t.env();
        let on = |path: &str, key: &str| {
            guard(
                &env,
                &Request::new("GET", path).with_header("authorization", &format!("Bearer {key}")),
            )
        };
        assert_eq!(
            on("/v1/orgs/org-a/pixels", &a).unwrap().unwrap().as_str(),
            "org-a"
        );
        assert_eq!(on("/v1/orgs/org-b/pixels", &a).unwrap_err().status(), 403);
        assert_eq!(on("/pixel/events", "").unwrap(), None);
        assert_eq!(org_in_path("/v1/orgs/"), None);
    }

    #[test]
    fn revoked_keys_stop_working() {
        let t = TestEnv::new();
        let a = org_with_key(&t, "org-a");
        let env = t.env();
        let org = OrgId::parse("org-a").unwrap();
        let key_id = list_keys(&env, &org).unwrap()[0].key_id.clone();
        revoke_key(&env, &org, &key_id).unwrap();
        assert_eq!(
            authorize_org(&env, &req(&a), "org-a").unwrap_err().status(),
            401
        );
        assert_eq!(revoke_key(&env, &org, &key_id).unwrap_err().status(), 404);
    }

    #[test]
    fn only_the_admin_may_create_organizations() {
        let t = TestEnv::new();
        let a = org_with_key(&t, "org-a");
        let env = t.env();
        assert!(require_admin(&env, &req(TestEnv::ADMIN)).is_ok());
        assert_eq!(require_admin(&env, &req(&a)).unwrap_err().status(), 403);
        assert_eq!(require_admin(&env, &req("x")).unwrap_err().status(), 401);
        let e = create_org(
            &env,
            NewOrg {
                id: "org-a".into(),
                name: None,
                allowed_return_urls: vec![],
            },
        )
        .unwrap_err();
        assert_eq!(e.status(), 409);
    }

    #[test]
    fn return_urls_must_match_an_allowed_prefix() {
        let org = Org {
            id: "a".into(),
            name: "a".into(),
            created_at: 0,
            allowed_return_urls: vec!["https://app.example.com/settings".into()],
        };
        for ok in [
            "https://app.example.com/settings",
            "https://app.example.com/settings/tiktok?x=1",
        ] {
            assert!(allowed_return_url(&org, ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://app.example.com/settingsx",
            "https://app.example.com.evil.com/settings",
            "https://app.example.com@evil.com/settings",
            "https://evil.com/?https://app.example.com/settings",
            "http://app.example.com/settings",
            "https://app.example.com:444/settings",
            "//evil.com/settings",
            "javascript:alert(1)",
            "/settings",
        ] {
            assert_eq!(
                allowed_return_url(&org, bad).unwrap_err().status(),
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn allow_lists_refuse_unsafe_entries() {
        for bad in [
            "http://example.com/",
            "ftp://x/",
            "https://u:p@x.com/",
            "https://x.com/#f",
            "x",
        ] {
            assert!(check_return_urls(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(check_return_urls(&["http://localhost:8080/cb".to_string()]).is_ok());
    }
}
