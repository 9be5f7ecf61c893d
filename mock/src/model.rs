//! The records the mock keeps in its `State`: advertisers, tokens, pixels and events,
//! campaigns/ad groups/ads, Spark Ads post codes and identities, catalogs, videos,
//! audiences, and its own request log and faults.
//!
//! Plain data (with small accessors) and no endpoints, so that `state` can hold them
//! without depending on the API-area modules that serve them; those modules re-export
//! their types from here under their old paths.

use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

// Accounts and access.

#[derive(Debug, Clone, PartialEq)]
pub struct Advertiser {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub timezone: String,
}

#[derive(Debug, Clone)]
pub struct AuthCode {
    pub app_id: String,
    pub advertiser_ids: Vec<String>,
    pub issued: Instant,
    pub used: bool,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub app_id: String,
    pub advertiser_ids: Vec<String>,
    pub revoked: bool,
}

#[derive(Debug, Clone)]
pub struct CreatorToken {
    pub open_id: String,
    pub access_token: String,
    pub access_expires: Instant,
    pub refresh_expires: Instant,
}

// Pixels and the Events API.

#[derive(Debug, Clone, PartialEq)]
pub struct Pixel {
    pub id: String,
    /// What the Events API calls `event_source_id`: 20 uppercase letters and digits.
    pub code: String,
    pub name: String,
    pub advertiser_id: String,
}

impl Pixel {
    pub fn to_json(&self) -> Value {
        serde_json::json!({"pixel_id": self.id, "pixel_code": self.code, "pixel_name": self.name, "advertiser_id": self.advertiser_id, "activity_status": "ACTIVE"})
    }
}

/// An Events API event the mock received (duplicates are kept, flagged).
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub source: String,
    pub source_id: String,
    pub event: String,
    pub event_id: Option<String>,
    pub test_event_code: Option<String>,
    /// Same (source id, event, event_id) as an event within the last 48 h: TikTok drops it.
    pub duplicate: bool,
    pub body: Value,
    pub received: Instant,
}

/// What TikTok deduplicates events on: (event_source_id, event, event_id).
pub type EventKey = (String, String, String);

impl StoredEvent {
    pub fn key(&self) -> Option<EventKey> {
        let id = self.event_id.clone()?;
        Some((self.source_id.clone(), self.event.clone(), id))
    }
}

// Campaigns, ad groups and ads.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Campaign,
    AdGroup,
    Ad,
}

impl Kind {
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Campaign => "campaign_id",
            Kind::AdGroup => "adgroup_id",
            Kind::Ad => "ad_id",
        }
    }
    pub(crate) fn ids_field(self) -> &'static str {
        match self {
            Kind::Campaign => "campaign_ids",
            Kind::AdGroup => "adgroup_ids",
            Kind::Ad => "ad_ids",
        }
    }
    pub fn name_field(self) -> &'static str {
        match self {
            Kind::Campaign => "campaign_name",
            Kind::AdGroup => "adgroup_name",
            Kind::Ad => "ad_name",
        }
    }
    pub(crate) fn status_prefix(self) -> &'static str {
        match self {
            Kind::Campaign => "CAMPAIGN_STATUS",
            Kind::AdGroup => "ADGROUP_STATUS",
            Kind::Ad => "AD_STATUS",
        }
    }
    pub(crate) fn list_field(self) -> &'static str {
        match self {
            Kind::Campaign => "campaign_list",
            Kind::AdGroup => "adgroup_list",
            Kind::Ad => "ad_list",
        }
    }
}

/// One stored campaign, ad group or ad, as TikTok returns it.
#[derive(Debug, Clone)]
pub struct Entity {
    pub kind: Kind,
    pub fields: Map<String, Value>,
}

impl Entity {
    pub fn id(&self) -> &str {
        self.fields[self.kind.id_field()]
            .as_str()
            .unwrap_or_default()
    }
    pub fn advertiser_id(&self) -> &str {
        self.fields["advertiser_id"].as_str().unwrap_or_default()
    }
    pub fn deleted(&self) -> bool {
        self.fields["operation_status"] == "DELETE"
    }
    pub(crate) fn set_status(&mut self, status: &str) {
        let secondary = format!(
            "{}_{}",
            self.kind.status_prefix(),
            if status == "ENABLE" {
                "ENABLE"
            } else if status == "DISABLE" {
                "DISABLE"
            } else {
                "DELETE"
            }
        );
        self.fields.insert("operation_status".into(), json!(status));
        self.fields
            .insert("secondary_status".into(), json!(secondary));
    }
}

// Identities and Spark Ads.

/// A creator's post offered for Spark Ads through a post code.
#[derive(Debug, Clone)]
pub struct PostCode {
    pub code: String,
    pub item_id: String,
    pub identity_id: String,
    pub display_name: String,
    /// The ad account it is bound to by `/tt_video/authorize/`.
    pub advertiser_id: Option<String>,
}

impl PostCode {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "item_info": {"auth_code": self.code, "item_id": self.item_id, "text": "A creator's post", "status": "AUTHORIZED"},
            "user_info": {"identity_id": self.identity_id, "display_name": self.display_name, "identity_type": "AUTH_CODE"},
            "video_info": {"duration": 15.0, "width": 1080, "height": 1920, "file_size": 4_812_345, "format": "mp4"},
        })
    }
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub id: String,
    pub advertiser_id: String,
    pub display_name: String,
    pub image_uri: Option<String>,
}

// Catalogs and products.

#[derive(Debug, Clone)]
pub struct Catalog {
    pub id: String,
    pub bc_id: String,
    pub name: String,
    pub catalog_type: String,
    pub conf: Value,
    /// Products by sku_id.
    pub products: Map<String, Value>,
}

/// One upload's per-product outcome (`/catalog/product/log/`).
#[derive(Debug, Clone)]
pub struct FeedLog {
    pub id: String,
    pub catalog_id: String,
    pub results: Vec<Value>,
}

// Ad videos and custom audiences.

#[derive(Debug, Clone)]
pub struct Video {
    pub id: String,
    pub advertiser_id: String,
    pub info: Value,
    pub uploaded: Instant,
}

#[derive(Debug, Clone)]
pub struct AudienceFile {
    pub path: String,
    pub advertiser_id: String,
    pub calculate_type: String,
    pub members: u64,
}

#[derive(Debug, Clone)]
pub struct Audience {
    pub id: String,
    pub advertiser_id: String,
    pub name: String,
    pub members: u64,
    pub lookalike: bool,
    pub calculate_type: Option<String>,
}

// The mock's own bookkeeping (`/_mock/`).

/// A request the mock received, for `GET /_mock/requests`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
    pub code: i64,
}

/// A scripted response for the next matching request (`POST /_mock/inject`).
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests whose path contains this (all when empty).
    pub path: String,
    pub kind: FaultKind,
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    /// HTTP 200 with this envelope code and message.
    Code { code: i64, message: String },
    /// An HTTP error with an HTML body, as a proxy in front of TikTok sends.
    Http { status: u16 },
    /// Only the delay; then the request is handled normally.
    DelayOnly,
}
