//! The rules a campaign, ad group or ad must meet before TikTok is called
//! (tiktok-api.md §5). TikTok's own SDK checks nothing; a refusal from TikTok costs a
//! round trip and a rate-limit token and often names no field. These checks name the field.
//!
//! Bodies are TikTok-shaped JSON objects (the same field names TikTok documents), so every
//! field TikTok takes passes through; the fields checked here are the ones whose mistakes
//! are common and costly. Where tiktok-api.md marks an enum UNCERTAIN, the list below is
//! the values seen across TikTok's docs and clients.

use crate::ApiError;
use chrono::NaiveDateTime;
use serde_json::{Map, Value};

/// Campaigns, ad groups and ads share paths, ids and status calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Campaign,
    AdGroup,
    Ad,
}

impl Kind {
    /// TikTok's path segment (`/campaign/…`, `/adgroup/…`, `/ad/…`).
    pub fn path(self) -> &'static str {
        match self {
            Kind::Campaign => "campaign",
            Kind::AdGroup => "adgroup",
            Kind::Ad => "ad",
        }
    }
    /// Our route segment (`campaigns`, `adgroups`, `ads`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Campaign => "campaigns",
            Kind::AdGroup => "adgroups",
            Kind::Ad => "ads",
        }
    }
    pub fn id_field(self) -> &'static str {
        match self {
            Kind::Campaign => "campaign_id",
            Kind::AdGroup => "adgroup_id",
            Kind::Ad => "ad_id",
        }
    }
    pub fn ids_field(self) -> &'static str {
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
    /// The `secondary_status` filter value that includes deleted entities.
    pub fn all_statuses(self) -> &'static str {
        match self {
            Kind::Campaign => "CAMPAIGN_STATUS_ALL",
            Kind::AdGroup => "ADGROUP_STATUS_ALL",
            Kind::Ad => "AD_STATUS_ALL",
        }
    }
    pub fn from_plural(s: &str) -> Option<Kind> {
        [Kind::Campaign, Kind::AdGroup, Kind::Ad]
            .into_iter()
            .find(|k| k.plural() == s)
    }
}

pub const OBJECTIVES: &[&str] = &[
    "REACH",
    "RF_REACH",
    "TRAFFIC",
    "VIDEO_VIEWS",
    "ENGAGEMENT",
    "COMMUNITY_INTERACTION",
    "APP_PROMOTION",
    "LEAD_GENERATION",
    "WEB_CONVERSIONS",
    "PRODUCT_SALES",
];
pub const BUDGET_MODES: &[&str] = &[
    "BUDGET_MODE_INFINITE",
    "BUDGET_MODE_DAY",
    "BUDGET_MODE_TOTAL",
    "BUDGET_MODE_DYNAMIC_DAILY_BUDGET",
];
pub const AGE_GROUPS: &[&str] = &[
    "AGE_13_17",
    "AGE_18_24",
    "AGE_25_34",
    "AGE_35_44",
    "AGE_45_54",
    "AGE_55_100",
];
pub const GENDERS: &[&str] = &["GENDER_UNLIMITED", "GENDER_MALE", "GENDER_FEMALE"];
pub const PLACEMENT_TYPES: &[&str] = &["PLACEMENT_TYPE_AUTOMATIC", "PLACEMENT_TYPE_NORMAL"];
pub const PLACEMENTS: &[&str] = &[
    "PLACEMENT_TIKTOK",
    "PLACEMENT_PANGLE",
    "PLACEMENT_GLOBAL_APP_BUNDLE",
];
pub const SCHEDULE_TYPES: &[&str] = &["SCHEDULE_START_END", "SCHEDULE_FROM_NOW"];
pub const OPERATION_STATUSES: &[&str] = &["ENABLE", "DISABLE"];
pub const STATUS_ACTIONS: &[&str] = &["ENABLE", "DISABLE", "DELETE"];
pub const PRODUCT_SOURCES: &[&str] = &["CATALOG", "STORE"];
pub const AD_FORMATS: &[&str] = &["SINGLE_VIDEO", "SINGLE_IMAGE", "CAROUSEL_ADS"];
pub const IDENTITY_TYPES: &[&str] = &["CUSTOMIZED_USER", "AUTH_CODE", "TT_USER", "BC_AUTH_TT"];

/// The optimization goals each objective takes.
pub fn optimization_goals(objective: &str) -> &'static [&'static str] {
    match objective {
        "REACH" | "RF_REACH" => &["REACH"],
        "TRAFFIC" => &["CLICK", "LANDING_PAGE_VIEW"],
        "VIDEO_VIEWS" => &["ENGAGED_VIEW", "ENGAGED_VIEW_FIFTEEN", "VIDEO_VIEW"],
        "ENGAGEMENT" | "COMMUNITY_INTERACTION" => &["FOLLOWERS", "PROFILE_VIEWS"],
        "APP_PROMOTION" => &["INSTALL", "IN_APP_EVENT", "VALUE", "CLICK"],
        "LEAD_GENERATION" => &["LEAD_GENERATION", "CLICK"],
        "WEB_CONVERSIONS" => &["CONVERT", "VALUE", "CLICK", "LANDING_PAGE_VIEW"],
        "PRODUCT_SALES" => &["CONVERT", "VALUE", "CLICK"],
        _ => &[],
    }
}

/// The billing event an optimization goal is bought with.
pub fn billing_event_for(goal: &str) -> &'static str {
    match goal {
        "CLICK" => "CPC",
        "REACH" => "CPM",
        "ENGAGED_VIEW" | "ENGAGED_VIEW_FIFTEEN" | "VIDEO_VIEW" => "CPV",
        _ => "OCPM",
    }
}

/// Ad groups that need a pixel: every web-conversion one (the issue and TikTok tie the
/// objective to a pixel), and catalog sales optimizing for conversions.
fn needs_pixel(objective: &str, goal: &str) -> bool {
    objective == "WEB_CONVERSIONS" || objective == "PRODUCT_SALES" && goal == "CONVERT"
}

