//! The HTTP surface of the `campaign-ops` component, under
//! `/v1/orgs/{org}/advertisers/{advertiser_id}/` (admin or the org's key):
//!
//! | route | does |
//! |---|---|
//! | `GET/POST campaigns`, `adgroups`, `ads` | list (TikTok's paging) / create (checked; `Idempotency-Key`) |
//! | `GET/PATCH {kind}/{id}` | one entity (deleted included) / update (checked against TikTok's copy) |
//! | `POST {kind}/status` `{operation_status, ids}` | ENABLE/DISABLE/DELETE, any number of ids in batches of 20, per-id results |
//! | `POST videos` (raw file body), `GET videos/{id}` | checked upload, then TikTok's processing state |
//! | `GET/POST identities` | CUSTOMIZED_USER, AUTH_CODE and the org's TT_USER identities / a new CUSTOMIZED_USER one |
//! | `POST spark/authorize`, `GET spark/posts`, `POST spark/ads` | Spark Ads from a creator's post code |
//! | `GET/POST audiences`, `POST audiences/lookalikes` | custom audiences from identifier files; lookalikes |
//! | `GET/POST catalogs`, `POST catalogs/{id}/products` | catalogs and product upserts by `sku_id` |

use crate::ApiError;
use crate::ads::entities::{self, ListQuery};
use crate::ads::idempotency::{self, Outcome};
use crate::ads::rules::{Kind, is_id};
use crate::platform::env::Env;
use crate::platform::http::{Request, Response, segments};
use crate::tenancy::access::authorize_org;
use crate::tenancy::advertiser_access::AdvertiserAccess;
use crate::{ads::audiences, ads::catalog, ads::spark_ads, ads::video};

/// Whether `req`'s body should be streamed to [`handle_streamed`] rather than read whole
/// (video uploads, up to 500 MB).
pub fn is_streamed(req: &Request) -> bool {
    req.method == "POST"
        && matches!(
            segments(&req.path).as_slice(),
            ["v1", "orgs", _, "advertisers", _, "videos"]
        )
}

/// Handles a request whose body has been read into `req.body`.
pub fn handle(env: &Env, req: &Request) -> Result<Response, ApiError> {
    handle_streamed(env, req, &mut req.body.as_slice())
}

/// Handles a request whose body (for [`is_streamed`] routes) is read from `body`.
pub fn handle_streamed(
    env: &Env,
    req: &Request,
    body: &mut dyn std::io::Read,
) -> Result<Response, ApiError> {
    let path = segments(&req.path);
    let ["v1", "orgs", org, "advertisers", advertiser, rest @ ..] = path.as_slice() else {
        return Err(ApiError::NotFound(format!("no route for {}", req.path)));
    };
    let org = authorize_org(env, req, org)?;
    let method = req.method.as_str();
    let access = || AdvertiserAccess::load(env, &org, advertiser);
    let key = || idempotency::parse_key(req.header("idempotency-key"));
    match (rest, method) {
        ([plural], "GET") if Kind::from_plural(plural).is_some() => {
            let kind = Kind::from_plural(plural).expect("checked");
            let q = list_query(req, kind)?;
            Ok(Response::json(
                200,
                &entities::list(env, &access()?, kind, &q)?,
            ))
        }
        ([plural], "POST") if Kind::from_plural(plural).is_some() => {
            let kind = Kind::from_plural(plural).expect("checked");
            let body = req.json()?;
            let key = key()?;
            outcome(entities::create(
                env,
                &access()?,
                kind,
                &body,
                key.as_deref(),
            )?)
        }
        ([plural, "status"], "POST") if Kind::from_plural(plural).is_some() => {
            let kind = Kind::from_plural(plural).expect("checked");
            let body = req.json()?;
            Ok(Response::json(
                200,
                &entities::set_status(env, &access()?, kind, &body)?,
            ))
        }
        ([plural, "status"], _) if Kind::from_plural(plural).is_some() => {
            Ok(Response::method_not_allowed("POST"))
        }
        ([plural, id], "GET") if Kind::from_plural(plural).is_some() => {
            let kind = Kind::from_plural(plural).expect("checked");
            Ok(Response::json(
                200,
                &entities::get(env, &access()?, kind, id)?,
            ))
        }
        ([plural, id], "PATCH") if Kind::from_plural(plural).is_some() => {
            let kind = Kind::from_plural(plural).expect("checked");
            let body = req.json()?;
            Ok(Response::json(
                200,
                &entities::update(env, &access()?, kind, id, &body)?,
            ))
        }
        ([plural], _) if Kind::from_plural(plural).is_some() => {
            Ok(Response::method_not_allowed("GET, POST"))
        }
        ([plural, _], _) if Kind::from_plural(plural).is_some() => {
            Ok(Response::method_not_allowed("GET, PATCH"))
        }
        (["videos"], "POST") => {
            let key = key()?;
            let upload = video::UploadRequest::from_request(req)?;
            outcome(video::upload_idempotent(
                env,
                &access()?,
                &upload,
                body,
                key.as_deref(),
            )?)
        }
        (["videos", id], "GET") => Ok(Response::json(200, &video::status(env, &access()?, id)?)),
        (["identities"], "GET") => Ok(Response::json(
            200,
            &spark_ads::identities(env, &access()?)?,
        )),
        (["identities"], "POST") => {
            let body = req.json()?;
            let key = key()?;
            outcome(spark_ads::create_identity(
                env,
                &access()?,
                &body,
                key.as_deref(),
            )?)
        }
        (["spark", "authorize"], "POST") => {
            let body = req.json()?;
            Ok(Response::json(
                200,
                &spark_ads::authorize(env, &access()?, &body)?,
            ))
        }
        (["spark", "posts"], "GET") => {
            let (page, page_size) = paging(req, 50)?;
            Ok(Response::json(
                200,
                &spark_ads::posts(env, &access()?, page, page_size)?,
            ))
        }
        (["spark", "ads"], "POST") => {
            let body = req.json()?;
            let key = key()?;
            outcome(spark_ads::create_ad(
                env,
                &access()?,
                &body,
                key.as_deref(),
            )?)
        }
        (["audiences"], "GET") => {
            let (page, page_size) = paging(req, 100)?;
            Ok(Response::json(
                200,
                &audiences::list(env, &access()?, page, page_size)?,
            ))
        }
        (["audiences"], "POST") => {
            let key = key()?;
            let upload = audiences::FileAudience::from_request(req)?;
            outcome(audiences::create(
                env,
                &access()?,
                &upload,
                &req.body,
                key.as_deref(),
            )?)
        }
        (["audiences", "lookalikes"], "POST") => {
            let body = req.json()?;
            let key = key()?;
            outcome(audiences::create_lookalike(
                env,
                &access()?,
                &body,
                key.as_deref(),
            )?)
        }
        (["catalogs"], "GET") => {
            let bc_id = req.query_param("bc_id").ok_or_else(|| {
                ApiError::invalid(
                    "bc_id",
                    "is required (catalogs belong to a Business Center)",
                )
            })?;
            let (page, page_size) = paging(req, 1000)?;
            Ok(Response::json(
                200,
                &catalog::list(env, &access()?, &bc_id, page, page_size)?,
            ))
        }
        (["catalogs"], "POST") => {
            let body = req.json()?;
            let key = key()?;
            outcome(catalog::create(env, &access()?, &body, key.as_deref())?)
        }
        (["catalogs", id, "products"], "POST") => {
            let body = req.json()?;
            Ok(Response::json(
                200,
                &catalog::upsert_products(env, &access()?, id, &body)?,
            ))
        }
        (["videos"] | ["identities"] | ["audiences"] | ["catalogs"], _) => {
            Ok(Response::method_not_allowed(if rest == ["videos"] {
                "POST"
            } else {
                "GET, POST"
            }))
        }
        (["videos", _] | ["spark", "posts"], _) => Ok(Response::method_not_allowed("GET")),
        (
            ["spark", "authorize" | "ads"]
            | ["audiences", "lookalikes"]
            | ["catalogs", _, "products"],
            _,
        ) => Ok(Response::method_not_allowed("POST")),
        _ => Err(ApiError::NotFound(format!("no route for {}", req.path))),
    }
}

