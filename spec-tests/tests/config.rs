//! Start-up configuration: bad values are refused with an error naming the key.

use std::process::Command;

use plexus_spec_tests::plexus_bin;

fn run(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(plexus_bin());
    cmd.env("PLEXUS_DATA_DIR", dir.path()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_settings_name_the_key() {
    let (code, err) = run(&[("PLEXUS_REGISTRATION", "sometimes")], &["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains("PLEXUS_REGISTRATION"), "{err}");
    let (code, err) = run(&[("PLEXUS_CLIENT_LISTEN", "nowhere")], &["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains("listeners.client"), "{err}");
    let (code, err) = run(
        &[
            ("PLEXUS_CLIENT_LISTEN", "0.0.0.0:8008"),
            ("PLEXUS_REGISTRATION", "open"),
        ],
        &["check-config"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("registration.policy"), "{err}");
    let (code, err) = run(&[("PLEXUS_SERVER_NAME", "bad name")], &["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains("server_name"), "{err}");
}

#[test]
fn config_file_is_read_and_validated() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "server_name = \"example.org\"\n[listeners]\nclient = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let (code, err) = run(&[], &["--config", good.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 0, "{err}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "server_name = \"example.org\"\n[limits]\nmax_request_bytes = 10\n",
    )
    .unwrap();
    let (code, err) = run(&[], &["--config", bad.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains("limits.max_request_bytes"), "{err}");
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "sever_name = \"x\"\n").unwrap();
    let (code, err) = run(&[], &["--config", typo.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains("sever_name"), "{err}");
    // The shipped example config is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/plexus.toml");
    let (code, err) = run(&[], &["--config", example, "check-config"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn create_user_admin_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(plexus_bin())
        .env("PLEXUS_DATA_DIR", dir.path())
        .args([
            "create-user",
            "--username",
            "root",
            "--password",
            "pw-123456",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("@root:localhost"));
    let again = Command::new(plexus_bin())
        .env("PLEXUS_DATA_DIR", dir.path())
        .args(["create-user", "--username", "root", "--password", "x"])
        .output()
        .unwrap();
    assert!(!again.status.success());
}

/// An operator can follow one request through the log: every line logged while it is handled
/// names its id (the `X-Request-Id` the client got back), route, user and device.
#[tokio::test]
async fn each_request_is_logged_in_its_own_span() {
    let server = plexus_spec_tests::Server::start_with(&[
        ("PLEXUS_LOG", "warn,tower_http=debug"),
        ("PLEXUS_LOG_FORMAT", "json"),
    ])
    .await;
    let alice = server.user("alice").await;
    let res = alice
        .bytes("GET", "/_matrix/client/v3/account/whoami", &[], None)
        .await;
    assert_eq!(res.status, 200);
    let id: u64 = res.header("x-request-id").parse().expect("X-Request-Id");
    let whoami: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    let device = whoami["device_id"].as_str().unwrap().to_owned();

    let span = plexus_spec_tests::eventually(10, "the request's log line", || {
        let log = server.log_text();
        async move {
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|l| l["fields"]["message"] == "finished processing request")
                .map(|l| l["span"].clone())
                .find(|s| s["name"] == "request" && s["id"] == id)
        }
    })
    .await;
    assert_eq!(span["method"], "GET");
    assert_eq!(span["route"], "/_matrix/client/v3/account/whoami");
    assert_eq!(span["user"], "@alice:localhost");
    assert_eq!(span["device"], device.as_str());

    // An unauthenticated request has no user; each request has its own id.
    let versions = server
        .client()
        .bytes("GET", "/_matrix/client/versions", &[], None)
        .await;
    let other: u64 = versions.header("x-request-id").parse().unwrap();
    assert_ne!(other, id);
    // So does an answer from the fallback.
    let unknown = server
        .client()
        .bytes("GET", "/_matrix/client/v3/no_such_endpoint", &[], None)
        .await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.header("x-request-id").parse::<u64>().is_ok());
}

#[test]
fn an_unknown_log_format_is_refused() {
    let (code, err) = run(&[("PLEXUS_LOG_FORMAT", "xml")], &["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains("PLEXUS_LOG_FORMAT"), "{err}");
}
