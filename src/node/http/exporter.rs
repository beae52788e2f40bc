//! The process's Prometheus recorder: installed once (the `metrics` facade has one global
//! recorder per process, and one process may run several nodes: tests, benches), rendered by
//! the `[http]` server at `/metrics`. The exporter's own HTTP listener is not built
//! (`default-features = false`).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::warn;

/// Histogram buckets, in seconds: from a fast ledger commit (~1 ms) to a slow payment (minutes).
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's global recorder, once; later calls return
/// the same handle. `None` when some other recorder was installed first (then `/metrics` says
/// so instead of showing a partial picture).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = match PrometheusBuilder::new().set_buckets(&BUCKETS) {
                Ok(builder) => builder.build_recorder(),
                Err(e) => {
                    warn!("metrics buckets refused ({e}); histograms render as summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    warn!("another metrics recorder is installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// Housekeeping the recorder needs now and then (drains histogram buffers).
pub fn upkeep() {
    if let Some(handle) = HANDLE.get().and_then(Option::as_ref) {
        handle.run_upkeep();
    }
}

/// `GET /metrics`.
pub async fn render() -> Response {
    match install() {
        Some(handle) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()).into_response(),
        None => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "another metrics recorder owns this process\n",
        )
            .into_response(),
    }
}
