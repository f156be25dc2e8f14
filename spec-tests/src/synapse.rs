//! Synapse (from PyPI) as a real federation peer on loopback, started by `synapse/synapse.sh`;
//! and SIGSTOP/SIGCONT for it and for a Plexus [`Server`], to partition a federation without
//! closing any socket (a stopped server's kernel still accepts connections, nothing answers).
//!
//! Needs python3 with venv; the Synapse venv is installed once under `target/synapse-venv`.

use std::{path::PathBuf, process::Command};

use crate::{free_port, Client, Server};

/// A federating Synapse in a temporary directory, stopped on drop.
pub struct Synapse {
    dir: tempfile::TempDir,
    script: PathBuf,
    /// The client API, `http://127.0.0.1:<port>`.
    pub base: String,
    /// `127.0.0.1:<fed_port>`.
    pub server_name: String,
}

impl Synapse {
    /// Install (once) and start a federating Synapse; blocks until it answers.
    pub fn start() -> Synapse {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("synapse/synapse.sh");
        let venv = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("../target"))
            .join("synapse-venv");
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, fed) = (free_port(), free_port());
        let out = Command::new("bash")
            .arg(&script)
            .args(["start-fed", dir.path().to_str().unwrap()])
            .args([port.to_string(), fed.to_string()])
            .env("SYNAPSE_VENV", &venv)
            .output()
            .expect("run synapse.sh");
        assert!(
            out.status.success(),
            "synapse did not start:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Synapse {
            dir,
            script,
            base: format!("http://127.0.0.1:{port}"),
            server_name: format!("127.0.0.1:{fed}"),
        }
    }

    /// Register a fresh user and return a logged-in client.
    pub async fn user(&self, name: &str) -> Client {
        let mut c = Client {
            base: self.base.clone(),
            http: reqwest::Client::new(),
            token: None,
            user_id: String::new(),
            device_id: String::new(),
        };
        c.register(name, "password-1234").await;
        c
    }

    /// `homeserver.log` (warnings and worse).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default()
    }

    /// The daemon's process id, from its pid file.
    pub fn pid(&self) -> u32 {
        let path = self.dir.path().join("homeserver.pid");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", path.display()))
    }

    /// SIGSTOP: Synapse stops answering until [`Self::resume`].
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        // A stopped Synapse would sit on its SIGTERM until `stop` gives up and kills it.
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("homeserver.pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
        }
        let _ = Command::new("bash")
            .arg(&self.script)
            .args(["stop", self.dir.path().to_str().unwrap()])
            .output();
    }
}

/// `kill -<sig> <pid>`, which must succeed.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}: {status}");
}

/// SIGSTOP a running Plexus server (SIGKILL on drop still ends it).
pub fn pause(server: &Server) {
    signal(server.pid().expect("server is running"), "STOP");
}

/// SIGCONT after [`pause`].
pub fn resume(server: &Server) {
    signal(server.pid().expect("server is running"), "CONT");
}
