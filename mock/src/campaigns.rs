//! Campaigns, ad groups and ads (tiktok-api.md §5): create, get, update, status/update,
//! with the validation TikTok applies to objectives, budgets and statuses.

use crate::envelope::{Reply, paginate};
use crate::model::Token;
use crate::oauth::covers;
use crate::request::{Params, paging};
use crate::state::State;
use crate::time::{format_datetime, parse_datetime};
use serde_json::{Map, Value, json};

// The stored entity types live in `model`; re-exported here, where callers know them from.
use crate::model::{Entity, Kind};

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

fn one_of(
    p: &Params,
    field: &str,
    allowed: &[&str],
    default: Option<&str>,
) -> Result<String, Reply> {
    let value = match (p.str(field)?, default) {
        (Some(v), _) => v,
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            return Err(Reply::param(format!(
                "{field}: Missing data for required field."
            )));
        }
    };
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(Reply::param(format!(
            "{field}: Must be one of: {}.",
            allowed.join(", ")
        )))
    }
}

fn name(p: &Params, field: &str) -> Result<String, Reply> {
    let name = p.required_str(field)?;
    if name.chars().count() > 512 {
        return Err(Reply::param(format!(
            "{field}: Length must be between 1 and 512."
        )));
    }
    Ok(name)
}

fn budget(p: &Params) -> Result<Option<f64>, Reply> {
    match p.get("budget") {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|b| b.is_finite() && *b >= 0.0)
            .map(Some)
            .ok_or_else(|| Reply::param("budget: Not a valid number.")),
    }
}

/// Checks a budget against the minimum for its mode; `days` scales lifetime minimums.
fn check_budget(
    mode: &str,
    amount: Option<f64>,
    minimum: f64,
    days: f64,
    what: &str,
) -> Result<(), Reply> {
    if mode == "BUDGET_MODE_INFINITE" {
        return Ok(());
    }
    let amount = amount
        .ok_or_else(|| Reply::param(format!("budget: Required when budget_mode is {mode}.")))?;
    let needed = if mode == "BUDGET_MODE_TOTAL" {
        minimum * days.max(1.0)
    } else {
        minimum
    };
    if amount < needed {
        return Err(Reply::param(format!(
            "budget: The {what} budget must be at least {needed:.2}."
        )));
    }
    Ok(())
}

fn find<'a>(s: &'a State, kind: Kind, id: &str) -> Option<&'a Entity> {
    s.entities.iter().find(|e| e.kind == kind && e.id() == id)
}

fn parent<'a>(
    s: &'a State,
    kind: Kind,
    p: &Params,
    advertiser_id: &str,
) -> Result<&'a Entity, Reply> {
    let id = p.required_str(kind.id_field())?;
    let e = find(s, kind, &id).filter(|e| e.advertiser_id() == advertiser_id);
    match e {
        None => Err(Reply::error(
            40007,
            format!("{}: {id} does not exist.", kind.id_field()),
        )),
        Some(e) if e.deleted() => Err(Reply::param(format!(
            "{}: {id} has been deleted.",
            kind.id_field()
        ))),
        Some(e) => Ok(e),
    }
}

fn new_entity(
    s: &mut State,
    kind: Kind,
    advertiser_id: &str,
    mut fields: Map<String, Value>,
    status: &str,
) -> Entity {
    let now = format_datetime(s.unix_now());
    fields.insert(kind.id_field().into(), json!(s.new_id()));
    fields.insert("advertiser_id".into(), json!(advertiser_id));
    fields.insert("create_time".into(), json!(now));
    fields.insert("modify_time".into(), json!(now));
    let mut e = Entity { kind, fields };
    e.set_status(status);
    s.entities.push(e.clone());
    e
}