/// Goals that optimize for one pixel event, named in `optimization_event`.
fn needs_optimization_event(goal: &str) -> bool {
    matches!(goal, "CONVERT" | "VALUE")
}

/// Minimum budgets in the account currency (tiktok-api.md §5: $50 campaign, $20 ad
/// group daily; lifetime ≥ the daily minimum per scheduled day). Configurable because
/// other currencies have their own "equivalents".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub min_campaign_budget: f64,
    pub min_adgroup_budget: f64,
    /// Seconds since the epoch, for "in the future" checks.
    pub now: i64,
}

impl Rules {
    pub fn new(now: i64) -> Self {
        Rules {
            min_campaign_budget: 50.0,
            min_adgroup_budget: 20.0,
            now,
        }
    }
}

/// A checked body: what to send TikTok (defaults filled in).
pub type Body = Map<String, Value>;

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::invalid(field, reason)
}

fn as_object(body: &Value) -> Result<Body, ApiError> {
    body.as_object()
        .cloned()
        .ok_or_else(|| invalid("body", "must be a JSON object"))
}

fn opt_str<'a>(b: &'a Body, field: &str) -> Result<Option<&'a str>, ApiError> {
    match b.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn req_str<'a>(b: &'a Body, field: &str) -> Result<&'a str, ApiError> {
    opt_str(b, field)?.ok_or_else(|| invalid(field, "is required"))
}

fn name(b: &Body, field: &str, max: usize) -> Result<(), ApiError> {
    let n = req_str(b, field)?;
    let len = n.chars().count();
    if n.trim().is_empty() || len > max {
        return Err(invalid(field, format!("must be 1 to {max} characters")));
    }
    if n.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn one_of<'a>(
    b: &'a Body,
    field: &str,
    allowed: &[&str],
    required: bool,
) -> Result<Option<&'a str>, ApiError> {
    match opt_str(b, field)? {
        None if required => Err(invalid(
            field,
            format!("is required; one of {}", allowed.join(", ")),
        )),
        None => Ok(None),
        Some(v) if allowed.contains(&v) => Ok(Some(v)),
        Some(v) => Err(invalid(
            field,
            format!("{v:?} is not one of {}", allowed.join(", ")),
        )),
    }
}

fn number(b: &Body, field: &str) -> Result<Option<f64>, ApiError> {
    match b.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|n| n.is_finite() && *n >= 0.0)
            .map(Some)
            .ok_or_else(|| invalid(field, "must be a number ≥ 0")),
    }
}

fn boolean(b: &Body, field: &str) -> Result<Option<bool>, ApiError> {
    match b.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(v)) => Ok(Some(*v)),
        Some(_) => Err(invalid(field, "must be true or false")),
    }
}

/// A TikTok id: digits, as a string (v1.3 ids are strings; never numbers through f64).
pub fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit())
}

fn id(b: &Body, field: &str) -> Result<Option<String>, ApiError> {
    match opt_str(b, field)? {
        None => Ok(None),
        Some(v) if is_id(v) => Ok(Some(v.to_string())),
        Some(_) => Err(invalid(field, "must be TikTok's numeric id, as a string")),
    }
}

fn string_list(b: &Body, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    match b.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(field, "must be a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid(field, "must be a list of strings")),
    }
}

fn enum_list(b: &Body, field: &str, allowed: &[&str]) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = string_list(b, field)? else {
        return Ok(None);
    };
    for (i, v) in list.iter().enumerate() {
        if !allowed.contains(&v.as_str()) {
            return Err(invalid(
                &format!("{field}[{i}]"),
                format!("{v:?} is not one of {}", allowed.join(", ")),
            ));
        }
    }
    Ok(Some(list))
}

fn id_list(b: &Body, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(list) = string_list(b, field)? else {
        return Ok(None);
    };
    for (i, v) in list.iter().enumerate() {
        if !is_id(v) {
            return Err(invalid(
                &format!("{field}[{i}]"),
                "must be TikTok's numeric id, as a string",
            ));
        }
    }
    Ok(Some(list))
}

/// TikTok's schedule time: `YYYY-MM-DD HH:MM:SS`, UTC+0 (§5).
pub fn parse_time(field: &str, s: &str) -> Result<i64, ApiError> {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc().timestamp())
        .map_err(|_| invalid(field, "must be a UTC time, YYYY-MM-DD HH:MM:SS"))
}

fn check_budget(b: &Body, mode: &str, minimum: f64, days: i64, what: &str) -> Result<(), ApiError> {
    let amount = number(b, "budget")?;
    if mode == "BUDGET_MODE_INFINITE" {
        return Ok(());
    }
    let amount = amount.ok_or_else(|| invalid("budget", format!("is required with {mode}")))?;
    let (needed, why) = if mode == "BUDGET_MODE_TOTAL" && days > 1 {
        (
            minimum * days as f64,
            format!("{minimum} per scheduled day × {days} days"),
        )
    } else {
        (minimum, format!("the {what} minimum"))
    };
    if amount < needed {
        return Err(invalid(
            "budget",
            format!("{amount} is below {needed} ({why})"),
        ));
    }
    Ok(())
}

