//! The node's `[http]` endpoint: Prometheus metrics, health checks and a read-only status page,
//! served on the configured address (loopback unless configured otherwise, then with a token).
//!
//! - [`exporter`]: the process's Prometheus recorder and `/metrics`;
//! - [`health`]: `/healthz` and `/readyz`;
//! - [`status`]: `/api/status`, the JSON the page polls; [`ledger_view`] reads the ledger for
//!   it on a read-only connection of its own; [`history`] keeps the charts' samples;
//! - [`backends`]: probes the wallet and the trusted mints;
//! - [`disk`]: free space beside the ledger file;
//! - [`page`]: the page itself (HTML, JS and CSS compiled in; no CDN);
//! - [`auth`]: the bearer token.

pub mod auth;
pub mod backends;
pub mod disk;
pub mod exporter;
pub mod health;
pub mod history;
pub mod ledger_view;
pub mod page;
pub mod status;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::Secret;
use crate::lightning::LightningBackend;
use crate::node::now_ms;
use crate::node::relays::RelayBoard;
use crate::node::telemetry::Telemetry;

/// Binds the listening socket (before the node starts anything else, so a taken port fails
/// the start cleanly).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// What the server shows.
pub struct HttpParts {
    pub token: Option<Secret<String>>,
    pub telemetry: Telemetry,
    pub relays: RelayBoard,
    pub ledger: crate::config::LedgerPlace,
    pub node_name: String,
    /// The Lightning backend to probe, if any.
    pub backend: Option<Arc<dyn LightningBackend>>,
    /// The trusted mints to probe.
    pub mints: Vec<paydvm_mints::TrustedMint>,
    /// What the core found wrong with the ledger file, if anything.
    pub ledger_fault: crate::node::core::FaultReport,
}

/// What every handler reads. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub(crate) name: Arc<str>,
    pub(crate) telemetry: Telemetry,
    pub(crate) relays: RelayBoard,
    pub(crate) backends: backends::BackendBoard,
    pub(crate) ledger: Arc<ledger_view::LedgerView>,
    pub(crate) history: Arc<Mutex<history::History>>,
    pub(crate) ledger_fault: crate::node::core::FaultReport,
}

impl App {
    pub(crate) fn readiness(&self) -> health::Readiness {
        health::readiness(&health::Facts {
            relays: &self.relays.snapshot(),
            ledger_written: self.telemetry.ledger_ok(),
            ledger_present: self.ledger.present(),
            ledger_fault: self.ledger_fault.lock().ok().and_then(|f| f.clone()),
            backends: &self.backends.snapshot(),
            disk: self.disk_space(),
        })
    }

    /// Free space beside the ledger file (none for a database ledger).
    pub(crate) fn disk_space(&self) -> Option<Result<disk::DiskSpace, String>> {
        let file = self.ledger.file()?;
        Some(disk::measure(file).map_err(|e| e.to_string()))
    }
}

/// The running server and its helper tasks.
pub struct HttpServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    sampler: JoinHandle<()>,
    prober: JoinHandle<()>,
}

impl HttpServer {
    /// Serves on `listener` until [`HttpServer::shutdown`].
    pub fn start(listener: TcpListener, parts: HttpParts) -> HttpServer {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
        let board = backends::BackendBoard::default();
        let prober = backends::start(
            board.clone(),
            backends::Probed {
                wallet: parts.backend,
                mints: parts.mints,
                telemetry: parts.telemetry.clone(),
            },
        );
        let app = App {
            name: Arc::from(parts.node_name.as_str()),
            telemetry: parts.telemetry,
            relays: parts.relays,
            backends: board,
            ledger: Arc::new(ledger_view::LedgerView::new(parts.ledger)),
            history: Arc::default(),
            ledger_fault: parts.ledger_fault,
        };
        let sampler = tokio::spawn(sample(app.clone()));
        let token = parts.token.map(Arc::new);
        // The token itself is never logged: only whether one is required.
        info!(%addr, token = token.is_some(), "http: metrics, health and status page");
        let router = router(app, token);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                warn!("http server stopped: {e}");
            }
        });
        HttpServer {
            addr,
            stop,
            server,
            sampler,
            prober,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (open connections get a moment to finish).
    pub async fn shutdown(self) {
        self.sampler.abort();
        self.prober.abort();
        let _ = self.stop.send(());
        let mut server = self.server;
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
    }
}

fn router(app: App, token: auth::Token) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/metrics", get(exporter::render))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/status", get(status::status))
        .layer(axum::middleware::from_fn_with_state(
            token,
            auth::require_token,
        ))
        .with_state(app)
}

/// Samples the totals for the charts, and keeps the recorder tidy.
async fn sample(app: App) {
    let mut every = tokio::time::interval(history::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut disk_was_low = false;
    loop {
        every.tick().await;
        if let Some(space) = app.disk_space() {
            watch_disk(&app, space, &mut disk_was_low);
        }
        let reading = app.telemetry.totals();
        app.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(now_ms(), reading);
        exporter::upkeep();
    }
}

/// Sets the free-space gauge, and logs when the space beside the ledger falls below what it
/// wants (once, and again when it is back).
fn watch_disk(app: &App, space: Result<disk::DiskSpace, String>, was_low: &mut bool) {
    let Ok(space) = space else {
        return;
    };
    app.telemetry.disk_free(space.free);
    let low = !space.enough();
    if low && !*was_low {
        warn!(
            free_mib = space.free >> 20,
            wanted_mib = space.wanted() >> 20,
            "LOW DISK beside the ledger: a full disk stops the node taking paid work; free space \
             (operations.md, \"Ledger file faults\")"
        );
    } else if !low && *was_low {
        info!(
            free_mib = space.free >> 20,
            "disk space beside the ledger is enough again"
        );
    }
    *was_low = low;
}