/// `POST /campaign/create/`.
pub fn create_campaign(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let campaign_name = name(p, "campaign_name")?;
    let objective = one_of(p, "objective_type", OBJECTIVES, None)?;
    let mode = one_of(p, "budget_mode", BUDGET_MODES, Some("BUDGET_MODE_INFINITE"))?;
    let amount = budget(p)?;
    check_budget(&mode, amount, s.config.min_campaign_budget, 1.0, "campaign")?;
    let status = one_of(
        p,
        "operation_status",
        &["ENABLE", "DISABLE"],
        Some("ENABLE"),
    )?;
    s.idempotent(&advertiser_id, p, |s| {
        let mut f = Map::new();
        f.insert("campaign_name".into(), json!(campaign_name));
        f.insert("objective_type".into(), json!(objective));
        f.insert("budget_mode".into(), json!(mode));
        f.insert("budget".into(), json!(amount.unwrap_or(0.0)));
        f.insert(
            "campaign_type".into(),
            json!(
                p.str("campaign_type")?
                    .unwrap_or_else(|| "REGULAR_CAMPAIGN".into())
            ),
        );
        for key in [
            "budget_optimize_on",
            "campaign_product_source",
            "special_industries",
            "app_promotion_type",
            "virtual_objective_type",
            "catalog_enabled",
            "po_number",
        ] {
            if let Some(v) = p.get(key) {
                f.insert(key.into(), v.clone());
            }
        }
        f.insert("is_new_structure".into(), json!(true));
        // Fields TikTok's campaign/get example carries (testdata/tiktok-doc-examples.json).
        f.insert("roas_bid".into(), json!(0));
        f.insert("deep_bid_type".into(), Value::Null);
        f.insert("objective".into(), json!("LANDING_PAGE"));
        f.insert("is_smart_performance_campaign".into(), json!(false));
        Ok(Value::Object(
            new_entity(s, Kind::Campaign, &advertiser_id, f, &status).fields,
        ))
    })
}

/// `POST /adgroup/create/`.
pub fn create_adgroup(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let campaign = parent(s, Kind::Campaign, p, &advertiser_id)?.clone();
    let adgroup_name = name(p, "adgroup_name")?;
    let mode = one_of(p, "budget_mode", &BUDGET_MODES[..3], None)?;
    let amount = budget(p)?;
    let schedule_type = one_of(
        p,
        "schedule_type",
        &["SCHEDULE_START_END", "SCHEDULE_FROM_NOW"],
        Some("SCHEDULE_FROM_NOW"),
    )?;
    let start = match p.str("schedule_start_time")? {
        Some(t) => Some(parse_datetime(&t).ok_or_else(|| {
            Reply::param("schedule_start_time: Not a valid datetime (YYYY-MM-DD HH:MM:SS).")
        })?),
        None => None,
    };
    let end = match p.str("schedule_end_time")? {
        Some(t) => Some(parse_datetime(&t).ok_or_else(|| {
            Reply::param("schedule_end_time: Not a valid datetime (YYYY-MM-DD HH:MM:SS).")
        })?),
        None => None,
    };
    let days = match (schedule_type.as_str(), start, end) {
        ("SCHEDULE_START_END", Some(a), Some(b)) if b > a => ((b - a) as f64 / 86_400.0).ceil(),
        ("SCHEDULE_START_END", Some(_), Some(_)) => {
            return Err(Reply::param(
                "schedule_end_time: Must be later than schedule_start_time.",
            ));
        }
        ("SCHEDULE_START_END", _, _) => {
            return Err(Reply::param(
                "schedule_end_time: Required when schedule_type is SCHEDULE_START_END.",
            ));
        }
        _ => 1.0,
    };
    check_budget(&mode, amount, s.config.min_adgroup_budget, days, "ad group")?;
    let billing_event = p.required_str("billing_event")?;
    let optimization_goal = p.required_str("optimization_goal")?;
    if campaign.fields["objective_type"] == "WEB_CONVERSIONS" && p.str("pixel_id")?.is_none() {
        return Err(Reply::param(
            "pixel_id: Required for web conversion campaigns.",
        ));
    }
    let status = one_of(
        p,
        "operation_status",
        &["ENABLE", "DISABLE"],
        Some("ENABLE"),
    )?;
    s.idempotent(&advertiser_id, p, |s| {
        let mut f = Map::new();
        for key in [
            "location_ids",
            "age_groups",
            "gender",
            "languages",
            "audience_ids",
            "placement_type",
            "placements",
            "pixel_id",
            "optimization_event",
            "bid_type",
            "bid_price",
            "pacing",
            "catalog_id",
            "excluded_audience_ids",
            "schedule_start_time",
            "schedule_end_time",
        ] {
            if let Some(v) = p.get(key) {
                f.insert(key.into(), v.clone());
            }
        }
        f.insert("campaign_id".into(), campaign.fields["campaign_id"].clone());
        f.insert("adgroup_name".into(), json!(adgroup_name));
        f.insert("budget_mode".into(), json!(mode));
        f.insert("budget".into(), json!(amount.unwrap_or(0.0)));
        f.insert("schedule_type".into(), json!(schedule_type));
        f.insert("billing_event".into(), json!(billing_event));
        f.insert("optimization_goal".into(), json!(optimization_goal));
        Ok(Value::Object(
            new_entity(s, Kind::AdGroup, &advertiser_id, f, &status).fields,
        ))
    })
}