/// Checks a campaign create body; fills `budget_mode` (INFINITE) and `operation_status`.
pub fn campaign_create(body: &Value, rules: &Rules) -> Result<Body, ApiError> {
    let mut b = as_object(body)?;
    name(&b, "campaign_name", 512)?;
    let objective = one_of(&b, "objective_type", OBJECTIVES, true)?.unwrap_or_default();
    let mode = one_of(&b, "budget_mode", BUDGET_MODES, false)?
        .unwrap_or("BUDGET_MODE_INFINITE")
        .to_string();
    let cbo = boolean(&b, "budget_optimize_on")?.unwrap_or(false);
    if mode == "BUDGET_MODE_DYNAMIC_DAILY_BUDGET" && !cbo {
        return Err(invalid(
            "budget_mode",
            "BUDGET_MODE_DYNAMIC_DAILY_BUDGET needs budget_optimize_on: true",
        ));
    }
    if cbo && mode == "BUDGET_MODE_INFINITE" {
        return Err(invalid(
            "budget_mode",
            "campaign budget optimization needs a budget: BUDGET_MODE_DAY, BUDGET_MODE_TOTAL or BUDGET_MODE_DYNAMIC_DAILY_BUDGET",
        ));
    }
    check_budget(&b, &mode, rules.min_campaign_budget, 1, "campaign")?;
    one_of(&b, "operation_status", OPERATION_STATUSES, false)?;
    one_of(
        &b,
        "campaign_type",
        &["REGULAR_CAMPAIGN", "IOS14_CAMPAIGN"],
        false,
    )?;
    if let Some(industries) = string_list(&b, "special_industries")? {
        for (i, v) in industries.iter().enumerate() {
            if !matches!(v.as_str(), "HOUSING" | "EMPLOYMENT" | "CREDIT") {
                return Err(invalid(
                    &format!("special_industries[{i}]"),
                    format!("{v:?} is not one of HOUSING, EMPLOYMENT, CREDIT"),
                ));
            }
        }
    }
    match objective {
        "PRODUCT_SALES" => {
            one_of(&b, "campaign_product_source", PRODUCT_SOURCES, true)?;
        }
        "APP_PROMOTION" => {
            one_of(
                &b,
                "app_promotion_type",
                &[
                    "APP_INSTALL",
                    "APP_RETARGETING",
                    "APP_PREREGISTRATION",
                    "APP_POSTS_PROMOTION",
                    "MINIS",
                ],
                true,
            )?;
        }
        _ => {}
    }
    b.insert("budget_mode".into(), Value::String(mode));
    b.entry("operation_status")
        .or_insert_with(|| Value::String("ENABLE".into()));
    Ok(b)
}

/// What an ad group's checks need to know of its campaign (read from TikTok).
#[derive(Debug, Clone, Default)]
pub struct CampaignFacts {
    pub objective_type: String,
    pub budget_optimize_on: bool,
    pub product_source: Option<String>,
    pub deleted: bool,
}

