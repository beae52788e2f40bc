//! `GET /api/status`: everything the status page shows, as JSON. Read-only: live figures from
//! the node (relays, backends, this run's totals and chart points) and the ledger's figures and
//! latest jobs with their trails (read on the page's own connection, off the async threads).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::backends::BackendReport;
use super::health::Readiness;
use super::history::Point;
use super::ledger_view::LedgerReport;
use super::App;
use crate::node::now_ms;
use crate::node::relays::RelayReport;
use crate::node::telemetry::TotalsReading;

#[derive(Debug, Serialize)]
pub struct StatusReply {
    pub name: String,
    pub pubkey: String,
    pub now_ms: u64,
    pub readiness: Readiness,
    pub relays: Vec<RelayReport>,
    pub backends: Vec<BackendReport>,
    /// This run's totals (since the node started).
    pub totals: TotalsReading,
    /// Chart points, oldest first.
    pub series: Vec<Point>,
    /// `None` when the ledger could not be read (see `ledger_error`).
    pub ledger: Option<LedgerReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_error: Option<String>,
}

pub async fn status(State(app): State<App>) -> Response {
    let view = app.ledger.clone();
    let ledger = match tokio::task::spawn_blocking(move || view.report()).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("reading the ledger stopped: {e}")),
    };
    let now = now_ms();
    let totals = app.telemetry.totals();
    let series = app
        .history
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .series(now, totals);
    let (ledger, ledger_error) = match ledger {
        Ok(report) => (Some(report), None),
        Err(e) => (None, Some(e)),
    };
    let reply = StatusReply {
        name: app.name.to_string(),
        pubkey: app.telemetry.node().to_owned(),
        now_ms: now,
        readiness: app.readiness(),
        relays: app.relays.snapshot(),
        backends: app.backends.snapshot(),
        totals,
        series,
        ledger,
        ledger_error,
    };
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(reply),
    )
        .into_response()
}
