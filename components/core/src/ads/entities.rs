//! Campaigns, ad groups and ads at TikTok: create (checked, idempotent), get, list,
//! update (checked against what TikTok holds) and status changes in batches of 20.

use crate::ApiError;
use crate::ads::idempotency::{self, Outcome};
use crate::ads::rules::{self, CampaignFacts, Kind, Rules};
use crate::platform::env::Env;
use crate::tenancy::advertiser_access::AdvertiserAccess;
use crate::tiktok::client::{Call, id_string};
use crate::tiktok::codes::{CodeClass, classify};
use serde::Serialize;
use serde_json::{Value, json};

/// TikTok's limit of ids per status call (§5; more is 40011).
pub const STATUS_BATCH: usize = 20;
/// Most ids one of our status requests takes (split into TikTok batches).
pub const MAX_STATUS_IDS: usize = 1000;

/// The checks' settings: `min_campaign_budget` (50) and `min_adgroup_budget` (20), in
/// the advertiser's currency.
pub fn rules(env: &Env) -> Result<Rules, ApiError> {
    Ok(Rules {
        min_campaign_budget: env.number_var("min_campaign_budget", 50.0, 0.0..=1e12)?,
        min_adgroup_budget: env.number_var("min_adgroup_budget", 20.0, 0.0..=1e12)?,
        now: env.now,
    })
}

/// Filters and paging for a list; TikTok pages it (§1.4).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub page: u32,
    pub page_size: u32,
    pub ids: Option<Vec<String>>,
    pub campaign_ids: Option<Vec<String>>,
    pub adgroup_ids: Option<Vec<String>>,
    pub name: Option<String>,
    /// A TikTok `secondary_status` filter; `{KIND}_STATUS_ALL` includes deleted ones.
    pub status: Option<String>,
}

/// One page of entities as TikTok lists them.
pub fn list(
    env: &Env,
    access: &AdvertiserAccess,
    kind: Kind,
    q: &ListQuery,
) -> Result<Value, ApiError> {
    let mut filtering = serde_json::Map::new();
    if let Some(ids) = &q.ids {
        filtering.insert(kind.ids_field().into(), json!(ids));
    }
    if let Some(ids) = &q.campaign_ids {
        filtering.insert("campaign_ids".into(), json!(ids));
    }
    if let Some(ids) = &q.adgroup_ids {
        filtering.insert("adgroup_ids".into(), json!(ids));
    }
    if let Some(name) = &q.name {
        filtering.insert(kind.name_field().into(), json!(name));
    }
    if let Some(status) = &q.status {
        filtering.insert("secondary_status".into(), json!(status));
    }
    let mut call = Call::get(&format!("/{}/get/", kind.path()))
        .query("advertiser_id", &access.advertiser.advertiser_id)
        .query("page", q.page.max(1).to_string())
        .query("page_size", q.page_size.clamp(1, 1000).to_string());
    if !filtering.is_empty() {
        call = call.query("filtering", Value::Object(filtering).to_string());
    }
    let reply = access.call(env, call)?;
    Ok(json!({
        "list": reply.data["list"].as_array().cloned().unwrap_or_default(),
        "page_info": reply.data["page_info"],
    }))
}

/// One page of an advertiser-scoped TikTok list (`advertiser_id`, `page`, `page_size`
/// capped at `max`), as `{list, page_info}`.
pub fn page_of(
    env: &Env,
    access: &AdvertiserAccess,
    path: &str,
    page: u32,
    page_size: u32,
    max: u32,
) -> Result<Value, ApiError> {
    let reply = access.call(
        env,
        Call::get(path)
            .query("advertiser_id", &access.advertiser.advertiser_id)
            .query("page", page.max(1).to_string())
            .query("page_size", page_size.clamp(1, max).to_string()),
    )?;
    Ok(json!({"list": reply.data["list"], "page_info": reply.data["page_info"]}))
}

/// One entity, deleted ones included; 404 when TikTok has none with that id.
pub fn get(env: &Env, access: &AdvertiserAccess, kind: Kind, id: &str) -> Result<Value, ApiError> {
    if !rules::is_id(id) {
        return Err(ApiError::invalid(
            kind.id_field(),
            "must be TikTok's numeric id",
        ));
    }
    let page = list(
        env,
        access,
        kind,
        &ListQuery {
            page: 1,
            page_size: 1,
            ids: Some(vec![id.to_string()]),
            status: Some(kind.all_statuses().to_string()),
            ..Default::default()
        },
    )?;
    page["list"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| id_string(&e[kind.id_field()]).as_deref() == Some(id))
        })
        .cloned()
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "{} {id} does not exist for advertiser {}",
                kind.id_field(),
                access.advertiser.advertiser_id
            ))
        })
}