/// `POST /ad/create/`: one ad per entry of `creatives`.
pub fn create_ad(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let adgroup = parent(s, Kind::AdGroup, p, &advertiser_id)?.clone();
    let creatives = match p.get("creatives") {
        Some(Value::Array(c)) if !c.is_empty() && c.len() <= 20 => c.clone(),
        Some(Value::Array(_)) => {
            return Err(Reply::param("creatives: Length must be between 1 and 20."));
        }
        _ => return Err(Reply::param("creatives: Missing data for required field.")),
    };
    for (i, c) in creatives.iter().enumerate() {
        let ok_name = c
            .get("ad_name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty() && n.chars().count() <= 512);
        if !ok_name {
            return Err(Reply::param(format!(
                "creatives.{i}.ad_name: Missing data for required field."
            )));
        }
        if c.get("ad_format").and_then(Value::as_str).is_none() {
            return Err(Reply::param(format!(
                "creatives.{i}.ad_format: Missing data for required field."
            )));
        }
    }
    s.idempotent(&advertiser_id, p, |s| {
        let mut ids = Vec::new();
        let mut created = Vec::new();
        for c in &creatives {
            let mut f = c.as_object().cloned().unwrap_or_default();
            f.insert("adgroup_id".into(), adgroup.fields["adgroup_id"].clone());
            f.insert("campaign_id".into(), adgroup.fields["campaign_id"].clone());
            let e = new_entity(s, Kind::Ad, &advertiser_id, f, "ENABLE");
            ids.push(json!(e.id()));
            created.push(Value::Object(e.fields));
        }
        Ok(json!({"ad_ids": ids, "creatives": created}))
    })
}

/// `GET /campaign|adgroup|ad/get/` with `filtering` (ids ≤ 100, parent ids, name, status) and paging ≤ 1000.
pub fn get(s: &State, kind: Kind, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let filtering = match p.get("filtering") {
        None => Params::default(),
        Some(Value::Object(m)) => Params(m.clone()),
        Some(_) => return Err(Reply::param("filtering: Not a valid JSON object.")),
    };
    let ids = filtering.str_list(kind.ids_field())?;
    if ids.as_ref().is_some_and(|ids| ids.len() > 100) {
        return Err(Reply::param(format!(
            "filtering.{}: At most 100 ids.",
            kind.ids_field()
        )));
    }
    let campaign_ids = filtering.str_list("campaign_ids")?;
    let adgroup_ids = filtering.str_list("adgroup_ids")?;
    let status = filtering.str("secondary_status")?;
    let all = format!("{}_ALL", kind.status_prefix());
    let deleted = format!("{}_DELETE", kind.status_prefix());
    let name = filtering.str(kind.name_field())?;
    let (page, page_size) = paging(p, 1000)?;
    let mut matching: Vec<&Entity> = s
        .entities
        .iter()
        .filter(|e| e.kind == kind && e.advertiser_id() == advertiser_id)
        .filter(|e| {
            ids.as_ref()
                .is_none_or(|ids| ids.iter().any(|i| i == e.id()))
        })
        .filter(|e| {
            campaign_ids.as_ref().is_none_or(|c| {
                c.iter()
                    .any(|i| e.fields.get("campaign_id").and_then(Value::as_str) == Some(i))
            })
        })
        .filter(|e| {
            kind == Kind::Campaign
                || adgroup_ids.as_ref().is_none_or(|c| {
                    c.iter()
                        .any(|i| e.fields.get("adgroup_id").and_then(Value::as_str) == Some(i))
                })
        })
        .filter(|e| {
            name.as_ref().is_none_or(|n| {
                e.fields[kind.name_field()]
                    .as_str()
                    .is_some_and(|v| v.contains(n.as_str()))
            })
        })
        .filter(|e| match status.as_deref() {
            Some(s) if s == all => true,
            Some(s) => e.fields["secondary_status"] == s,
            // Deleted entities are left out unless asked for.
            None => !e.deleted() || status.as_deref() == Some(deleted.as_str()),
        })
        .collect();
    matching.sort_by(|a, b| b.id().cmp(a.id()));
    let list: Vec<Value> = matching
        .into_iter()
        .map(|e| Value::Object(e.fields.clone()))
        .collect();
    let (list, page_info) = paginate(&list, page, page_size);
    Ok(Reply::ok(json!({"list": list, "page_info": page_info})))
}

/// `POST /campaign|adgroup/update/`: names and budgets; the budget mode cannot change.
pub fn update(s: &mut State, kind: Kind, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let id = parent(s, kind, p, &advertiser_id)?.id().to_string();
    let minimum = if kind == Kind::Campaign {
        s.config.min_campaign_budget
    } else {
        s.config.min_adgroup_budget
    };
    let entity = s
        .entities
        .iter()
        .find(|e| e.kind == kind && e.id() == id)
        .expect("found above")
        .clone();
    let mode = entity
        .fields
        .get("budget_mode")
        .and_then(Value::as_str)
        .unwrap_or("BUDGET_MODE_INFINITE")
        .to_string();
    if let Some(new_mode) = p.str("budget_mode")?
        && new_mode != mode
    {
        return Err(Reply::param(
            "budget_mode: The budget mode cannot be modified after creation.",
        ));
    }
    let new_name = match p.str(kind.name_field())? {
        Some(_) => Some(name(p, kind.name_field())?),
        None => None,
    };
    let new_budget = budget(p)?;
    if new_budget.is_some() {
        check_budget(
            &mode,
            new_budget,
            minimum,
            1.0,
            if kind == Kind::Campaign {
                "campaign"
            } else {
                "ad group"
            },
        )?;
    }
    let now = format_datetime(s.unix_now());
    let e = s
        .entities
        .iter_mut()
        .find(|e| e.kind == kind && e.id() == id)
        .expect("found above");
    if let Some(n) = new_name {
        e.fields.insert(kind.name_field().into(), json!(n));
    }
    if let Some(b) = new_budget {
        e.fields.insert("budget".into(), json!(b));
    }
    e.fields.insert("modify_time".into(), json!(now));
    Ok(Reply::ok(Value::Object(e.fields.clone())))
}

/// `POST /campaign|adgroup|ad/status/update/`: 1–20 ids; DELETE is final. With
/// `allow_partial_success` (ad groups) failures are listed instead of failing the call.
pub fn status_update(s: &mut State, kind: Kind, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let ids = p.str_list(kind.ids_field())?.ok_or_else(|| {
        Reply::param(format!(
            "{}: Missing data for required field.",
            kind.ids_field()
        ))
    })?;
    if ids.is_empty() {
        return Err(Reply::param(format!(
            "{}: Length must be between 1 and 20.",
            kind.ids_field()
        )));
    }
    if ids.len() > 20 {
        return Err(Reply::error(
            40011,
            format!(
                "{}: Too many ids; at most 20 per request.",
                kind.ids_field()
            ),
        ));
    }
    let status = one_of(
        p,
        "operation_status",
        &["ENABLE", "DISABLE", "DELETE"],
        None,
    )?;
    let partial = p
        .get("allow_partial_success")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut errors = Vec::new();
    for id in &ids {
        let problem = match find(s, kind, id).filter(|e| e.advertiser_id() == advertiser_id) {
            None => Some(format!("{id} does not exist")),
            Some(e) if e.deleted() => Some(format!("{id} has been deleted and cannot be modified")),
            Some(_) => None,
        };
        if let Some(message) = problem {
            if !partial {
                return Err(Reply::param(format!("{}: {message}.", kind.ids_field())));
            }
            errors.push(json!({kind.id_field(): id, "error_message": message}));
        }
    }
    let now = format_datetime(s.unix_now());
    let mut done = Vec::new();
    for e in s
        .entities
        .iter_mut()
        .filter(|e| e.kind == kind && ids.iter().any(|i| i == e.id()) && !e.deleted())
    {
        e.set_status(&status);
        e.fields.insert("modify_time".into(), json!(now));
        done.push(e.id().to_string());
    }
    let list: Vec<Value> = done
        .iter()
        .map(|id| json!({kind.id_field(): id, "status": status}))
        .collect();
    let mut data = json!({kind.ids_field(): done, "status": status, kind.list_field(): list});
    if partial {
        data["error_list"] = json!(errors);
    }
    Ok(Reply::ok(data))
}

/// `POST /ad/update/ {advertiser_id, creatives: [{ad_id, …fields}]}`: changes the given
/// fields of each ad (ids and statuses are not editable here).
pub fn update_ads(s: &mut State, token: &Token, p: &Params) -> Result<Reply, Reply> {
    let advertiser_id = p.required_str("advertiser_id")?;
    covers(token, &advertiser_id)?;
    let creatives = match p.get("creatives") {
        Some(Value::Array(c)) if !c.is_empty() && c.len() <= 20 => c.clone(),
        _ => return Err(Reply::param("creatives: Length must be between 1 and 20.")),
    };
    for (i, c) in creatives.iter().enumerate() {
        let id = c.get("ad_id").and_then(Value::as_str).ok_or_else(|| {
            Reply::param(format!(
                "creatives.{i}.ad_id: Missing data for required field."
            ))
        })?;
        match find(s, Kind::Ad, id).filter(|e| e.advertiser_id() == advertiser_id) {
            None => {
                return Err(Reply::error(
                    40007,
                    format!("creatives.{i}.ad_id: {id} does not exist."),
                ));
            }
            Some(e) if e.deleted() => {
                return Err(Reply::param(format!(
                    "creatives.{i}.ad_id: {id} has been deleted."
                )));
            }
            Some(_) => {}
        }
        if let Some(name) = c.get("ad_name")
            && !name
                .as_str()
                .is_some_and(|n| !n.is_empty() && n.chars().count() <= 512)
        {
            return Err(Reply::param(format!(
                "creatives.{i}.ad_name: Length must be between 1 and 512."
            )));
        }
    }
    let now = format_datetime(s.unix_now());
    let mut updated = Vec::new();
    for c in &creatives {
        let id = c["ad_id"].as_str().unwrap_or_default();
        let e = s
            .entities
            .iter_mut()
            .find(|e| e.kind == Kind::Ad && e.id() == id)
            .expect("checked above");
        for (k, v) in c.as_object().into_iter().flatten() {
            if !matches!(
                k.as_str(),
                "ad_id"
                    | "adgroup_id"
                    | "campaign_id"
                    | "advertiser_id"
                    | "operation_status"
                    | "secondary_status"
                    | "create_time"
            ) {
                e.fields.insert(k.clone(), v.clone());
            }
        }
        e.fields.insert("modify_time".into(), json!(now));
        updated.push(Value::Object(e.fields.clone()));
    }
    Ok(Reply::ok(json!({"creatives": updated})))
}
