//! A throwaway PostgreSQL cluster for tests, benchmarks and the demo: `initdb` in a temporary
//! directory (as the `postgres` system user when we are root: the server refuses root), a server
//! on 127.0.0.1 on a free port with its unix socket in that directory, fresh databases on demand.
//! It is stopped and its directory removed on drop ([`ThrowawayCluster::shared`]: at process
//! exit). PostgreSQL missing is an error naming the Debian package, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Why a throwaway cluster could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL is not installed (no {0}/*/bin/initdb): install the Debian package \
         `postgresql` (apt-get install postgresql)"
    )]
    NotInstalled(String),
    #[error("{program} failed: {output}")]
    Program { program: String, output: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Sql(#[from] tokio_postgres::Error),
}

/// How the server runs. Tests want speed (`fsync = off`); benchmarks want what an operator runs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub fsync: bool,
    pub max_connections: u32,
}

impl ClusterOptions {
    /// For tests: no fsync (a crash of the test machine loses nothing anyone needs).
    pub fn for_tests() -> Self {
        ClusterOptions {
            fsync: false,
            max_connections: 300,
        }
    }

    /// For benchmarks: PostgreSQL's defaults for durability.
    pub fn durable() -> Self {
        ClusterOptions {
            fsync: true,
            max_connections: 100,
        }
    }
}

pub struct ThrowawayCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The server's settings (`pg_ctl -o`), to start it again after [`ThrowawayCluster::pause`].
    server: String,
    /// The shared cluster is stopped by `atexit`, not by drop (a static is never dropped).
    stop_on_drop: bool,
}

static SHARED: OnceLock<ThrowawayCluster> = OnceLock::new();
static SHARED_STOP: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);
const INSTALL_ROOT: &str = "/usr/lib/postgresql";

/// The newest installed PostgreSQL's `bin` directory.
fn bin_dir() -> Result<PathBuf, ClusterError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(INSTALL_ROOT)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file());
    found.sort_by_key(|b| {
        let version = b
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str());
        version.and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    found
        .pop()
        .ok_or_else(|| ClusterError::NotInstalled(INSTALL_ROOT.to_string()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root.
fn run(bin: &Path, program: &str, args: &[&str]) -> Result<(), ClusterError> {
    let exe = bin.join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd.args(args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(ClusterError::Program {
        program: format!("{program} {args:?}"),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

fn stop(bin: &Path, dir: &Path) {
    let data = dir.join("data");
    let data = data.to_string_lossy();
    let _ = run(
        bin,
        "pg_ctl",
        &["-D", &data, "-m", "immediate", "-w", "stop"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

extern "C" fn stop_shared_at_exit() {
    if let Some((bin, dir)) = SHARED_STOP.lock().ok().and_then(|mut s| s.take()) {
        stop(&bin, &dir);
    }
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A directory the server's user may own, unique in this process.
fn fresh_dir() -> Result<PathBuf, ClusterError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("paydvm-pg-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    if is_root() {
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()?;
        if !status.success() {
            return Err(ClusterError::Program {
                program: format!("chown postgres {}", dir.display()),
                output: status.to_string(),
            });
        }
    }
    Ok(dir)
}

impl ThrowawayCluster {
    /// Creates and starts a cluster; it is stopped and removed when dropped.
    pub fn start(options: &ClusterOptions) -> Result<ThrowawayCluster, ClusterError> {
        let bin = bin_dir()?;
        let dir = fresh_dir()?;
        let data = dir.join("data");
        let (d, s) = (data.to_string_lossy(), dir.to_string_lossy());
        let initdb = [
            "-D",
            &d,
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ];
        // From here on a failure must not leave the directory behind.
        let mut cluster = ThrowawayCluster {
            dir: dir.clone(),
            bin: bin.clone(),
            port: 0,
            server: String::new(),
            stop_on_drop: true,
        };
        run(&bin, "initdb", &initdb)?;
        cluster.port = free_port()?;
        cluster.server = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {s} -c fsync={} -c max_connections={}",
            cluster.port,
            if options.fsync { "on" } else { "off" },
            options.max_connections
        );
        cluster.resume()?;
        Ok(cluster)
    }

    /// Stops the server and keeps its data, as a restart (or an operator) would: sessions end,
    /// new connections are refused until [`ThrowawayCluster::resume`].
    pub fn pause(&self) -> Result<(), ClusterError> {
        let data = self.dir.join("data");
        let data = data.to_string_lossy();
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "stop"],
        )
    }

    /// Starts the server (again), on the same port with the same settings.
    pub fn resume(&self) -> Result<(), ClusterError> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &self.server,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        )
    }

    /// One cluster per process for tests (`fsync = off`), started on first use and stopped at
    /// exit. Panics if it cannot start: a test cannot go on without it.
    pub fn shared() -> &'static ThrowawayCluster {
        SHARED.get_or_init(|| {
            let mut cluster = ThrowawayCluster::start(&ClusterOptions::for_tests())
                .unwrap_or_else(|e| panic!("{e}"));
            cluster.stop_on_drop = false;
            *SHARED_STOP.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((cluster.bin.clone(), cluster.dir.clone()));
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(stop_shared_at_exit) };
            cluster
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's directory (data, socket, `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A connection URL for database `name` (superuser, trust authentication on 127.0.0.1).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` in database `name` as the superuser; a SELECT's rows are returned.
    pub fn admin(&self, name: &str, sql: &str) -> Result<Vec<tokio_postgres::Row>, ClusterError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let url = self.url(name);
        runtime.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            if sql.trim_start().to_uppercase().starts_with("SELECT") {
                return Ok(client.query(sql, &[]).await?);
            }
            client.batch_execute(sql).await?;
            Ok(Vec::new())
        })
    }

    /// A new, empty database; its name.
    pub fn fresh_database(&self) -> Result<String, ClusterError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("t_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.admin("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(name)
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        if self.stop_on_drop {
            stop(&self.bin, &self.dir);
        }
    }
}
