//! The HTTP surface of organizations, their API keys and their TikTok connections,
//! served by the `accounts` component (behind [`crate::oauth::api`], which adds the
//! OAuth routes).
//!
//! | route | who |
//! |---|---|
//! | `POST /v1/orgs`, `GET /v1/orgs` | admin |
//! | `GET/PATCH /v1/orgs/{org}` | admin or the org's key |
//! | `GET/POST /v1/orgs/{org}/keys`, `DELETE /v1/orgs/{org}/keys/{key_id}` | admin or the org's key |
//! | `GET /v1/orgs/{org}/connections` | admin or the org's key |
//! | `GET/DELETE …/connections/{id}`, `POST …/connections/{id}/check` | admin or the org's key |
//! | `POST /v1/admin/token-keys/rotate` | admin |

use crate::ApiError;
use crate::OrgId;
use crate::platform::env::Env;
use crate::platform::http::{Request, Response, segments};
use crate::tenancy::access::{authorize_org, require_admin};
use crate::tenancy::{api_keys, connections, organizations, vault};
use serde_json::json;

pub fn handle(env: &Env, req: &Request) -> Result<Response, ApiError> {
    let path = segments(&req.path);
    let method = req.method.as_str();
    match path.as_slice() {
        ["v1", "orgs"] => {
            require_admin(env, req)?;
            match method {
                "POST" => Ok(Response::json(
                    201,
                    &organizations::create_org(env, req.json()?)?,
                )),
                "GET" => Ok(Response::json(
                    200,
                    &json!({"orgs": organizations::list_orgs(env)?}),
                )),
                _ => Ok(Response::method_not_allowed("GET, POST")),
            }
        }
        ["v1", "orgs", org, rest @ ..] => {
            let org = authorize_org(env, req, org)?;
            org_route(env, req, &org, rest)
        }
        ["v1", "admin", "token-keys", "rotate"] => {
            require_admin(env, req)?;
            match method {
                "POST" => Ok(Response::json(
                    200,
                    &vault::rotate(env.kv, &env.keyring()?)?,
                )),
                _ => Ok(Response::method_not_allowed("POST")),
            }
        }
        _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
    }
}

fn org_route(env: &Env, req: &Request, org: &OrgId, rest: &[&str]) -> Result<Response, ApiError> {
    let method = req.method.as_str();
    match (rest, method) {
        ([], "GET") => Ok(Response::json(200, &organizations::get_org(env, org)?)),
        ([], "PATCH") => Ok(Response::json(
            200,
            &organizations::update_org(env, org, req.json()?)?,
        )),
        ([], _) => Ok(Response::method_not_allowed("GET, PATCH")),
        (["keys"], "GET") => Ok(Response::json(
            200,
            &json!({"keys": api_keys::list_keys(env, org)?}),
        )),
        (["keys"], "POST") => Ok(Response::json(
            201,
            &api_keys::create_key(env, org, req.json()?)?,
        )),
        (["keys"], _) => Ok(Response::method_not_allowed("GET, POST")),
        (["keys", key_id], "DELETE") => {
            api_keys::revoke_key(env, org, key_id)?;
            Ok(Response::no_content())
        }
        (["keys", _], _) => Ok(Response::method_not_allowed("DELETE")),
        (["connections"], "GET") => Ok(Response::json(
            200,
            &json!({"connections": connections::list(env, org)?}),
        )),
        (["connections"], _) => Ok(Response::method_not_allowed("GET")),
        (["connections", id], "GET") => Ok(Response::json(200, &connections::get(env, org, id)?)),
        (["connections", id], "DELETE") => {
            Ok(Response::json(200, &connections::revoke(env, org, id)?))
        }
        (["connections", _], _) => Ok(Response::method_not_allowed("GET, DELETE")),
        (["connections", id, "check"], "POST") => {
            Ok(Response::json(200, &connections::check(env, org, id)?))
        }
        (["connections", _, "check"], _) => Ok(Response::method_not_allowed("POST")),
        _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
    }
}
