//! A throwaway PostgreSQL cluster for this test binary: `initdb` in a temporary directory (as the
//! `postgres` system user when we are root), a server on 127.0.0.1 on a free port with its unix
//! socket in that directory, one fresh database per test. It is stopped and removed when the
//! test binary exits. PostgreSQL missing is a failure naming the package, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
/// The directory to remove at exit (a static is never dropped: `atexit` stops the server).
static STARTED: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

/// The newest installed PostgreSQL's `bin` directory.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file());
    found.sort_by_key(|b| {
        let v = b
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str());
        v.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): install the \
             Debian package `postgresql` (apt-get install postgresql)"
        )
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root (the server refuses root).
fn run(bin: &Path, program: &str, args: &[&str]) {
    let exe = bin.join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

extern "C" fn stop_at_exit() {
    if let Some((bin, dir)) = STARTED.lock().ok().and_then(|mut s| s.take()) {
        let data = dir.join("data");
        run(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Cluster {
    fn start() -> Cluster {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("paydvm-pg-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status();
            assert!(
                ok.is_ok_and(|s| s.success()),
                "chown postgres {}",
                dir.display()
            );
        }
        let data = dir.join("data");
        let (d, s) = (data.to_str().unwrap(), dir.to_str().unwrap());
        run(
            &bin,
            "initdb",
            &[
                "-D",
                d,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let port = free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {s} -c fsync=off -c max_connections=300"
        );
        let log = dir.join("server.log");
        *STARTED.lock().unwrap() = Some((bin.clone(), dir.clone()));
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(stop_at_exit) };
        run(
            &bin,
            "pg_ctl",
            &[
                "-D",
                d,
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        Cluster { dir, bin, port }
    }

    pub fn get() -> &'static Cluster {
        CLUSTER.get_or_init(Cluster::start)
    }

    /// A connection URL for database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in database `name` as the superuser.
    pub fn admin(&self, name: &str, sql: &str) -> Vec<tokio_postgres::Row> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = self.url(name);
        let sql = sql.to_string();
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.simple_query(&sql).await.unwrap();
            let rows = if sql.trim_start().to_uppercase().starts_with("SELECT") {
                client.query(&sql, &[]).await.unwrap()
            } else {
                Vec::new()
            };
            rows
        })
    }

    /// A new, empty database for one test.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("t_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.admin("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> (&Path, &Path) {
        (&self.dir, &self.bin)
    }
}
