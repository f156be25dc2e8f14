//! Push rules: the spec's default rule set (ruma's `server_default`), stored per user as the
//! `m.push_rules` account data, and every endpoint that reads or edits it. Evaluation lives in `crate::push`.

use axum::{extract::State, Json};
use ruma::{
    api::client::push::{
        get_pushrule_actions, get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope,
        set_pushrule_actions, set_pushrule_enabled,
    },
    push::{
        Action, AnyPushRuleRef, InsertPushRuleError, NewConditionalPushRule, NewPatternedPushRule,
        NewPushRule, NewSimplePushRule, PushCondition, RemovePushRuleError, RuleKind, Ruleset,
    },
    OwnedRoomId, OwnedUserId, UserId,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::service::account_data::PUSH_RULES;
use crate::{
    error::{ApiError, ApiResult},
    http::{
        extract::{Auth, JsonObject, Path, Query},
        ruma::Ruma,
    },
    service::App,
};

fn ruleset(app: &App, user: &UserId) -> ApiResult<Ruleset> {
    Ok(app.account_data.push_rules(user)?)
}

/// Load the rule set, apply one edit, store it: every write endpoint is this.
pub(crate) async fn edit(
    app: &App,
    user: &UserId,
    change: impl FnOnce(&mut Ruleset) -> ApiResult<()>,
) -> ApiResult<()> {
    let mut rules = ruleset(app, user)?;
    change(&mut rules)?;
    let global = serde_json::to_value(&rules).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(app
        .set_account_data(user, "", PUSH_RULES, &json!({ "global": global }))
        .await?)
}

fn kind(s: &str) -> ApiResult<RuleKind> {
    match s {
        "override" | "underride" | "sender" | "room" | "content" => Ok(RuleKind::from(s)),
        _ => Err(ApiError::InvalidParam(format!(
            "unknown push rule kind {s}"
        ))),
    }
}

/// A kind from ruma's path, which takes any string: the spec's five only.
fn known(k: RuleKind) -> ApiResult<RuleKind> {
    kind(k.as_str())
}

/// The rule of this kind and id; `M_NOT_FOUND` if there is none.
fn rule<'a>(rules: &'a Ruleset, k: RuleKind, rule_id: &str) -> ApiResult<AnyPushRuleRef<'a>> {
    rules
        .get(known(k)?, rule_id)
        .ok_or_else(|| ApiError::NotFound("Unknown push rule".into()))
}

/// The rule as JSON, found in the serialised rule set.
fn find(rules: &Ruleset, kind: &str, rule_id: &str) -> ApiResult<Value> {
    let all = serde_json::to_value(rules).map_err(|e| ApiError::Internal(e.to_string()))?;
    all[kind]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["rule_id"] == rule_id))
        .cloned()
        .ok_or_else(|| ApiError::NotFound("Unknown push rule".into()))
}

pub async fn get_all(
    app: App,
    req: Ruma<get_pushrules_all::v3::Request>,
) -> ApiResult<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(ruleset(
        &app,
        &req.caller.user_id,
    )?))
}

pub async fn get_global(
    app: App,
    req: Ruma<get_pushrules_global_scope::v3::Request>,
) -> ApiResult<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(ruleset(
        &app,
        &req.caller.user_id,
    )?))
}

