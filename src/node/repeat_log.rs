//! Rate-limits log lines that repeat for the same thing (a refund deferred again at every
//! retry): the first time is said at its level, then at most once per period with how many
//! times it was seen in between; the rest go to DEBUG.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info};

/// How often a repeated line is said again.
pub const REPEAT_EVERY: Duration = Duration::from_secs(600);

/// Keys remembered at most (a long-running node defers many refunds over time).
const MAX_KEYS: usize = 10_000;

/// What to do with a line about `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// The first time: say it.
    First,
    /// Said before, and the period is over: say it with the count of repeats not said.
    Again { unsaid: u64 },
    /// Said recently: DEBUG only.
    Quiet,
}

#[derive(Debug)]
struct Seen {
    said_at: Instant,
    unsaid: u64,
}

/// Remembers when each key was last said.
#[derive(Debug)]
pub struct RepeatGate {
    every: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

impl RepeatGate {
    pub fn new(every: Duration) -> RepeatGate {
        RepeatGate {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line about `key` seen at `now` is said.
    pub fn check(&self, key: &str, now: Instant) -> Say {
        let Ok(mut seen) = self.seen.lock() else {
            return Say::First;
        };
        if let Some(s) = seen.get_mut(key) {
            if now.saturating_duration_since(s.said_at) < self.every {
                s.unsaid += 1;
                return Say::Quiet;
            }
            let unsaid = std::mem::take(&mut s.unsaid);
            s.said_at = now;
            return Say::Again { unsaid };
        }
        if seen.len() >= MAX_KEYS {
            // Forget the old ones rather than grow: at worst a line is said once more.
            seen.clear();
        }
        seen.insert(
            key.to_owned(),
            Seen {
                said_at: now,
                unsaid: 0,
            },
        );
        Say::First
    }
}

/// "refund deferred" from a refund desk (`rail`: `lightning` or `ecash`): once per refund at
/// INFO, then at most every [`REPEAT_EVERY`] with a count.
pub fn refund_deferred(rail: &'static str, refund: &str, reason: &str) {
    static GATE: LazyLock<RepeatGate> = LazyLock::new(|| RepeatGate::new(REPEAT_EVERY));
    match GATE.check(refund, Instant::now()) {
        Say::First => info!(refund, rail, %reason, "refund deferred"),
        Say::Again { unsaid } => {
            info!(refund, rail, %reason, unsaid, "refund still deferred")
        }
        Say::Quiet => debug!(refund, rail, %reason, "refund deferred"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_said_then_once_per_period_with_a_count() {
        let gate = RepeatGate::new(Duration::from_secs(600));
        let t0 = Instant::now();
        assert_eq!(gate.check("r1", t0), Say::First);
        assert_eq!(gate.check("r1", t0 + Duration::from_secs(1)), Say::Quiet);
        assert_eq!(gate.check("r1", t0 + Duration::from_secs(599)), Say::Quiet);
        // Another key is its own story.
        assert_eq!(gate.check("r2", t0 + Duration::from_secs(2)), Say::First);
        assert_eq!(
            gate.check("r1", t0 + Duration::from_secs(600)),
            Say::Again { unsaid: 2 }
        );
        assert_eq!(gate.check("r1", t0 + Duration::from_secs(601)), Say::Quiet);
    }
}