impl CampaignFacts {
    pub fn from_tiktok(campaign: &Value) -> Self {
        CampaignFacts {
            objective_type: campaign["objective_type"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            budget_optimize_on: campaign["budget_optimize_on"].as_bool().unwrap_or(false),
            product_source: campaign["campaign_product_source"]
                .as_str()
                .map(str::to_string),
            deleted: campaign["operation_status"] == "DELETE"
                || campaign["secondary_status"] == "CAMPAIGN_STATUS_DELETE",
        }
    }
}

/// Checks the parts of an ad group body that need no campaign: its `campaign_id`.
pub fn adgroup_campaign_id(body: &Value) -> Result<String, ApiError> {
    let b = as_object(body)?;
    id(&b, "campaign_id")?.ok_or_else(|| invalid("campaign_id", "is required"))
}

/// Checks an ad group create body against its campaign; fills `billing_event` from the
/// optimization goal, `schedule_type` and `operation_status`.
pub fn adgroup_create(
    body: &Value,
    campaign: &CampaignFacts,
    rules: &Rules,
) -> Result<Body, ApiError> {
    let mut b = as_object(body)?;
    if campaign.deleted {
        return Err(invalid("campaign_id", "the campaign has been deleted"));
    }
    name(&b, "adgroup_name", 512)?;
    let mode = one_of(
        &b,
        "budget_mode",
        &BUDGET_MODES[..3],
        !campaign.budget_optimize_on,
    )?
    .unwrap_or("BUDGET_MODE_INFINITE")
    .to_string();
    let schedule_type = one_of(&b, "schedule_type", SCHEDULE_TYPES, false)?
        .unwrap_or("SCHEDULE_FROM_NOW")
        .to_string();
    let start = opt_str(&b, "schedule_start_time")?
        .map(|s| parse_time("schedule_start_time", s))
        .transpose()?;
    let end = opt_str(&b, "schedule_end_time")?
        .map(|s| parse_time("schedule_end_time", s))
        .transpose()?;
    if let Some(start) = start
        && start < rules.now - 60
    {
        return Err(invalid("schedule_start_time", "must not be in the past"));
    }
    let days = match (schedule_type.as_str(), end) {
        ("SCHEDULE_START_END", None) => {
            return Err(invalid(
                "schedule_end_time",
                "is required with SCHEDULE_START_END",
            ));
        }
        (_, Some(end)) => {
            let from = start.unwrap_or(rules.now);
            if end <= from {
                return Err(invalid(
                    "schedule_end_time",
                    "must be later than schedule_start_time (or now)",
                ));
            }
            (end - from + 86_399) / 86_400
        }
        _ => 1,
    };
    if mode == "BUDGET_MODE_TOTAL" && schedule_type != "SCHEDULE_START_END" {
        return Err(invalid(
            "schedule_type",
            "a lifetime budget (BUDGET_MODE_TOTAL) needs SCHEDULE_START_END",
        ));
    }
    if !campaign.budget_optimize_on {
        check_budget(&b, &mode, rules.min_adgroup_budget, days, "ad group")?;
    }
    let goals = optimization_goals(&campaign.objective_type);
    let goal = one_of(&b, "optimization_goal", goals, true)
        .map_err(|e| match e {
            ApiError::InvalidInput(f) => invalid(
                &f.field,
                format!("{} (for a {} campaign)", f.reason, campaign.objective_type),
            ),
            e => e,
        })?
        .unwrap_or_default()
        .to_string();
    let billing = billing_event_for(&goal);
    match opt_str(&b, "billing_event")? {
        Some(given) if given != billing => {
            return Err(invalid(
                "billing_event",
                format!("optimization_goal {goal} is billed as {billing}, not {given}"),
            ));
        }
        _ => {
            b.insert("billing_event".into(), Value::String(billing.into()));
        }
    }
    if needs_pixel(&campaign.objective_type, &goal) {
        if id(&b, "pixel_id")?.is_none() {
            return Err(invalid(
                "pixel_id",
                format!(
                    "is required for a {} campaign optimizing for {goal}",
                    campaign.objective_type
                ),
            ));
        }
        if needs_optimization_event(&goal) {
            req_str(&b, "optimization_event")?;
        }
    } else {
        id(&b, "pixel_id")?;
    }
    if campaign.objective_type == "PRODUCT_SALES"
        && campaign.product_source.as_deref() == Some("CATALOG")
        && id(&b, "catalog_id")?.is_none()
    {
        return Err(invalid(
            "catalog_id",
            "is required for a PRODUCT_SALES campaign with campaign_product_source CATALOG",
        ));
    }
    targeting(&b)?;
    one_of(&b, "operation_status", OPERATION_STATUSES, false)?;
    one_of(
        &b,
        "pacing",
        &["PACING_MODE_SMOOTH", "PACING_MODE_FAST"],
        false,
    )?;
    number(&b, "bid_price")?;
    b.insert("budget_mode".into(), Value::String(mode));
    b.insert("schedule_type".into(), Value::String(schedule_type));
    b.entry("operation_status")
        .or_insert_with(|| Value::String("ENABLE".into()));
    Ok(b)
}

/// Targeting: locations (required), ages, gender, languages, audiences, placements.
fn targeting(b: &Body) -> Result<(), ApiError> {
    match id_list(b, "location_ids")? {
        None => return Err(invalid("location_ids", "is required (at least one)")),
        Some(l) if l.is_empty() => {
            return Err(invalid("location_ids", "needs at least one location"));
        }
        Some(_) => {}
    }
    enum_list(b, "age_groups", AGE_GROUPS)?;
    one_of(b, "gender", GENDERS, false)?;
    if let Some(langs) = string_list(b, "languages")? {
        for (i, l) in langs.iter().enumerate() {
            let (lang, region) = l.split_once('-').unwrap_or((l, ""));
            let ok = (2..=3).contains(&lang.len())
                && lang.bytes().all(|c| c.is_ascii_lowercase())
                && (region.is_empty()
                    || (2..=4).contains(&region.len())
                        && region.bytes().all(|c| c.is_ascii_alphabetic()));
            if !ok {
                return Err(invalid(
                    &format!("languages[{i}]"),
                    format!("{l:?} is not a language code such as \"en\" or \"zh-Hant\""),
                ));
            }
        }
    }
    let included = id_list(b, "audience_ids")?.unwrap_or_default();
    let excluded = id_list(b, "excluded_audience_ids")?.unwrap_or_default();
    if let Some(both) = included.iter().find(|a| excluded.contains(a)) {
        return Err(invalid(
            "excluded_audience_ids",
            format!("audience {both} is both included and excluded"),
        ));
    }
    let placement_type = one_of(b, "placement_type", PLACEMENT_TYPES, false)?;
    let placements = enum_list(b, "placements", PLACEMENTS)?;
    if placement_type == Some("PLACEMENT_TYPE_NORMAL") && placements.is_none_or(|p| p.is_empty()) {
        return Err(invalid(
            "placements",
            "PLACEMENT_TYPE_NORMAL needs at least one placement",
        ));
    }
    Ok(())
}

/// What an update is checked against: the entity as TikTok has it.
pub fn update(kind: Kind, body: &Value, current: &Value, rules: &Rules) -> Result<Body, ApiError> {
    let b = as_object(body)?;
    for fixed in [
        "advertiser_id",
        "campaign_id",
        "adgroup_id",
        "ad_id",
        "objective_type",
    ] {
        if b.contains_key(fixed) {
            return Err(invalid(
                fixed,
                "cannot be changed; it is taken from the path",
            ));
        }
    }
    if b.contains_key("operation_status") {
        return Err(invalid(
            "operation_status",
            format!("is changed with POST …/{}/status", kind.plural()),
        ));
    }
    if b.contains_key(kind.name_field()) {
        name(&b, kind.name_field(), 512)?;
    }
    let mode = current["budget_mode"]
        .as_str()
        .unwrap_or("BUDGET_MODE_INFINITE");
    if let Some(new_mode) = opt_str(&b, "budget_mode")?
        && new_mode != mode
    {
        return Err(invalid(
            "budget_mode",
            format!("cannot change once created (it is {mode})"),
        ));
    }
    if b.contains_key("budget") {
        let (minimum, what) = match kind {
            Kind::Campaign => (rules.min_campaign_budget, "campaign"),
            _ => (rules.min_adgroup_budget, "ad group"),
        };
        let days = match (
            current["schedule_start_time"].as_str(),
            current["schedule_end_time"].as_str(),
        ) {
            (Some(s), Some(e)) => {
                let (s, e) = (
                    parse_time("schedule_start_time", s)?,
                    parse_time("schedule_end_time", e)?,
                );
                ((e - s.max(rules.now)) + 86_399).max(86_400) / 86_400
            }
            _ => 1,
        };
        check_budget(&b, mode, minimum, days, what)?;
    }
    if kind == Kind::Ad {
        if let Some(text) = opt_str(&b, "ad_text")? {
            ad_text("ad_text", text)?;
        }
        if let Some(u) = opt_str(&b, "landing_page_url")? {
            url("landing_page_url", u)?;
        }
    }
    if kind == Kind::AdGroup {
        if let Some(end) = opt_str(&b, "schedule_end_time")? {
            let end = parse_time("schedule_end_time", end)?;
            if end <= rules.now {
                return Err(invalid("schedule_end_time", "must be in the future"));
            }
        }
        if b.contains_key("location_ids") {
            targeting(&b)?;
        } else {
            enum_list(&b, "age_groups", AGE_GROUPS)?;
            one_of(&b, "gender", GENDERS, false)?;
        }
    }
    Ok(b)
}

/// Ad text: 12–100 characters, no emoji, `{}` or `#` (§5.1).
fn ad_text(field: &str, text: &str) -> Result<(), ApiError> {
    let len = text.chars().count();
    if !(12..=100).contains(&len) {
        return Err(invalid(
            field,
            format!("must be 12 to 100 characters, not {len}"),
        ));
    }
    if text.contains(['{', '}', '#']) {
        return Err(invalid(field, "must not contain {, } or #"));
    }
    if text.chars().any(is_emoji) {
        return Err(invalid(field, "must not contain emoji"));
    }
    Ok(())
}

fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0xFE0F | 0x200D)
}