/// Creates a campaign, ad group or ad: checks first (the ad group against its campaign),
/// then one TikTok call per `Idempotency-Key`.
pub fn create(
    env: &Env,
    access: &AdvertiserAccess,
    kind: Kind,
    body: &Value,
    idempotency_key: Option<&str>,
) -> Result<Outcome, ApiError> {
    // The key is looked up before anything else, so a replay makes no TikTok call at
    // all (not even the campaign read an ad group's checks need) and is answered even
    // when its checks would now fail (a start time since passed).
    let scope = format!("{}/{}", access.advertiser.advertiser_id, kind.plural());
    idempotency::run(
        env,
        &access.org,
        &scope,
        idempotency_key,
        body,
        |request_id| create_once(env, access, kind, body, request_id),
    )
}

/// Checks and creates once, sending `request_id`; answers (201, what TikTok created).
pub(crate) fn create_once(
    env: &Env,
    access: &AdvertiserAccess,
    kind: Kind,
    body: &Value,
    request_id: &str,
) -> Result<(u16, Value), ApiError> {
    let rules = rules(env)?;
    let mut checked = match kind {
        Kind::Campaign => rules::campaign_create(body, &rules)?,
        Kind::AdGroup => {
            let campaign_id = rules::adgroup_campaign_id(body)?;
            let campaign = get(env, access, Kind::Campaign, &campaign_id).map_err(|e| match e {
                ApiError::NotFound(m) => ApiError::invalid("campaign_id", m),
                e => e,
            })?;
            rules::adgroup_create(body, &CampaignFacts::from_tiktok(&campaign), &rules)?
        }
        Kind::Ad => rules::ad_create(body)?,
    };
    checked.insert(
        "advertiser_id".into(),
        json!(access.advertiser.advertiser_id),
    );
    checked.insert("request_id".into(), json!(request_id));
    let path = format!("/{}/create/", kind.path());
    match access.call(env, Call::post(&path, Value::Object(checked.clone()))) {
        Ok(reply) => Ok((201, created(kind, reply.data, &reply.request_id))),
        // A retry of a create whose answer was lost: find what the first made.
        Err(ApiError::Upstream(u)) if u.code == 40050 && kind != Kind::Ad => {
            let name = checked[kind.name_field()].as_str().unwrap_or_default();
            match find_by_name(env, access, kind, name)? {
                Some(found) => Ok((201, created(kind, found, &u.request_id))),
                None => Err(ApiError::Upstream(u)),
            }
        }
        Err(e) => Err(e),
    }
}

fn created(kind: Kind, data: Value, request_id: &str) -> Value {
    match kind {
        Kind::Ad => json!({
            "ad_ids": data["ad_ids"],
            "ads": data["creatives"],
            "tiktok_request_id": request_id,
        }),
        _ => json!({
            "id": id_string(&data[kind.id_field()]),
            (if kind == Kind::Campaign { "campaign" } else { "adgroup" }): data,
            "tiktok_request_id": request_id,
        }),
    }
}

