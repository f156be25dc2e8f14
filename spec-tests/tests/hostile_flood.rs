//! Floods: password guessing, mass registration and message floods meet `M_LIMIT_EXCEEDED`
//! with a `retry_after_ms`, per address (behind a trusted proxy, the forwarded one) and per
//! account, with the default limits.

use plexus_spec_tests::{enc, Resp, Server};
use serde_json::{json, Value};

/// `POST path` as a client at `ip`, through the loopback proxy Plexus trusts by default.
async fn post_from(s: &Server, ip: &str, path: &str, body: Value) -> Resp {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", s.base))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    Resp {
        status,
        body: r.json().await.unwrap_or(Value::Null),
    }
}

fn login(user: &str, password: &str) -> Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
           "password": password})
}

/// After a burst, the server holds no more than 64 MiB more than before it.
fn rss_came_back(s: &Server, before_kib: u64, what: &str) {
    let (now, peak) = s.memory_kib();
    println!("{what}: RSS {before_kib} KiB before, {now} KiB after, peak {peak} KiB");
    assert!(
        now < before_kib + 64 * 1024,
        "{what} left RSS at {now} KiB (from {before_kib} KiB)"
    );
}

fn limited(r: &Resp) -> bool {
    r.status == 429
        && r.body["errcode"] == "M_LIMIT_EXCEEDED"
        && r.body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_slowed_per_account_from_any_address() {
    let s = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_RATE_LIMITS", "on"),
    ])
    .await;
    let victim = s.user("victim").await;
    let (rss0, _) = s.memory_kib();
    let mut answers = vec![];
    for i in 0..30 {
        let ip = format!("198.51.100.{}", i + 1);
        answers.push(
            post_from(
                &s,
                &ip,
                "/_matrix/client/v3/login",
                login("victim", &format!("guess{i}")),
            )
            .await,
        );
    }
    let wrong = answers.iter().filter(|r| r.status == 403).count();
    assert!(wrong <= 5, "{wrong} guesses were checked");
    assert!(answers[5..].iter().all(limited), "{:?}", &answers[5..]);
    // The right password waits too while the account is being guessed at; the account's
    // existing sessions go on working.
    let r = post_from(
        &s,
        "192.0.2.1",
        "/_matrix/client/v3/login",
        login("victim", "password-1234"),
    )
    .await;
    assert!(limited(&r), "{r:?}");
    victim.get("/_matrix/client/v3/account/whoami").await.ok();
    rss_came_back(&s, rss0, "30 password guesses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_and_registrations_are_limited_per_address() {
    let s = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_RATE_LIMITS", "on"),
    ])
    .await;
    s.user("una").await;
    let (rss0, _) = s.memory_kib();
    let mut statuses = vec![];
    for _ in 0..25 {
        let r = post_from(
            &s,
            "203.0.113.5",
            "/_matrix/client/v3/login",
            login("una", "password-1234"),
        )
        .await;
        assert!(r.status == 200 || limited(&r), "{r:?}");
        statuses.push(r.status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!((20..25).contains(&ok), "{statuses:?}");
    // Another address is not held back by the first.
    let r = post_from(
        &s,
        "203.0.113.6",
        "/_matrix/client/v3/login",
        login("una", "password-1234"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    let mut limited_at = None;
    for i in 0..40 {
        let r = post_from(
            &s,
            "203.0.113.7",
            "/_matrix/client/v3/register",
            json!({"username": format!("bot{i}"), "password": "password-1234",
                   "auth": {"type": "m.login.dummy"}}),
        )
        .await;
        if limited(&r) {
            limited_at = Some(i);
            break;
        }
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(
        limited_at.is_some_and(|i| (19..=21).contains(&i)),
        "registrations from one address were limited at {limited_at:?}"
    );
    rss_came_back(&s, rss0, "25 logins and 21 registrations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_flood_is_slowed_and_recovers() {
    let s = Server::start_with(&[
        ("PLEXUS_REGISTRATION", "open"),
        ("PLEXUS_RATE_LIMITS", "on"),
    ])
    .await;
    let alice = s.user("alice").await;
    let room = alice.create_room(json!({})).await;
    let (rss0, _) = s.memory_kib();
    let mut first_limit = None;
    for i in 0..300 {
        let r = alice
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/flood{i}",
                    enc(&room)
                ),
                json!({"msgtype": "m.text", "body": format!("flood {i}")}),
            )
            .await;
        if r.status != 200 {
            assert!(limited(&r), "{r:?}");
            first_limit = Some(r);
            break;
        }
    }
    let r = first_limit.expect("300 messages in a burst were never limited");
    let wait = r.body["retry_after_ms"].as_u64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(wait + 50)).await;
    alice.send_text(&room, "after waiting").await;
    rss_came_back(&s, rss0, "a message flood");
}
