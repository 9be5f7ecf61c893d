//! Who may call: the check every `/v1/orgs/{org}/...` route runs first.
//!
//! Threat model: anyone can send any path with any key. The org named in a key must be
//! the org in the path, so a valid key of org A on org B's path is refused (403) before
//! anything of B is read. The admin token (variable `admin_token`) may act on every
//! organization and is the only way to create one.

use crate::ApiError;
use crate::platform::crypto::{constant_time_eq, sha256};
use crate::platform::env::{Env, vars};
use crate::platform::http::Request;
use crate::tenancy::api_keys;
use crate::tenancy::org_id::OrgId;
use crate::tenancy::organizations::get_org;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    OrgKey { org: OrgId, key_id: String },
}

fn is_admin(env: &Env, token: &str) -> Result<bool, ApiError> {
    Ok(match env.var(vars::ADMIN_TOKEN)? {
        // Digests first: equal lengths, so the compare leaks nothing about the token.
        Some(admin) => constant_time_eq(&sha256(admin.as_bytes()), &sha256(token.as_bytes())),
        None => false,
    })
}

/// Who sent `req`: the admin or an organization's key. 401 when neither.
pub fn authenticate(env: &Env, req: &Request) -> Result<Principal, ApiError> {
    let token = req.bearer_token().ok_or_else(|| {
        ApiError::Unauthorized("send an API key as Authorization: Bearer <key>".into())
    })?;
    if is_admin(env, token)? {
        return Ok(Principal::Admin);
    }
    match api_keys::verify(env, token)? {
        Some((org, key_id)) => Ok(Principal::OrgKey { org, key_id }),
        None => Err(ApiError::Unauthorized("the API key is not valid".into())),
    }
}

/// The admin only (creating organizations, rotating the vault); 403 for org keys.
pub fn require_admin(env: &Env, req: &Request) -> Result<(), ApiError> {
    match authenticate(env, req)? {
        Principal::Admin => Ok(()),
        Principal::OrgKey { .. } => Err(ApiError::Forbidden(
            "this call needs the admin token, not an organization's key".into(),
        )),
    }
}

/// The check every `/v1/orgs/{org}/...` route runs before anything else: the caller is
/// the admin or holds a key of exactly this organization, and the organization exists.
pub fn authorize_org(env: &Env, req: &Request, org: &str) -> Result<OrgId, ApiError> {
    let principal = authenticate(env, req)?;
    let org = OrgId::parse(org)?;
    if let Principal::OrgKey { org: own, .. } = &principal
        && *own != org
    {
        return Err(ApiError::Forbidden(
            "this API key belongs to another organization".into(),
        ));
    }
    get_org(env, &org)?;
    Ok(org)
}

/// The org named by a `/v1/orgs/{org}/...` path, if the path is one.
pub fn org_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/orgs/")?;
    rest.split('/').next().filter(|org| !org.is_empty())
}

/// Runs [`authorize_org`] when `req` is under `/v1/orgs/{org}/`; other paths pass.
/// Components call it before routing so every org route has the same check.
pub fn guard(env: &Env, req: &Request) -> Result<Option<OrgId>, ApiError> {
    org_in_path(&req.path)
        .map(|org| authorize_org(env, req, org))
        .transpose()
}
