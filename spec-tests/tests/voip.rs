//! `/voip/turnServer`: `{}` without a TURN server (as Synapse answers, so web clients do not
//! log an error on every start), and TURN REST API credentials with a shared secret.

use plexus_spec_tests::Server;
use serde_json::json;

#[tokio::test]
async fn without_a_turn_server_the_answer_is_empty() {
    let srv = Server::start().await;
    let alice = srv.user("alice").await;
    let r = alice.get("/_matrix/client/v3/voip/turnServer").await;
    assert_eq!(r.ok(), &json!({}));
    srv.client()
        .get("/_matrix/client/v3/voip/turnServer")
        .await
        .err(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_shared_secret_gives_expiring_credentials() {
    let srv = Server::start_with(&[
        (
            "PLEXUS_TURN_URIS",
            "turn:turn.example.org:3478?transport=udp, turns:turn.example.org:5349",
        ),
        ("PLEXUS_TURN_SHARED_SECRET", "s3cret"),
    ])
    .await;
    let alice = srv.user("alice").await;
    let r = alice.get("/_matrix/client/v3/voip/turnServer").await;
    let body = r.ok();
    assert_eq!(
        body["uris"],
        json!([
            "turn:turn.example.org:3478?transport=udp",
            "turns:turn.example.org:5349"
        ])
    );
    assert_eq!(body["ttl"], 3600);
    let username = body["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, alice.user_id);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now + 3590..=now + 3610).contains(&expiry),
        "{expiry} vs {now}"
    );
    // The password is what a TURN server with the same secret computes (coturn's
    // `use-auth-secret`): base64(HMAC-SHA1(secret, username)).
    let expected = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s '{username}' | openssl dgst -sha1 -hmac s3cret -binary | base64"
        ))
        .output()
        .expect("openssl");
    assert_eq!(
        body["password"].as_str().unwrap(),
        String::from_utf8_lossy(&expected.stdout).trim()
    );
}