/// The newest entity named exactly `name`.
fn find_by_name(
    env: &Env,
    access: &AdvertiserAccess,
    kind: Kind,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let page = list(
        env,
        access,
        kind,
        &ListQuery {
            page: 1,
            page_size: 100,
            name: Some(name.to_string()),
            ..Default::default()
        },
    )?;
    Ok(page["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e[kind.name_field()] == name)
        .max_by_key(|e| {
            let id = id_string(&e[kind.id_field()]).unwrap_or_default();
            (id.len(), id)
        })
        .cloned())
}

/// Updates an entity, checked against what TikTok holds (the budget mode stays).
pub fn update(
    env: &Env,
    access: &AdvertiserAccess,
    kind: Kind,
    id: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let current = get(env, access, kind, id)?;
    if current["operation_status"] == "DELETE" {
        return Err(ApiError::Conflict(format!(
            "{} {id} is deleted and cannot change",
            kind.id_field()
        )));
    }
    let checked = rules::update(kind, body, &current, &rules(env)?)?;
    let advertiser_id = &access.advertiser.advertiser_id;
    let send = match kind {
        Kind::Ad => {
            let mut creative = checked.clone();
            creative.insert("ad_id".into(), json!(id));
            // `patch_update`: only the fields given change (§5 lists it for
            // /ad/update/; without it TikTok may take the creative as a replacement).
            json!({"advertiser_id": advertiser_id, "creatives": [creative], "patch_update": true})
        }
        _ => {
            let mut b = checked.clone();
            b.insert("advertiser_id".into(), json!(advertiser_id));
            b.insert(kind.id_field().into(), json!(id));
            Value::Object(b)
        }
    };
    let reply = access.call(env, Call::post(&format!("/{}/update/", kind.path()), send))?;
    let data = match kind {
        Kind::Ad => reply.data["creatives"][0].clone(),
        _ => reply.data,
    };
    Ok(json!({"id": id, kind.path(): data, "tiktok_request_id": reply.request_id}))
}

/// One id's outcome of a status change.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusResult {
    pub id: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<StatusError>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusError {
    pub tiktok_code: i64,
    pub message: String,
    pub tiktok_request_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub operation_status: String,
    pub requested: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// TikTok calls made (batches of 20, plus single-id retries to attribute failures).
    pub tiktok_calls: usize,
    pub results: Vec<StatusResult>,
}

/// Sets ENABLE, DISABLE or DELETE on any number of ids (≤ 1000) in batches of 20.
/// A batch TikTok refuses as a whole is retried id by id, so each id's result is its own.
pub fn set_status(
    env: &Env,
    access: &AdvertiserAccess,
    kind: Kind,
    body: &Value,
) -> Result<StatusReport, ApiError> {
    let (action, ids) = rules::status_change(body, MAX_STATUS_IDS)?;
    let mut report = StatusReport {
        operation_status: action.clone(),
        requested: ids.len(),
        succeeded: 0,
        failed: 0,
        tiktok_calls: 0,
        results: Vec::with_capacity(ids.len()),
    };
    let call = |batch: &[String], report: &mut StatusReport| {
        report.tiktok_calls += 1;
        let mut b = json!({
            "advertiser_id": access.advertiser.advertiser_id,
            kind.ids_field(): batch,
            "operation_status": action,
        });
        if kind == Kind::AdGroup {
            b["allow_partial_success"] = json!(true);
        }
        access.call(
            env,
            Call::post(&format!("/{}/status/update/", kind.path()), b),
        )
    };
    for batch in ids.chunks(STATUS_BATCH) {
        match call(batch, &mut report) {
            Ok(reply) => {
                let errors: Vec<(String, String)> = reply.data["error_list"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some((
                            id_string(&e[kind.id_field()])?,
                            e["error_message"].as_str().unwrap_or("refused").to_string(),
                        ))
                    })
                    .collect();
                for id in batch {
                    let error = errors
                        .iter()
                        .find(|(e, _)| e == id)
                        .map(|(_, m)| StatusError {
                            tiktok_code: reply.code,
                            message: m.clone(),
                            tiktok_request_id: reply.request_id.clone(),
                        });
                    report.results.push(StatusResult {
                        id: id.clone(),
                        ok: error.is_none(),
                        error,
                    });
                }
            }
            Err(ApiError::Upstream(u))
                if batch.len() > 1
                    && matches!(
                        classify(u.code),
                        CodeClass::InvalidInput | CodeClass::NotFound
                    ) =>
            {
                for id in batch {
                    let one = std::slice::from_ref(id);
                    let result = match call(one, &mut report) {
                        Ok(_) => StatusResult {
                            id: id.clone(),
                            ok: true,
                            error: None,
                        },
                        Err(e) => failed(id, e)?,
                    };
                    report.results.push(result);
                }
            }
            Err(e) => {
                for id in batch {
                    report.results.push(failed(id, e.clone())?);
                }
            }
        }
    }
    report.succeeded = report.results.iter().filter(|r| r.ok).count();
    report.failed = report.results.len() - report.succeeded;
    Ok(report)
}

