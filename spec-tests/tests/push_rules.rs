//! Push rules: the default rule set, and every endpoint that edits it.

use plexus_spec_tests::{enc, Server};
use serde_json::json;

#[tokio::test]
async fn default_rules_and_editing() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    // The spec's defaults, also delivered in the first sync.
    let all = alice.get("/_matrix/client/v3/pushrules/").await;
    let overrides = all.ok()["global"]["override"].as_array().unwrap();
    assert_eq!(overrides[0]["rule_id"], ".m.rule.master");
    assert!(all.body["global"]["underride"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule_id"] == ".m.rule.message"));
    let s = alice.sync("").await;
    assert!(s["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "m.push_rules"));

    let rule = "/_matrix/client/v3/pushrules/global";
    // Add a content rule, then one before it; read them back in order.
    alice
        .put(
            &format!("{rule}/content/deploys"),
            json!({"pattern": "deploy", "actions": ["notify", {"set_tweak": "highlight"}]}),
        )
        .await
        .ok();
    alice
        .put(
            &format!("{rule}/content/incidents?before=deploys"),
            json!({"pattern": "incident", "actions": ["notify"]}),
        )
        .await
        .ok();
    let content = alice.get(&format!("{rule}/")).await.ok()["content"].clone();
    let ids: Vec<&str> = content
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(&ids[..2], &["incidents", "deploys"]);
    assert_eq!(
        alice.get(&format!("{rule}/content/deploys")).await.ok()["pattern"],
        "deploy"
    );

    // Enable/disable and change actions, on a user rule and on a server default.
    alice
        .put(
            &format!("{rule}/content/deploys/enabled"),
            json!({"enabled": false}),
        )
        .await
        .ok();
    assert_eq!(
        alice
            .get(&format!("{rule}/content/deploys/enabled"))
            .await
            .ok()["enabled"],
        false
    );
    alice
        .put(
            &format!("{rule}/override/.m.rule.master/enabled"),
            json!({"enabled": true}),
        )
        .await
        .ok();
    assert_eq!(
        alice
            .get(&format!("{rule}/override/.m.rule.master/enabled"))
            .await
            .ok()["enabled"],
        true
    );
    alice
        .put(
            &format!("{rule}/underride/.m.rule.message/actions"),
            json!({"actions": []}),
        )
        .await
        .ok();
    assert_eq!(
        alice
            .get(&format!("{rule}/underride/.m.rule.message/actions"))
            .await
            .ok()["actions"],
        json!([])
    );

    // Room and sender rules are named by their ids.
    let room = alice.create_room(json!({})).await;
    alice
        .put(
            &format!("{rule}/room/{}", enc(&room)),
            json!({"actions": []}),
        )
        .await
        .ok();
    alice
        .put(&format!("{rule}/room/not-a-room"), json!({"actions": []}))
        .await
        .err(400, "M_INVALID_PARAM");

    // Delete; defaults cannot be deleted; unknown rules are 404.
    alice
        .delete(&format!("{rule}/content/incidents"), json!({}))
        .await
        .ok();
    alice
        .get(&format!("{rule}/content/incidents"))
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .delete(&format!("{rule}/override/.m.rule.master"), json!({}))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .delete(&format!("{rule}/content/nope"), json!({}))
        .await
        .err(404, "M_NOT_FOUND");

    // Bad input.
    alice
        .put(&format!("{rule}/content/x"), json!({"actions": ["notify"]}))
        .await
        .err(400, "M_BAD_JSON");
    alice
        .put(&format!("{rule}/override/x"), json!({"actions": "loud"}))
        .await
        .err(400, "M_BAD_JSON");
    alice
        .put(&format!("{rule}/override/.mine"), json!({"actions": []}))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .put(
            &format!("{rule}/override/y?before=nope"),
            json!({"actions": []}),
        )
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .get(&format!("{rule}/bogus/x"))
        .await
        .err(400, "M_INVALID_PARAM");
    alice
        .put(
            "/_matrix/client/v3/user/@alice:localhost/account_data/m.push_rules",
            json!({}),
        )
        .await
        .err(400, "M_BAD_JSON");
    // Changes persist and show up as account data in sync.
    let s = alice.sync("").await;
    let pr = s["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .cloned()
        .unwrap();
    assert!(pr["content"]["global"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule_id"] == "deploys"));
}
