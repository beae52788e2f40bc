//! Where the run's ledgers live: SQLite files in a directory, or databases on a PostgreSQL
//! server (a throwaway durable cluster, or the server of `--pg-url`).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use paydvm::config::LedgerPlace;
use paydvm::ledger_handle::LedgerHandle;
use paydvm_ledger::StoreOptions;
use paydvm_ledger_pg::throwaway::{ClusterOptions, ThrowawayCluster};
use paydvm_ledger_pg::PgLocation;

use crate::{Args, StoreKind};

pub struct Stores {
    dir: PathBuf,
    own_dir: bool,
    kind: StoreKind,
    server: Option<PgServer>,
    /// SQLite files written, to remove at the end.
    files: Vec<PathBuf>,
}

/// A PostgreSQL server and the databases this run created on it.
pub struct PgServer {
    cluster: Option<ThrowawayCluster>,
    /// `--pg-url`: the URL whose database we connect to for `CREATE DATABASE`.
    url: Option<String>,
    created: Vec<String>,
}

impl Stores {
    pub fn new(args: &Args) -> anyhow::Result<Stores> {
        let (dir, own_dir) = match &args.dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!("paydvm-bench-{}", std::process::id())),
                true,
            ),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let needs_pg = args.store == StoreKind::Pg;
        let server = if needs_pg {
            Some(PgServer::start(args.pg_url.as_deref())?)
        } else {
            None
        };
        Ok(Stores {
            dir,
            own_dir,
            kind: args.store,
            server,
            files: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty ledger of the measured store named `name`.
    pub fn place(&mut self, name: &str) -> anyhow::Result<LedgerPlace> {
        match self.kind {
            StoreKind::Sqlite => self.file(name),
            StoreKind::Pg => {
                let server = self.server.as_mut().context("no PostgreSQL server")?;
                Ok(LedgerPlace::from_arg(&server.create(name)?)?)
            }
        }
    }

    /// A new, empty SQLite ledger file named `name` (whatever store is measured).
    pub fn file(&mut self, name: &str) -> anyhow::Result<LedgerPlace> {
        let path = self.dir.join(format!("{name}.db"));
        ensure!(
            !path.exists(),
            "{} exists already; give an empty directory",
            path.display()
        );
        self.files.push(path.clone());
        Ok(LedgerPlace::File(path))
    }

    pub fn open(
        &self,
        place: &LedgerPlace,
        options: &StoreOptions,
    ) -> anyhow::Result<LedgerHandle> {
        LedgerHandle::open(place, options).with_context(|| format!("opening {place}"))
    }

    /// `--cache-mib` on an SQLite store's connection.
    pub fn tune(&self, store: &LedgerHandle, cache_mib: u64) -> anyhow::Result<()> {
        if let (Some(sqlite), true) = (store.sqlite(), cache_mib > 0) {
            let kib = i64::try_from(cache_mib * 1024)?;
            // A negative cache_size is a size in KiB rather than in pages.
            sqlite
                .connection()
                .pragma_update(None, "cache_size", -kib)?;
            println!("   (SQLite page cache set to {cache_mib} MiB)");
        }
        Ok(())
    }

    /// The file (plus its WAL) or the database's size on the server.
    pub fn print_size(&self, place: &LedgerPlace, events: u64) {
        let size = match place {
            LedgerPlace::File(path) => {
                let wal = path.with_extension("db-wal");
                [path.as_path(), wal.as_path()]
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum()
            }
            LedgerPlace::Postgres(_) => match &self.server {
                Some(s) => s.size(place).unwrap_or(0),
                None => 0,
            },
        };
        println!(
            "   size: {:.1} MiB ({} bytes/event)",
            size as f64 / 1_048_576.0,
            size / events.max(1)
        );
    }

    /// Best effort: leftovers are not worth failing the run for.
    pub fn clean_up(&mut self, keep: bool) {
        if let Some(server) = self.server.as_mut() {
            server.clean_up(keep);
        }
        if keep {
            return;
        }
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            for f in &self.files {
                for suffix in ["", "-wal", "-shm"] {
                    let mut name = f.clone().into_os_string();
                    name.push(suffix);
                    let _ = std::fs::remove_file(name);
                }
            }
        }
    }
}

impl PgServer {
    fn start(url: Option<&str>) -> anyhow::Result<PgServer> {
        let cluster = match url {
            Some(_) => None,
            None => {
                let c = ThrowawayCluster::start(&ClusterOptions::durable())
                    .context("starting a throwaway PostgreSQL cluster")?;
                println!(
                    "   (throwaway PostgreSQL cluster, fsync on, in {})",
                    c.dir().display()
                );
                Some(c)
            }
        };
        Ok(PgServer {
            cluster,
            url: url.map(str::to_owned),
            created: Vec::new(),
        })
    }

    /// Creates database `paydvm_bench_<pid>_<name>`; its URL.
    fn create(&mut self, name: &str) -> anyhow::Result<String> {
        let db = format!("paydvm_bench_{}_{name}", std::process::id());
        self.sql(&format!("CREATE DATABASE {db}"))?;
        self.created.push(db.clone());
        match (&self.cluster, &self.url) {
            (Some(c), _) => Ok(c.url(&db)),
            (None, Some(url)) => {
                let mut u = url::Url::parse(url)?;
                u.set_path(&format!("/{db}"));
                Ok(u.to_string())
            }
            (None, None) => unreachable!("a server has a cluster or a URL"),
        }
    }

    fn size(&self, place: &LedgerPlace) -> anyhow::Result<u64> {
        let db = self
            .created
            .iter()
            .find(|d| place.to_string().contains(d.as_str()))
            .context("not a database of this run")?;
        let rows = self.sql(&format!("SELECT pg_database_size('{db}')"))?;
        let size: i64 = rows.first().context("no row")?.try_get(0)?;
        Ok(u64::try_from(size)?)
    }

    /// One statement on the server's maintenance database (a SELECT's rows are returned).
    fn sql(&self, sql: &str) -> anyhow::Result<Vec<tokio_postgres::Row>> {
        if let Some(c) = &self.cluster {
            return Ok(c.admin("postgres", sql)?);
        }
        let url = self.url.as_deref().context("no server URL")?;
        let config = PgLocation::parse(url)?.config().clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let sql = sql.to_owned();
        runtime.block_on(async move {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            if sql.starts_with("SELECT") {
                return Ok(client.query(&sql, &[]).await?);
            }
            client.batch_execute(&sql).await?;
            Ok(Vec::new())
        })
    }

    fn clean_up(&mut self, keep: bool) {
        if keep || self.cluster.is_some() {
            // The throwaway cluster is stopped and removed on drop, databases and all.
            return;
        }
        for db in std::mem::take(&mut self.created) {
            if let Err(e) = self.sql(&format!("DROP DATABASE IF EXISTS {db}")) {
                eprintln!("could not drop database {db}: {e:#}");
            }
        }
    }
}