/// Hand-typed: its path is shared with `PUT`, which ruma would refuse without `conditions`.
pub async fn get_rule(
    State(app): State<App>,
    Auth(s): Auth,
    Path((k, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    kind(&k)?;
    Ok(Json(find(&ruleset(&app, &s.user_id)?, &k, &id)?))
}

#[derive(Deserialize, Default)]
pub struct Position {
    before: Option<String>,
    after: Option<String>,
}

/// Hand-typed: ruma requires `conditions` on override and underride rules; the spec does not.
pub async fn put_rule(
    State(app): State<App>,
    Auth(s): Auth,
    Path((k, id)): Path<(String, String)>,
    Query(pos): Query<Position>,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    kind(&k)?;
    let field = |name: &str| body.get(name).cloned().unwrap_or(Value::Null);
    let actions: Vec<Action> = serde_json::from_value(field("actions"))
        .map_err(|e| ApiError::BadJson(format!("invalid actions: {e}")))?;
    let rule = match k.as_str() {
        "override" | "underride" => {
            let conditions: Vec<PushCondition> = match body.get("conditions") {
                None => vec![],
                Some(c) => serde_json::from_value(c.clone())
                    .map_err(|e| ApiError::BadJson(format!("invalid conditions: {e}")))?,
            };
            let r = NewConditionalPushRule::new(id.clone(), conditions, actions);
            if k == "override" {
                NewPushRule::Override(r)
            } else {
                NewPushRule::Underride(r)
            }
        }
        "content" => {
            let pattern = field("pattern")
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| ApiError::BadJson("content rules need a pattern".into()))?;
            NewPushRule::Content(NewPatternedPushRule::new(id.clone(), pattern, actions))
        }
        "room" => {
            let room = OwnedRoomId::try_from(id.as_str()).map_err(|e| {
                ApiError::InvalidParam(format!("room rules are named by room id: {e}"))
            })?;
            NewPushRule::Room(NewSimplePushRule::new(room, actions))
        }
        _ => {
            let user = OwnedUserId::try_from(id.as_str()).map_err(|e| {
                ApiError::InvalidParam(format!("sender rules are named by user id: {e}"))
            })?;
            NewPushRule::Sender(NewSimplePushRule::new(user, actions))
        }
    };
    edit(&app, &s.user_id, |rules| {
        rules
            .insert(rule, pos.after.as_deref(), pos.before.as_deref())
            .map_err(|e| match e {
                InsertPushRuleError::UnknownRuleId => {
                    ApiError::NotFound("before/after rule not found".into())
                }
                other => ApiError::InvalidParam(other.to_string()),
            })?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({})))
}

/// Hand-typed: its path is shared with `PUT`, which ruma would refuse without `conditions`.
pub async fn delete_rule(
    State(app): State<App>,
    Auth(s): Auth,
    Path((k, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let kind = kind(&k)?;
    edit(&app, &s.user_id, |rules| {
        rules.remove(kind, &id).map_err(|e| match e {
            RemovePushRuleError::NotFound => ApiError::NotFound("Unknown push rule".into()),
            other => ApiError::InvalidParam(other.to_string()),
        })?;
        Ok(())
    })
    .await?;
    Ok(Json(json!({})))
}

pub async fn get_enabled(
    app: App,
    req: Ruma<get_pushrule_enabled::v3::Request>,
) -> ApiResult<get_pushrule_enabled::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let rules = ruleset(&app, &s.user_id)?;
    let enabled = rule(&rules, body.kind, &body.rule_id)?.enabled();
    Ok(get_pushrule_enabled::v3::Response::new(enabled))
}

pub async fn put_enabled(
    app: App,
    req: Ruma<set_pushrule_enabled::v3::Request>,
) -> ApiResult<set_pushrule_enabled::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let kind = known(body.kind)?;
    edit(&app, &s.user_id, |rules| {
        rules
            .set_enabled(kind, &body.rule_id, body.enabled)
            .map_err(|_| ApiError::NotFound("Unknown push rule".into()))?;
        Ok(())
    })
    .await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

pub async fn get_actions(
    app: App,
    req: Ruma<get_pushrule_actions::v3::Request>,
) -> ApiResult<get_pushrule_actions::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let rules = ruleset(&app, &s.user_id)?;
    let actions = rule(&rules, body.kind, &body.rule_id)?.actions().to_vec();
    Ok(get_pushrule_actions::v3::Response::new(actions))
}

pub async fn put_actions(
    app: App,
    req: Ruma<set_pushrule_actions::v3::Request>,
) -> ApiResult<set_pushrule_actions::v3::Response> {
    let (s, body) = (req.caller, req.body);
    let kind = known(body.kind)?;
    edit(&app, &s.user_id, |rules| {
        rules
            .set_actions(kind, &body.rule_id, body.actions)
            .map_err(|_| ApiError::NotFound("Unknown push rule".into()))?;
        Ok(())
    })
    .await?;
    Ok(set_pushrule_actions::v3::Response::new())
}
