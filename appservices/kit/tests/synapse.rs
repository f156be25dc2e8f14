//! The kit against a real Synapse (from PyPI, started by spec-tests/synapse/synapse.sh with the
//! scenario's registration). Needs python3 (and network access the first time, to install
//! Synapse into target/synapse-venv); without them this fails, it does not skip.
// Test and bench code: a failed step is the run failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod scenario;

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::net::TcpListener;

/// Stops Synapse however the test ends; removes its directory only after a pass (and unless
/// `KIT_KEEP_SYNAPSE` is set), so a failure leaves homeserver.log to read.
struct Synapse {
    script: PathBuf,
    dir: PathBuf,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
        if !std::thread::panicking() && std::env::var_os("KIT_KEEP_SYNAPSE").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "Synapse's log: {}",
                self.dir.join("homeserver.log").display()
            );
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kit_scenario_against_synapse() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace");
    let script = workspace.join("spec-tests/synapse/synapse.sh");
    let dir = workspace.join(format!(
        "target/tmp/appservice-kit-synapse-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("synapse dir");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let as_port = listener.local_addr().expect("addr").port();
    let registration = dir.join("kit-registration.yaml");
    scenario::write_registration(&registration, as_port, "localhost").expect("registration");

    let port = free_port();
    let synapse = Synapse {
        script: script.clone(),
        dir: dir.clone(),
    };
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&dir)
        .arg(port.to_string())
        .env("SYNAPSE_VENV", workspace.join("target/synapse-venv"))
        .env("SYNAPSE_APPSERVICES", &registration)
        .status()
        .await
        .expect("run synapse.sh");
    assert!(
        status.success(),
        "Synapse did not start ({status}); it needs python3 and, the first time, PyPI"
    );

    let base = format!("http://127.0.0.1:{port}");
    scenario::run(
        scenario::Homeserver {
            base_url: &base,
            server_name: "localhost",
            registration: &registration,
        },
        listener,
    )
    .await;
    drop(synapse);
}
