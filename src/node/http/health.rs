//! `/healthz` (the process answers) and `/readyz` (the node can take work now: intake is
//! connected to a relay, the ledger is writable, every configured backend answers), for
//! systemd, container and load-balancer checks. Both answer JSON; `/readyz` is 503 with the
//! failing checks named when it is not ready.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::backends::BackendReport;
use super::disk::DiskSpace;
use super::App;
use crate::node::relays::RelayReport;

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `relays`, `ledger`, `disk`, or a backend's name (`wallet:nwc`, `mint:<url>`).
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Every check, passing or not.
    pub checks: Vec<Check>,
    /// The names of the failing checks.
    pub failing: Vec<String>,
}

/// What readiness is decided from.
pub struct Facts<'a> {
    pub relays: &'a [RelayReport],
    /// The last ledger write succeeded.
    pub ledger_written: bool,
    /// The ledger file is still where the node opened it.
    pub ledger_present: bool,
    /// What the core's ledger watch found wrong with the file (unwritable, replaced), if anything.
    pub ledger_fault: Option<String>,
    pub backends: &'a [BackendReport],
    /// Free space beside the ledger file (none for a database ledger).
    pub disk: Option<Result<DiskSpace, String>>,
}

/// Ready when at least one relay is up, the ledger is present and its last write landed, and
/// every configured backend answered its last probe (one not probed yet counts as not ready).
pub fn readiness(facts: &Facts<'_>) -> Readiness {
    let up = facts.relays.iter().filter(|r| r.up).count();
    let mut checks = vec![Check {
        name: "relays".to_owned(),
        ok: up > 0,
        detail: format!("{up} of {} relays connected", facts.relays.len()),
    }];
    let ledger = match (
        &facts.ledger_fault,
        facts.ledger_present,
        facts.ledger_written,
    ) {
        (Some(fault), ..) => (false, fault.clone()),
        (None, false, _) => (false, "the ledger file is gone".to_owned()),
        (None, true, false) => (false, "the last ledger write failed".to_owned()),
        (None, true, true) => (true, "writable".to_owned()),
    };
    checks.push(Check {
        name: "ledger".to_owned(),
        ok: ledger.0,
        detail: ledger.1,
    });
    if let Some(disk) = &facts.disk {
        checks.push(disk_check(disk));
    }
    for b in facts.backends {
        checks.push(Check {
            name: b.name.clone(),
            ok: b.up == Some(true),
            detail: match b.up {
                Some(true) => "answers".to_owned(),
                _ => b.detail.clone(),
            },
        });
    }
    let failing: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.clone())
        .collect();
    Readiness {
        ready: failing.is_empty(),
        checks,
        failing,
    }
}

/// Enough free space beside the ledger for it to grow, be backed up and be migrated.
fn disk_check(disk: &Result<DiskSpace, String>) -> Check {
    let (ok, detail) = match disk {
        Ok(space) => (
            space.enough(),
            format!(
                "{} MiB free beside the ledger, {} MiB wanted (its size, at least {})",
                space.free >> 20,
                space.wanted() >> 20,
                super::disk::MIN_FREE_BYTES >> 20
            ),
        ),
        Err(e) => (false, format!("free space unknown: {e}")),
    };
    Check {
        name: "disk".to_owned(),
        ok,
        detail,
    }
}

/// `GET /healthz`: 200 while the process serves.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "ok": true }))
}

/// `GET /readyz`: 200 when ready, 503 otherwise; the body lists the checks.
pub async fn readyz(State(app): State<App>) -> (StatusCode, Json<Readiness>) {
    let r = app.readiness();
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(up: bool) -> RelayReport {
        RelayReport {
            url: "ws://127.0.0.1:1".into(),
            up,
            changed_at_ms: 1,
            connects: u64::from(up),
            last_error: None,
        }
    }

    fn backend(up: Option<bool>) -> BackendReport {
        BackendReport {
            name: "wallet:fake".into(),
            up,
            detail: "refused".into(),
            checked_at_ms: 0,
        }
    }

    fn facts<'a>(
        relays: &'a [RelayReport],
        written: bool,
        present: bool,
        backends: &'a [BackendReport],
    ) -> Facts<'a> {
        Facts {
            relays,
            ledger_written: written,
            ledger_present: present,
            ledger_fault: None,
            backends,
            disk: None,
        }
    }

    #[test]
    fn too_little_free_space_beside_the_ledger_makes_the_node_unready() {
        use crate::node::http::disk::MIN_FREE_BYTES;
        let relays = [relay(true)];
        let mut f = facts(&relays, true, true, &[]);
        let space = |free| DiskSpace {
            free,
            ledger: 1 << 20,
        };
        f.disk = Some(Ok(space(MIN_FREE_BYTES)));
        let r = readiness(&f);
        assert!(r.ready, "{r:?}");
        assert_eq!(r.checks[2].name, "disk");
        assert!(
            r.checks[2].detail.starts_with("256 MiB free"),
            "{:?}",
            r.checks[2]
        );
        f.disk = Some(Ok(space(MIN_FREE_BYTES - 1)));
        assert_eq!(readiness(&f).failing, ["disk"]);
        f.disk = Some(Err("No such file or directory".into()));
        assert_eq!(readiness(&f).failing, ["disk"]);
    }

    #[test]
    fn a_ledger_fault_the_core_reports_makes_the_node_unready_and_says_why() {
        let relays = [relay(true)];
        let mut f = facts(&relays, true, true, &[]);
        assert!(readiness(&f).ready);
        f.ledger_fault = Some("the ledger's -shm file cannot be written".into());
        let r = readiness(&f);
        assert_eq!(r.failing, ["ledger"]);
        assert!(r.checks[1].detail.contains("-shm"), "{:?}", r.checks[1]);
    }

    #[test]
    fn ready_only_when_every_check_passes_and_the_failing_ones_are_named() {
        let relays = [relay(false), relay(true)];
        let wallet = [backend(Some(true))];
        assert!(readiness(&facts(&relays, true, true, &wallet)).ready);
        let none_up = [relay(false)];
        let r = readiness(&facts(&none_up, true, true, &wallet));
        assert!(!r.ready);
        assert_eq!(r.failing, ["relays"]);
        assert_eq!(r.checks[0].detail, "0 of 1 relays connected");
        let r = readiness(&facts(&relays, false, true, &wallet));
        assert_eq!(r.failing, ["ledger"]);
        let r = readiness(&facts(&relays, true, false, &wallet));
        assert_eq!(r.checks[1].detail, "the ledger file is gone");
        for down in [None, Some(false)] {
            let r = readiness(&facts(&relays, true, true, &[backend(down)]));
            assert_eq!(r.failing, ["wallet:fake"]);
        }
        assert!(readiness(&facts(&relays, true, true, &[])).ready);
    }
}
