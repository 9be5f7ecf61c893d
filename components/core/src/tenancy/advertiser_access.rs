//! Acting for one advertiser of an organization: the way every capability calls TikTok.
//! It loads the connection that acts for the advertiser, decrypts its token, and marks
//! the connection for re-authorization when TikTok refuses the token.

use crate::ApiError;
use crate::platform::env::Env;
use crate::platform::outbound::BodySource;
use crate::tenancy::connections::{
    Advertiser, Status, advertiser_key, get, mark_reauthorization_required, tokens,
};
use crate::tenancy::org_id::OrgId;
use crate::tiktok::client::{Call, Reply};
use crate::tiktok::codes::{CodeClass, TikTokError};

/// Acting for one advertiser of an organization: its connection and decrypted token.
pub struct AdvertiserAccess {
    pub org: OrgId,
    pub connection_id: String,
    pub advertiser: Advertiser,
    access_token: String,
}

impl std::fmt::Debug for AdvertiserAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdvertiserAccess")
            .field("org", &self.org)
            .field("connection_id", &self.connection_id)
            .field("advertiser", &self.advertiser)
            .finish_non_exhaustive()
    }
}

impl AdvertiserAccess {
    /// Loads the connection acting for `advertiser_id` and decrypts its token. 404 when
    /// the organization has no connection for it; 409 when it needs re-authorization.
    pub fn load(env: &Env, org: &OrgId, advertiser_id: &str) -> Result<Self, ApiError> {
        if advertiser_id.is_empty()
            || advertiser_id.len() > 32
            || !advertiser_id.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ApiError::invalid(
                "advertiser_id",
                "must be TikTok's numeric id",
            ));
        }
        let not_connected = || {
            ApiError::NotFound(format!(
                "advertiser {advertiser_id} is not connected to organization {org}"
            ))
        };
        let id = env
            .kv
            .get(&advertiser_key(org, advertiser_id))?
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(not_connected)?;
        let c = get(env, org, &id).map_err(|_| not_connected())?;
        match c.status {
            Status::Active => {}
            Status::ReauthorizationRequired => {
                return Err(ApiError::Conflict(format!(
                    "connection {id} for advertiser {advertiser_id} needs re-authorization ({})",
                    c.last_error
                        .as_deref()
                        .unwrap_or("TikTok refused its token")
                )));
            }
            Status::Revoked => return Err(not_connected()),
        }
        let advertiser = c
            .advertisers
            .iter()
            .find(|a| a.advertiser_id == advertiser_id)
            .cloned()
            .ok_or_else(not_connected)?;
        let tokens = tokens(env, org, &id)?;
        Ok(AdvertiserAccess {
            org: org.clone(),
            connection_id: id,
            advertiser,
            access_token: tokens.access_token,
        })
    }

    /// The decrypted token, for calls made on this advertiser's behalf elsewhere in core.
    pub(crate) fn token(&self) -> &str {
        &self.access_token
    }

    /// Calls TikTok with this advertiser's token (`Access-Token`), with retries for the
    /// retryable codes. A refused token marks the connection for re-authorization.
    pub fn call(&self, env: &Env, call: Call) -> Result<Reply, ApiError> {
        let result = env.tiktok()?.call(&call.token(&self.access_token));
        self.answer(env, result)
    }

    /// Like [`call`](Self::call) with the body streamed from `body` (uploads), once.
    pub fn call_streaming(
        &self,
        env: &Env,
        call: Call,
        content_type: &str,
        body: &mut dyn BodySource,
    ) -> Result<Reply, ApiError> {
        let result =
            env.tiktok()?
                .call_streaming(&call.token(&self.access_token), content_type, body);
        self.answer(env, result)
    }

    fn answer(&self, env: &Env, result: Result<Reply, TikTokError>) -> Result<Reply, ApiError> {
        match result {
            Ok(reply) => Ok(reply),
            Err(e) => {
                if e.class() == CodeClass::Reauthorize {
                    mark_reauthorization_required(env, &self.org, &self.connection_id, &e)?;
                }
                Err(e.into())
            }
        }
    }
}