fn url(field: &str, s: &str) -> Result<(), ApiError> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "https" | "http") && u.host_str().is_some() => Ok(()),
        _ => Err(invalid(field, "must be an http(s) URL")),
    }
}

/// Checks an ad create body: `adgroup_id` and 1–20 `creatives`, each with name, format,
/// identity, media and text. Fills each creative's `operation_status`.
pub fn ad_create(body: &Value) -> Result<Body, ApiError> {
    let mut b = as_object(body)?;
    id(&b, "adgroup_id")?.ok_or_else(|| invalid("adgroup_id", "is required"))?;
    let creatives = match b.get_mut("creatives") {
        Some(Value::Array(c)) if (1..=20).contains(&c.len()) => c,
        Some(Value::Array(_)) => return Err(invalid("creatives", "must hold 1 to 20 ads")),
        _ => return Err(invalid("creatives", "is required: a list of ads")),
    };
    for (i, c) in creatives.iter_mut().enumerate() {
        let field = |f: &str| format!("creatives[{i}].{f}");
        let Value::Object(c) = c else {
            return Err(invalid(&format!("creatives[{i}]"), "must be an object"));
        };
        let wrap = |e: ApiError| match e {
            ApiError::InvalidInput(f) => invalid(&field(&f.field), f.reason),
            e => e,
        };
        creative(c).map_err(wrap)?;
        c.entry("operation_status")
            .or_insert_with(|| Value::String("ENABLE".into()));
    }
    Ok(b)
}

fn creative(c: &Body) -> Result<(), ApiError> {
    name(c, "ad_name", 512)?;
    let format = one_of(c, "ad_format", AD_FORMATS, true)?.unwrap_or_default();
    let identity = one_of(c, "identity_type", IDENTITY_TYPES, true)?.unwrap_or_default();
    req_str(c, "identity_id")?;
    if identity == "BC_AUTH_TT" {
        id(c, "identity_authorized_bc_id")?
            .ok_or_else(|| invalid("identity_authorized_bc_id", "is required with BC_AUTH_TT"))?;
    }
    let spark = opt_str(c, "tiktok_item_id")?;
    if let Some(item) = spark {
        if !matches!(identity, "AUTH_CODE" | "TT_USER" | "BC_AUTH_TT") {
            return Err(invalid(
                "identity_type",
                "a Spark Ad (tiktok_item_id) needs AUTH_CODE, TT_USER or BC_AUTH_TT",
            ));
        }
        if !is_id(item) {
            return Err(invalid("tiktok_item_id", "must be the post's numeric id"));
        }
        if c.contains_key("video_id") {
            return Err(invalid(
                "video_id",
                "a Spark Ad uses the post itself; leave video_id out",
            ));
        }
    } else {
        if identity == "AUTH_CODE" {
            return Err(invalid(
                "tiktok_item_id",
                "is required with identity_type AUTH_CODE (the authorized post)",
            ));
        }
        match format {
            "SINGLE_VIDEO" => {
                req_str(c, "video_id")?;
            }
            _ => {
                let images = string_list(c, "image_ids")?.unwrap_or_default();
                if images.is_empty() {
                    return Err(invalid(
                        "image_ids",
                        format!("{format} needs at least one image"),
                    ));
                }
            }
        }
        ad_text("ad_text", req_str(c, "ad_text")?)?;
    }
    if spark.is_some()
        && let Some(text) = opt_str(c, "ad_text")?
    {
        ad_text("ad_text", text)?;
    }
    if let Some(u) = opt_str(c, "landing_page_url")? {
        url("landing_page_url", u)?;
    }
    if identity == "CUSTOMIZED_USER"
        && let Some(n) = opt_str(c, "display_name")?
        && !(2..=40).contains(&n.chars().count())
    {
        return Err(invalid("display_name", "must be 2 to 40 characters"));
    }
    id(c, "tracking_pixel_id")?;
    Ok(())
}