/// A create's answer; a replay carries `Idempotent-Replayed: true`.
fn outcome(o: Outcome) -> Result<Response, ApiError> {
    let mut r = Response::json(o.status, &o.response);
    if o.replayed {
        r.headers
            .push(("idempotent-replayed".into(), "true".into()));
    }
    Ok(r)
}

/// `page` (≥ 1) and `page_size` (1..=`max`) from the query string.
pub fn paging(req: &Request, max: u32) -> Result<(u32, u32), ApiError> {
    let number = |name: &str, default: u32, max: u32| -> Result<u32, ApiError> {
        match req.query_param(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(name, format!("must be a whole number from 1 to {max}"))
                }),
        }
    };
    Ok((
        number("page", 1, 100_000)?,
        number("page_size", max.min(100), max)?,
    ))
}

fn id_param(req: &Request, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = req.query_param(name) else {
        return Ok(None);
    };
    let ids: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if ids.is_empty() || ids.len() > 100 || !ids.iter().all(|i| is_id(i)) {
        return Err(ApiError::invalid(
            name,
            "must be 1 to 100 numeric ids, separated by commas",
        ));
    }
    Ok(Some(ids))
}

fn list_query(req: &Request, kind: Kind) -> Result<ListQuery, ApiError> {
    let (page, page_size) = paging(req, 1000)?;
    let status = match (
        req.query_param("status"),
        req.query_param("include_deleted").as_deref(),
    ) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "include_deleted",
                "give status or include_deleted, not both",
            ));
        }
        (Some(s), None) => {
            let prefix = format!("{}_STATUS_", kind.path().to_ascii_uppercase());
            if !s.starts_with(&prefix)
                || !s[prefix.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_')
            {
                return Err(ApiError::invalid(
                    "status",
                    format!("must be a TikTok secondary status, {prefix}…"),
                ));
            }
            Some(s)
        }
        (None, Some("true")) => Some(kind.all_statuses().to_string()),
        (None, Some("false")) | (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "include_deleted",
                "must be true or false",
            ));
        }
    };
    let name = req.query_param("name");
    if name.as_ref().is_some_and(|n| n.chars().count() > 512) {
        return Err(ApiError::invalid("name", "must be at most 512 characters"));
    }
    Ok(ListQuery {
        page,
        page_size,
        ids: id_param(req, "ids")?,
        // A campaign list filters by `ids`; `campaign_id` is for its children.
        campaign_ids: if kind == Kind::Campaign {
            None
        } else {
            id_param(req, "campaign_id")?
        },
        adgroup_ids: if kind == Kind::Ad {
            id_param(req, "adgroup_id")?
        } else {
            None
        },
        name,
        status,
    })
}
