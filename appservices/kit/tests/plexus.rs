//! The kit against a real Plexus: the same scenario as against Synapse, on the `plexus` binary
//! built beside this test (`cargo build -p plexus` first, as spec-tests need too).
// Test and bench code: a failed step is the run failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenario;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use tokio::net::TcpListener;

struct Plexus(Child);

impl Drop for Plexus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kit_scenario_against_plexus() {
    let exe = std::env::current_exe().expect("exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("plexus");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p plexus` first",
        bin.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let as_port = listener.local_addr().expect("addr").port();
    let registration = dir.path().join("kit-registration.yaml");
    scenario::write_registration(&registration, as_port, "localhost").expect("registration");
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("plexus.log")).expect("log");
    let _plexus = Plexus(
        Command::new(&bin)
            .env("PLEXUS_DATA_DIR", dir.path().join("data"))
            .env("PLEXUS_CLIENT_LISTEN", format!("127.0.0.1:{port}"))
            .env("PLEXUS_REGISTRATION", "open")
            .env("PLEXUS_LOG", "warn")
            .env("PLEXUS_APPSERVICE_REGISTRATIONS", &registration)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start plexus"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http
            .get(format!("{base}/_matrix/client/versions"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "plexus did not start");
    scenario::run(
        scenario::Homeserver {
            base_url: &base,
            server_name: "localhost",
            registration: &registration,
        },
        listener,
    )
    .await;
}