/// An id TikTok refused; errors of our own (storage, re-authorization) end the request.
fn failed(id: &str, e: ApiError) -> Result<StatusResult, ApiError> {
    match e {
        ApiError::Upstream(u) if classify(u.code) != CodeClass::Reauthorize => Ok(StatusResult {
            id: id.to_string(),
            ok: false,
            error: Some(StatusError {
                tiktok_code: u.code,
                message: u.message,
                tiktok_request_id: u.request_id,
            }),
        }),
        e => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::connections::testing::advertiser_access;
    use crate::testing::TestEnv;
    use crate::tiktok::client::fake::{err, ok};

    fn setup() -> (TestEnv, AdvertiserAccess) {
        let t = TestEnv::new();
        let access = advertiser_access(&t, "acme");
        (t, access)
    }

    fn sent_bodies(t: &TestEnv) -> Vec<Value> {
        t.tiktok
            .sent
            .borrow()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    #[test]
    fn status_changes_go_in_batches_of_twenty() {
        let (t, access) = setup();
        let ids: Vec<String> = (1..=45).map(|i| format!("{}", 1000 + i)).collect();
        t.script(vec![ok(json!({})), ok(json!({})), ok(json!({}))]);
        let r = set_status(
            &t.env(),
            &access,
            Kind::Campaign,
            &json!({"operation_status": "DISABLE", "ids": ids}),
        )
        .unwrap();
        assert_eq!(
            (r.requested, r.succeeded, r.failed, r.tiktok_calls),
            (45, 45, 0, 3)
        );
        let sizes: Vec<usize> = sent_bodies(&t)
            .iter()
            .map(|b| b["campaign_ids"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![20, 20, 5]);
        assert!(
            sent_bodies(&t)
                .iter()
                .all(|b| b["operation_status"] == "DISABLE" && b["advertiser_id"] == "111")
        );
    }

    #[test]
    fn a_refused_batch_is_retried_id_by_id_so_each_result_is_its_own() {
        let (t, access) = setup();
        t.script(vec![
            err(40002, "campaign_ids: 2 does not exist."),
            ok(json!({})),
            err(40002, "campaign_ids: 2 does not exist."),
            ok(json!({})),
        ]);
        let r = set_status(
            &t.env(),
            &access,
            Kind::Campaign,
            &json!({"operation_status": "ENABLE", "ids": ["1", "2", "3"]}),
        )
        .unwrap();
        assert_eq!((r.succeeded, r.failed, r.tiktok_calls), (2, 1, 4));
        assert!(!r.results[1].ok);
        assert_eq!(r.results[1].error.as_ref().unwrap().tiktok_code, 40002);
        assert!(r.results[0].ok && r.results[2].ok);
    }

    #[test]
    fn ad_group_batches_ask_for_partial_success_and_read_the_error_list() {
        let (t, access) = setup();
        t.script(vec![ok(
            json!({"error_list": [{"adgroup_id": "2", "error_message": "2 has been deleted"}]}),
        )]);
        let r = set_status(
            &t.env(),
            &access,
            Kind::AdGroup,
            &json!({"operation_status": "ENABLE", "ids": ["1", "2"]}),
        )
        .unwrap();
        assert_eq!((r.succeeded, r.failed, r.tiktok_calls), (1, 1, 1));
        assert_eq!(sent_bodies(&t)[0]["allow_partial_success"], true);
    }

    #[test]
    fn an_unavailable_tiktok_marks_the_batch_failed_and_a_revoked_token_ends_the_request() {
        let (t, access) = setup();
        t.script(vec![err(50000, "a"), err(50000, "b"), err(50000, "c")]);
        let r = set_status(
            &t.env(),
            &access,
            Kind::Ad,
            &json!({"operation_status": "ENABLE", "ids": ["1", "2"]}),
        )
        .unwrap();
        assert_eq!((r.succeeded, r.failed), (0, 2));
        t.script(vec![err(40105, "revoked")]);
        let e = set_status(
            &t.env(),
            &access,
            Kind::Ad,
            &json!({"operation_status": "ENABLE", "ids": ["1"]}),
        )
        .unwrap_err();
        assert_eq!(e.status(), 409);
    }

    #[test]
    fn an_ad_group_is_checked_against_its_campaign_before_it_is_created() {
        let (t, access) = setup();
        t.script(vec![ok(json!({"list": [{"campaign_id": "5", "objective_type": "WEB_CONVERSIONS", "operation_status": "ENABLE"}], "page_info": {}}))]);
        let body = json!({"campaign_id": "5", "adgroup_name": "A", "budget_mode": "BUDGET_MODE_DAY", "budget": 30,
                          "optimization_goal": "CONVERT", "location_ids": ["1"]});
        let e = create(&t.env(), &access, Kind::AdGroup, &body, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid pixel_id: is required for a WEB_CONVERSIONS campaign optimizing for CONVERT"
        );
        assert_eq!(t.tiktok.paths(), vec!["/campaign/get/"], "no create call");
        t.script(vec![ok(json!({"list": [], "page_info": {}}))]);
        let e = create(&t.env(), &access, Kind::AdGroup, &body, None).unwrap_err();
        assert_eq!(
            (e.status(), e.to_string().contains("campaign_id")),
            (400, true)
        );
    }

    #[test]
    fn creates_send_a_request_id_and_a_lost_answer_is_found_by_name() {
        let (t, access) = setup();
        let body = json!({"campaign_name": "Summer", "objective_type": "TRAFFIC"});
        t.script(vec![
            err(40050, "Duplicated request"),
            ok(json!({"list": [
                {"campaign_id": "9", "campaign_name": "Summer"},
                {"campaign_id": "10", "campaign_name": "Summer"},
                {"campaign_id": "11", "campaign_name": "Summer sale"}
            ], "page_info": {}})),
        ]);
        let out = create(&t.env(), &access, Kind::Campaign, &body, Some("key-1")).unwrap();
        assert_eq!(out.response["id"], "10");
        let sent = sent_bodies(&t);
        assert!(
            sent[0]["request_id"]
                .as_str()
                .unwrap()
                .bytes()
                .all(|b| b.is_ascii_digit())
        );
        assert_eq!(sent[0]["budget_mode"], "BUDGET_MODE_INFINITE");
        // Remembered: the same key answers without TikTok.
        let again = create(&t.env(), &access, Kind::Campaign, &body, Some("key-1")).unwrap();
        assert!(again.replayed);
        assert_eq!(t.tiktok.sent.borrow().len(), 2);
    }

    #[test]
    fn a_replayed_ad_group_create_calls_tiktok_not_at_all_even_once_its_start_has_passed() {
        let (t, access) = setup();
        t.script(vec![
            ok(json!({"list": [{"campaign_id": "5", "objective_type": "TRAFFIC", "operation_status": "ENABLE"}], "page_info": {}})),
            ok(json!({"adgroup_id": "8"})),
        ]);
        let body = json!({"campaign_id": "5", "adgroup_name": "A", "budget_mode": "BUDGET_MODE_DAY", "budget": 30,
                          "optimization_goal": "CLICK", "location_ids": ["1"],
                          "schedule_start_time": "2023-11-14 23:00:00"});
        let first = create(&t.env(), &access, Kind::AdGroup, &body, Some("k")).unwrap();
        assert_eq!(first.response["id"], "8");
        let calls = t.tiktok.sent.borrow().len();
        t.now.set(t.now.get() + 7200);
        let again = create(&t.env(), &access, Kind::AdGroup, &body, Some("k")).unwrap();
        assert!(again.replayed);
        assert_eq!(again.response, first.response);
        assert_eq!(
            t.tiktok.sent.borrow().len(),
            calls,
            "no TikTok call on a replay"
        );
    }

    #[test]
    fn updates_read_the_entity_first_and_keep_its_budget_mode() {
        let (t, access) = setup();
        let current = ok(
            json!({"list": [{"campaign_id": "5", "budget_mode": "BUDGET_MODE_DAY", "operation_status": "ENABLE"}], "page_info": {}}),
        );
        t.script(vec![current.clone()]);
        let e = update(
            &t.env(),
            &access,
            Kind::Campaign,
            "5",
            &json!({"budget_mode": "BUDGET_MODE_TOTAL"}),
        )
        .unwrap_err();
        assert_eq!(e.status(), 400);
        t.script(vec![current, ok(json!({"campaign_id": "5", "budget": 80}))]);
        let r = update(
            &t.env(),
            &access,
            Kind::Campaign,
            "5",
            &json!({"budget": 80}),
        )
        .unwrap();
        assert_eq!(r["campaign"]["budget"], 80);
        assert_eq!(sent_bodies(&t).last().unwrap()["campaign_id"], "5");
        t.script(vec![ok(
            json!({"list": [{"campaign_id": "6", "operation_status": "DELETE"}], "page_info": {}}),
        )]);
        let e = update(
            &t.env(),
            &access,
            Kind::Campaign,
            "6",
            &json!({"budget": 80}),
        )
        .unwrap_err();
        assert_eq!(e.status(), 409);
    }
}
