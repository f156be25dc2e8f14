//! Spaces: `GET /_matrix/client/v1/rooms/{roomId}/hierarchy` on one server (order, who sees
//! what, `max_depth`, `suggested_only`, paging, bad input) and across two servers, where the
//! child rooms the asking server is not in come over federation `/hierarchy`.

use plexus_spec_tests::{enc, Client, Server};
use serde_json::{json, Value};

async fn space(c: &Client, name: &str, preset: &str) -> String {
    c.create_room(json!({
        "preset": preset,
        "name": name,
        "creation_content": {"type": "m.space"},
    }))
    .await
}

async fn room(c: &Client, name: &str, extra: Value) -> String {
    let mut body = json!({"preset": "public_chat", "name": name});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    c.create_room(body).await
}

async fn add_child(c: &Client, parent: &str, child: &str, content: Value) {
    c.put_state(parent, "m.space.child", child, content)
        .await
        .ok();
}

async fn hierarchy(c: &Client, room: &str, query: &str) -> Value {
    let r = c
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/hierarchy?{query}",
            enc(room)
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn names(h: &Value) -> Vec<String> {
    h["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_tree_shows_each_user_what_they_may_see() {
    let s = Server::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let here = json!(["localhost"]);

    let top = space(&alice, "Top", "public_chat").await;
    let general = room(&alice, "general", json!({"room_alias_name": "general"})).await;
    let secret = room(&alice, "secret", json!({"preset": "private_chat"})).await;
    let members = room(
        &alice,
        "members",
        json!({"initial_state": [{
            "type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": top}]},
        }]}),
    )
    .await;
    let sub = space(&alice, "Sub", "public_chat").await;
    let deep = room(&alice, "deep", json!({})).await;
    // Children with an `order` come first, by order; the rest by when they were added.
    add_child(&alice, &top, &general, json!({"via": here, "order": "b"})).await;
    add_child(&alice, &top, &secret, json!({"via": here, "order": "a"})).await;
    add_child(&alice, &top, &members, json!({"via": here})).await;
    add_child(&alice, &top, &sub, json!({"via": here, "suggested": true})).await;
    add_child(&alice, &sub, &deep, json!({"via": here})).await;
    // A child event in a room that is not a space means nothing.
    add_child(&alice, &general, &deep, json!({"via": here})).await;
    // No `via`: not a child at all.
    let stray = room(&alice, "stray", json!({})).await;
    add_child(&alice, &top, &stray, json!({})).await;
    assert_eq!(bob.join(&top).await.status, 200);

    let all = hierarchy(&alice, &top, "").await;
    assert_eq!(
        names(&all),
        ["Top", "secret", "general", "members", "Sub", "deep"]
    );
    assert!(all.get("next_batch").is_none(), "{all}");
    let first = &all["rooms"][0];
    assert_eq!(first["room_type"], "m.space");
    assert_eq!(first["join_rule"], "public");
    assert_eq!(first["num_joined_members"], 2);
    let children: Vec<&str> = first["children_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(children, [&secret, &general, &members, &sub]);
    assert!(first["children_state"][0]["origin_server_ts"].is_u64());
    assert_eq!(all["rooms"][3]["allowed_room_ids"], json!([top]));
    // A room that is not a space has no children, whatever state it holds.
    assert_eq!(all["rooms"][2]["name"], "general");
    assert_eq!(all["rooms"][2]["children_state"], json!([]));

    // Bob is in the space: the restricted room is his to see, the invite-only one is not.
    let seen = hierarchy(&bob, &top, "").await;
    assert_eq!(names(&seen), ["Top", "general", "members", "Sub", "deep"]);
    // Carol is in nothing: public rooms only.
    assert_eq!(
        names(&hierarchy(&carol, &top, "").await),
        ["Top", "general", "Sub", "deep"]
    );
    assert_eq!(
        names(&hierarchy(&bob, &top, "max_depth=1").await),
        ["Top", "general", "members", "Sub"]
    );
    assert_eq!(names(&hierarchy(&bob, &top, "max_depth=0").await), ["Top"]);
    assert_eq!(
        names(&hierarchy(&bob, &top, "suggested_only=true").await),
        ["Top", "Sub"]
    );

    // Pages of two add up to the whole tree, and the last one has no next_batch.
    let mut paged = vec![];
    let mut from: Option<String> = None;
    for _ in 0..5 {
        let q = match &from {
            Some(f) => format!("limit=2&from={}", enc(f)),
            None => "limit=2".to_owned(),
        };
        let page = hierarchy(&bob, &top, &q).await;
        assert!(page["rooms"].as_array().unwrap().len() <= 2);
        paged.extend(names(&page));
        match page["next_batch"].as_str() {
            Some(n) => from = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, names(&seen));

    let path = |q: &str| format!("/_matrix/client/v1/rooms/{}/hierarchy?{q}", enc(&top));
    let first_page = hierarchy(&bob, &top, "limit=2").await;
    let next = first_page["next_batch"].as_str().unwrap();
    bob.get(&path(&format!("limit=2&max_depth=1&from={}", enc(next))))
        .await
        .err(400, "M_INVALID_PARAM");
    bob.get(&path("from=nonsense"))
        .await
        .err(400, "M_INVALID_PARAM");
    bob.get(&path("limit=0")).await.err(400, "M_INVALID_PARAM");
    bob.get(&path("max_depth=-1"))
        .await
        .err(400, "M_INVALID_PARAM");
    // A private space is not shown to someone outside it, nor an unknown room.
    let hidden = space(&alice, "Hidden", "private_chat").await;
    carol
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/hierarchy",
            enc(&hidden)
        ))
        .await
        .err(403, "M_FORBIDDEN");
    carol
        .get("/_matrix/client/v1/rooms/!nowhere:localhost/hierarchy")
        .await
        .err(403, "M_FORBIDDEN");
    s.client().get(&path("")).await.err(401, "M_MISSING_TOKEN");

    // One room's summary, by id or alias, with the caller's membership; without a token,
    // only what anyone may preview.
    let summary = |c: Client, room: String| async move {
        c.get(&format!("/_matrix/client/v1/room_summary/{}", enc(&room)))
            .await
    };
    let g = summary(alice.clone(), "#general:localhost".into()).await;
    assert_eq!(g.ok()["room_id"], general.as_str());
    assert_eq!(g.body["name"], "general");
    assert_eq!(g.body["membership"], "join");
    assert_eq!(g.body["room_version"], "12");
    assert!(g.body.get("children_state").is_none());
    let anon = summary(s.client(), general.clone()).await;
    assert_eq!(anon.ok()["name"], "general");
    assert!(anon.body.get("membership").is_none());
    summary(s.client(), secret.clone())
        .await
        .err(404, "M_NOT_FOUND");
    summary(carol.clone(), secret.clone())
        .await
        .err(404, "M_NOT_FOUND");
    summary(carol.clone(), members.clone())
        .await
        .err(404, "M_NOT_FOUND");
    let m = summary(bob.clone(), members.clone()).await;
    assert_eq!(m.ok()["join_rule"], "restricted");
    assert!(m.body.get("membership").is_none());
    summary(bob.clone(), "!nowhere:localhost".into())
        .await
        .err(404, "M_NOT_FOUND");
    summary(bob.clone(), "#nothing:localhost".into())
        .await
        .err(404, "M_NOT_FOUND");

    // MSC3266's unstable paths, which matrix-js-sdk (and so Cinny) calls: the same summary,
    // with the MSC's unstable names too; the same refusals.
    for form in ["rooms/{}/summary", "summary/{}"] {
        let unstable = |c: Client, room: String| async move {
            let path = form.replace("{}", &enc(&room));
            c.get(&format!("/_matrix/client/unstable/im.nheko.summary/{path}"))
                .await
        };
        let u = unstable(alice.clone(), "#general:localhost".into()).await;
        assert_eq!(u.ok()["room_id"], general.as_str(), "{form}");
        assert_eq!(u.body["membership"], "join");
        assert_eq!(u.body["im.nheko.summary.room_version"], "12");
        assert_eq!(u.body["num_joined_members"], g.body["num_joined_members"]);
        unstable(carol.clone(), secret.clone())
            .await
            .err(404, "M_NOT_FOUND");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_rooms_on_another_server_come_over_federation() {
    let (a, b) = tokio::join!(Server::federated(), Server::federated());
    let alice = a.user("alice").await;
    let bob = b.user("bob").await;
    let via = json!([a.server_name]);
    let top = space(&alice, "Top", "public_chat").await;
    let lobby = room(&alice, "lobby", json!({})).await;
    let staff = room(
        &alice,
        "staff",
        json!({"initial_state": [{
            "type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": top}]},
        }]}),
    )
    .await;
    let private = room(&alice, "private", json!({"preset": "private_chat"})).await;
    let sub = space(&alice, "Sub", "public_chat").await;
    let deep = room(&alice, "deep", json!({})).await;
    for (child, order) in [(&lobby, "a"), (&staff, "b"), (&private, "c"), (&sub, "d")] {
        add_child(&alice, &top, child, json!({"via": via, "order": order})).await;
    }
    add_child(&alice, &sub, &deep, json!({"via": via})).await;

    // Bob's server is in the space only: every child is fetched from A. The restricted
    // room shows because bob is in the space; the private one is A's to withhold.
    let r = bob.join_via(&top, &a.server_name).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = hierarchy(&bob, &top, "").await;
    assert_eq!(names(&h), ["Top", "lobby", "staff", "Sub", "deep"], "{h}");
    let lobby_summary = &h["rooms"][1];
    assert_eq!(lobby_summary["room_id"], lobby.as_str());
    assert_eq!(lobby_summary["num_joined_members"], 1);
    assert_eq!(lobby_summary["join_rule"], "public");
    assert_eq!(h["rooms"][3]["room_type"], "m.space");
    assert_eq!(
        names(&hierarchy(&bob, &top, "limit=3").await),
        ["Top", "lobby", "staff"]
    );

    // A summary of a room B is not in, from the server named in `via`.
    let r = bob
        .get(&format!(
            "/_matrix/client/v1/room_summary/{}?via={}",
            enc(&lobby),
            enc(&a.server_name)
        ))
        .await;
    assert_eq!(r.ok()["name"], "lobby");
    assert_eq!(r.body["num_joined_members"], 1);

    // Another user of B, in nothing, does not see the restricted room even though B does.
    let erin = b.user("erin").await;
    assert_eq!(
        names(&hierarchy(&erin, &top, "").await),
        ["Top", "lobby", "Sub", "deep"]
    );
}