/// Checks a status change: the action and 1..=`max` ids, without duplicates.
pub fn status_change(body: &Value, max: usize) -> Result<(String, Vec<String>), ApiError> {
    let b = as_object(body)?;
    let action = one_of(&b, "operation_status", STATUS_ACTIONS, true)?
        .unwrap_or_default()
        .to_string();
    let ids = id_list(&b, "ids")?.ok_or_else(|| invalid("ids", "is required"))?;
    if ids.is_empty() || ids.len() > max {
        return Err(invalid("ids", format!("must hold 1 to {max} ids")));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = ids.iter().find(|i| !seen.insert(*i)) {
        return Err(invalid("ids", format!("{dup} is listed twice")));
    }
    Ok((action, ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_750_000_000; // 2025-06-15 15:06:40 UTC

    fn rules() -> Rules {
        Rules::new(NOW)
    }

    fn field(e: ApiError) -> String {
        match e {
            ApiError::InvalidInput(f) => f.field,
            other => panic!("not a field error: {other}"),
        }
    }

    fn web() -> CampaignFacts {
        CampaignFacts {
            objective_type: "WEB_CONVERSIONS".into(),
            ..Default::default()
        }
    }

    fn adgroup() -> Value {
        json!({
            "campaign_id": "1", "adgroup_name": "AG", "budget_mode": "BUDGET_MODE_DAY", "budget": 20,
            "optimization_goal": "CONVERT", "pixel_id": "77", "optimization_event": "COMPLETE_PAYMENT",
            "location_ids": ["6252001"],
        })
    }

    fn with(mut v: Value, patch: Value) -> Value {
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v
    }

    #[test]
    fn campaign_objective_and_budget_mode_are_tiktoks_enums() {
        let ok = json!({"campaign_name": "Summer", "objective_type": "TRAFFIC"});
        let b = campaign_create(&ok, &rules()).unwrap();
        assert_eq!(b["budget_mode"], "BUDGET_MODE_INFINITE");
        assert_eq!(b["operation_status"], "ENABLE");
        for (bad, f) in [
            (json!({"objective_type": "TRAFFIC"}), "campaign_name"),
            (
                json!({"campaign_name": "", "objective_type": "TRAFFIC"}),
                "campaign_name",
            ),
            (json!({"campaign_name": "x"}), "objective_type"),
            (
                json!({"campaign_name": "x", "objective_type": "SALES"}),
                "objective_type",
            ),
            (
                json!({"campaign_name": "x", "objective_type": "TRAFFIC", "budget_mode": "DAILY"}),
                "budget_mode",
            ),
            (
                json!({"campaign_name": "x", "objective_type": "TRAFFIC", "operation_status": "DELETE"}),
                "operation_status",
            ),
            (
                json!({"campaign_name": "x", "objective_type": "PRODUCT_SALES"}),
                "campaign_product_source",
            ),
            (
                json!({"campaign_name": "x", "objective_type": "APP_PROMOTION"}),
                "app_promotion_type",
            ),
            (
                json!({"campaign_name": "x", "objective_type": "TRAFFIC", "special_industries": ["GAMBLING"]}),
                "special_industries[0]",
            ),
            (
                json!({"campaign_name": 5, "objective_type": "TRAFFIC"}),
                "campaign_name",
            ),
        ] {
            assert_eq!(
                field(campaign_create(&bad, &rules()).unwrap_err()),
                f,
                "{bad}"
            );
        }
        assert_eq!(
            field(campaign_create(&json!([1]), &rules()).unwrap_err()),
            "body"
        );
    }

    #[test]
    fn campaign_budgets_meet_the_configured_minimum() {
        let c = |mode: &str, budget: Value| json!({"campaign_name": "x", "objective_type": "REACH", "budget_mode": mode, "budget": budget});
        assert!(campaign_create(&c("BUDGET_MODE_DAY", json!(50)), &rules()).is_ok());
        assert!(campaign_create(&c("BUDGET_MODE_TOTAL", json!(50.0)), &rules()).is_ok());
        for bad in [
            c("BUDGET_MODE_DAY", json!(49.99)),
            c("BUDGET_MODE_TOTAL", json!(10)),
            c("BUDGET_MODE_DAY", json!(null)),
            c("BUDGET_MODE_DAY", json!("50")),
            c("BUDGET_MODE_DAY", json!(-1)),
        ] {
            assert_eq!(
                field(campaign_create(&bad, &rules()).unwrap_err()),
                "budget",
                "{bad}"
            );
        }
        let yen = Rules {
            min_campaign_budget: 7000.0,
            ..rules()
        };
        assert!(campaign_create(&c("BUDGET_MODE_DAY", json!(6999)), &yen).is_err());
        // Dynamic daily budgets belong to campaign budget optimization.
        let dynamic = c("BUDGET_MODE_DYNAMIC_DAILY_BUDGET", json!(100));
        assert_eq!(
            field(campaign_create(&dynamic, &rules()).unwrap_err()),
            "budget_mode"
        );
        let mut cbo = dynamic.clone();
        cbo["budget_optimize_on"] = json!(true);
        assert!(campaign_create(&cbo, &rules()).is_ok());
        let infinite_cbo =
            json!({"campaign_name": "x", "objective_type": "REACH", "budget_optimize_on": true});
        assert_eq!(
            field(campaign_create(&infinite_cbo, &rules()).unwrap_err()),
            "budget_mode"
        );
    }

    #[test]
    fn adgroup_goal_billing_and_pixel_follow_the_objective() {
        let b = adgroup_create(&adgroup(), &web(), &rules()).unwrap();
        assert_eq!(b["billing_event"], "OCPM");
        assert_eq!(b["schedule_type"], "SCHEDULE_FROM_NOW");
        let traffic = CampaignFacts {
            objective_type: "TRAFFIC".into(),
            ..Default::default()
        };
        let click = with(
            adgroup(),
            json!({"optimization_goal": "CLICK", "pixel_id": null, "optimization_event": null}),
        );
        assert_eq!(
            adgroup_create(&click, &traffic, &rules()).unwrap()["billing_event"],
            "CPC"
        );
        for (patch, facts, f) in [
            (
                json!({"optimization_goal": "REACH"}),
                web(),
                "optimization_goal",
            ),
            (
                json!({"optimization_goal": null}),
                web(),
                "optimization_goal",
            ),
            (json!({"billing_event": "CPM"}), web(), "billing_event"),
            (json!({"pixel_id": null}), web(), "pixel_id"),
            (json!({"pixel_id": "px-1"}), web(), "pixel_id"),
            (
                json!({"optimization_event": null}),
                web(),
                "optimization_event",
            ),
            (
                json!({"optimization_goal": "CONVERT"}),
                traffic.clone(),
                "optimization_goal",
            ),
        ] {
            let body = with(adgroup(), patch.clone());
            assert_eq!(
                field(adgroup_create(&body, &facts, &rules()).unwrap_err()),
                f,
                "{patch}"
            );
        }
        let deleted = CampaignFacts {
            deleted: true,
            ..web()
        };
        assert_eq!(
            field(adgroup_create(&adgroup(), &deleted, &rules()).unwrap_err()),
            "campaign_id"
        );
        let catalog = CampaignFacts {
            objective_type: "PRODUCT_SALES".into(),
            product_source: Some("CATALOG".into()),
            ..Default::default()
        };
        assert_eq!(
            field(adgroup_create(&adgroup(), &catalog, &rules()).unwrap_err()),
            "catalog_id"
        );
        let with_catalog = with(adgroup(), json!({"catalog_id": "555"}));
        assert!(adgroup_create(&with_catalog, &catalog, &rules()).is_ok());
    }

    #[test]
    fn adgroup_schedules_are_ordered_in_the_future_and_lifetime_budgets_scale_by_day() {
        // 2025-06-16 00:00 → 2025-06-26 00:00: ten days.
        let lifetime = |budget: f64| {
            with(
                adgroup(),
                json!({
                    "budget_mode": "BUDGET_MODE_TOTAL", "budget": budget, "schedule_type": "SCHEDULE_START_END",
                    "schedule_start_time": "2025-06-16 00:00:00", "schedule_end_time": "2025-06-26 00:00:00",
                }),
            )
        };
        assert!(adgroup_create(&lifetime(200.0), &web(), &rules()).is_ok());
        let e = adgroup_create(&lifetime(199.0), &web(), &rules()).unwrap_err();
        assert!(e.to_string().contains("10 days"), "{e}");
        assert_eq!(field(e), "budget");
        for (patch, f) in [
            (json!({"budget": 19.5}), "budget"),
            (
                json!({"schedule_start_time": "2025-06-01 00:00:00"}),
                "schedule_start_time",
            ),
            (
                json!({"schedule_start_time": "2025-06-20T00:00:00Z"}),
                "schedule_start_time",
            ),
            (
                json!({"schedule_end_time": "2025-06-15 23:00:00"}),
                "schedule_end_time",
            ),
            (json!({"schedule_end_time": null}), "schedule_end_time"),
            (
                json!({"schedule_type": "SCHEDULE_FROM_NOW"}),
                "schedule_type",
            ),
            (
                json!({"budget_mode": "BUDGET_MODE_DYNAMIC_DAILY_BUDGET"}),
                "budget_mode",
            ),
        ] {
            let body = with(lifetime(1000.0), patch.clone());
            assert_eq!(
                field(adgroup_create(&body, &web(), &rules()).unwrap_err()),
                f,
                "{patch}"
            );
        }
        // Under campaign budget optimization the ad group needs no budget of its own.
        let cbo = CampaignFacts {
            budget_optimize_on: true,
            ..web()
        };
        let no_budget = with(adgroup(), json!({"budget_mode": null, "budget": null}));
        assert!(adgroup_create(&no_budget, &cbo, &rules()).is_ok());
        assert_eq!(
            field(adgroup_create(&no_budget, &web(), &rules()).unwrap_err()),
            "budget_mode"
        );
    }

    #[test]
    fn targeting_uses_tiktoks_enums() {
        let ok = with(
            adgroup(),
            json!({
                "age_groups": ["AGE_18_24", "AGE_25_34"], "gender": "GENDER_FEMALE", "languages": ["en", "zh-Hant"],
                "audience_ids": ["11"], "excluded_audience_ids": ["12"],
                "placement_type": "PLACEMENT_TYPE_NORMAL", "placements": ["PLACEMENT_TIKTOK"],
            }),
        );
        assert!(adgroup_create(&ok, &web(), &rules()).is_ok());
        for (patch, f) in [
            (json!({"location_ids": null}), "location_ids"),
            (json!({"location_ids": []}), "location_ids"),
            (json!({"location_ids": ["US"]}), "location_ids[0]"),
            (json!({"location_ids": [6252001]}), "location_ids"),
            (
                json!({"age_groups": ["AGE_18_24", "AGE_18_30"]}),
                "age_groups[1]",
            ),
            (json!({"gender": "MALE"}), "gender"),
            (json!({"languages": ["English"]}), "languages[0]"),
            (json!({"audience_ids": ["12"]}), "excluded_audience_ids"),
            (json!({"placements": null}), "placements"),
            (
                json!({"placements": ["PLACEMENT_INSTAGRAM"]}),
                "placements[0]",
            ),
            (json!({"placement_type": "AUTOMATIC"}), "placement_type"),
        ] {
            let body = with(ok.clone(), patch.clone());
            assert_eq!(
                field(adgroup_create(&body, &web(), &rules()).unwrap_err()),
                f,
                "{patch}"
            );
        }
    }

    #[test]
    fn updates_keep_the_budget_mode_and_its_minimum() {
        let current = json!({"campaign_id": "1", "budget_mode": "BUDGET_MODE_DAY", "budget": 100});
        assert!(
            update(
                Kind::Campaign,
                &json!({"budget": 60, "campaign_name": "New"}),
                &current,
                &rules()
            )
            .is_ok()
        );
        for (body, f) in [
            (json!({"budget_mode": "BUDGET_MODE_TOTAL"}), "budget_mode"),
            (json!({"budget": 10}), "budget"),
            (json!({"campaign_name": ""}), "campaign_name"),
            (json!({"objective_type": "REACH"}), "objective_type"),
            (json!({"operation_status": "DISABLE"}), "operation_status"),
            (json!({"campaign_id": "2"}), "campaign_id"),
        ] {
            assert_eq!(
                field(update(Kind::Campaign, &body, &current, &rules()).unwrap_err()),
                f,
                "{body}"
            );
        }
        let same_mode = json!({"budget_mode": "BUDGET_MODE_DAY", "budget": 50});
        assert!(update(Kind::Campaign, &same_mode, &current, &rules()).is_ok());
        let lifetime = json!({
            "budget_mode": "BUDGET_MODE_TOTAL", "schedule_start_time": "2025-06-16 00:00:00",
            "schedule_end_time": "2025-06-26 00:00:00",
        });
        assert_eq!(
            field(update(Kind::AdGroup, &json!({"budget": 150}), &lifetime, &rules()).unwrap_err()),
            "budget"
        );
        assert!(update(Kind::AdGroup, &json!({"budget": 200}), &lifetime, &rules()).is_ok());
        assert_eq!(
            field(
                update(
                    Kind::AdGroup,
                    &json!({"age_groups": ["AGE_1"]}),
                    &lifetime,
                    &rules()
                )
                .unwrap_err()
            ),
            "age_groups[0]"
        );
        assert_eq!(
            field(
                update(
                    Kind::Ad,
                    &json!({"ad_text": "#short"}),
                    &json!({}),
                    &rules()
                )
                .unwrap_err()
            ),
            "ad_text"
        );
        assert!(
            update(
                Kind::Ad,
                &json!({"ad_text": "A longer, plain ad text"}),
                &json!({}),
                &rules()
            )
            .is_ok()
        );
    }

    fn ad(creative: Value) -> Value {
        json!({"adgroup_id": "9", "creatives": [creative]})
    }

    fn video_ad() -> Value {
        json!({"ad_name": "A", "ad_format": "SINGLE_VIDEO", "identity_type": "CUSTOMIZED_USER", "identity_id": "5",
               "video_id": "v10033", "ad_text": "Fresh summer deals today", "landing_page_url": "https://shop.example/x"})
    }

    #[test]
    fn ads_need_identity_media_and_text_within_tiktoks_limits() {
        let b = ad_create(&ad(video_ad())).unwrap();
        assert_eq!(b["creatives"][0]["operation_status"], "ENABLE");
        for (patch, f) in [
            (json!({"ad_name": null}), "creatives[0].ad_name"),
            (json!({"ad_format": "STORY"}), "creatives[0].ad_format"),
            (json!({"identity_type": null}), "creatives[0].identity_type"),
            (json!({"identity_id": null}), "creatives[0].identity_id"),
            (json!({"video_id": null}), "creatives[0].video_id"),
            (json!({"ad_text": "Too short"}), "creatives[0].ad_text"),
            (json!({"ad_text": "x".repeat(101)}), "creatives[0].ad_text"),
            (
                json!({"ad_text": "Summer deals #sale now"}),
                "creatives[0].ad_text",
            ),
            (
                json!({"ad_text": "Summer deals {name} now"}),
                "creatives[0].ad_text",
            ),
            (
                json!({"ad_text": "Summer deals now 🔥🔥"}),
                "creatives[0].ad_text",
            ),
            (
                json!({"landing_page_url": "javascript:alert(1)"}),
                "creatives[0].landing_page_url",
            ),
            (json!({"display_name": "x"}), "creatives[0].display_name"),
            (
                json!({"ad_format": "SINGLE_IMAGE"}),
                "creatives[0].image_ids",
            ),
            (
                json!({"identity_type": "BC_AUTH_TT"}),
                "creatives[0].identity_authorized_bc_id",
            ),
            (
                json!({"identity_type": "AUTH_CODE"}),
                "creatives[0].tiktok_item_id",
            ),
        ] {
            let body = ad(with(video_ad(), patch.clone()));
            assert_eq!(field(ad_create(&body).unwrap_err()), f, "{patch}");
        }
        assert_eq!(
            field(ad_create(&json!({"creatives": [video_ad()]})).unwrap_err()),
            "adgroup_id"
        );
        assert_eq!(
            field(ad_create(&json!({"adgroup_id": "9", "creatives": []})).unwrap_err()),
            "creatives"
        );
        let many: Vec<Value> = (0..21).map(|_| video_ad()).collect();
        assert_eq!(
            field(ad_create(&json!({"adgroup_id": "9", "creatives": many})).unwrap_err()),
            "creatives"
        );
    }

    #[test]
    fn spark_ads_use_the_post_not_a_video() {
        let spark = json!({"ad_name": "S", "ad_format": "SINGLE_VIDEO", "identity_type": "AUTH_CODE",
                           "identity_id": "7", "tiktok_item_id": "7301"});
        assert!(
            ad_create(&ad(spark.clone())).is_ok(),
            "no ad_text needed: the post has its caption"
        );
        for (patch, f) in [
            (json!({"video_id": "v1"}), "creatives[0].video_id"),
            (
                json!({"identity_type": "CUSTOMIZED_USER"}),
                "creatives[0].identity_type",
            ),
            (
                json!({"tiktok_item_id": "abc"}),
                "creatives[0].tiktok_item_id",
            ),
        ] {
            assert_eq!(
                field(ad_create(&ad(with(spark.clone(), patch.clone()))).unwrap_err()),
                f,
                "{patch}"
            );
        }
    }

    #[test]
    fn status_changes_name_the_action_and_distinct_ids() {
        let (action, ids) = status_change(
            &json!({"operation_status": "DELETE", "ids": ["1", "2"]}),
            1000,
        )
        .unwrap();
        assert_eq!((action.as_str(), ids.len()), ("DELETE", 2));
        for (body, f) in [
            (json!({"ids": ["1"]}), "operation_status"),
            (
                json!({"operation_status": "PAUSE", "ids": ["1"]}),
                "operation_status",
            ),
            (json!({"operation_status": "ENABLE"}), "ids"),
            (json!({"operation_status": "ENABLE", "ids": []}), "ids"),
            (
                json!({"operation_status": "ENABLE", "ids": ["1", "1"]}),
                "ids",
            ),
            (
                json!({"operation_status": "ENABLE", "ids": ["x"]}),
                "ids[0]",
            ),
        ] {
            assert_eq!(field(status_change(&body, 1000).unwrap_err()), f, "{body}");
        }
        let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        assert!(status_change(&json!({"operation_status": "ENABLE", "ids": many}), 1000).is_err());
    }
}
