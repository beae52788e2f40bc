//! `--node-binary`: the node as its own process (`paydvm run --config …`), so its CPU time and
//! peak RSS can be read apart from the relay's and the customers', from `/proc/<pid>`.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nostr_sdk::prelude::*;

pub struct NodeProcess {
    child: Child,
}

/// A bench that fails half-way (an error returned with `?`) must not leave the node running
/// (holding its port and its ledger in the removed temporary directory): killed if still up.
impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl NodeProcess {
    /// Starts `binary run --config config`; its output goes to `node.out` / `node.err` beside
    /// the config.
    pub fn start(binary: &Path, config: &Path) -> anyhow::Result<NodeProcess> {
        NodeProcess::start_as(binary, config, &[], "node")
    }

    /// Starts `binary run --config config <extra>`; its output goes to `<name>.out` /
    /// `<name>.err` beside the config.
    pub fn start_as(
        binary: &Path,
        config: &Path,
        extra: &[&str],
        name: &str,
    ) -> anyhow::Result<NodeProcess> {
        let dir = config.parent().context("the config has no directory")?;
        let binary = std::fs::canonicalize(binary)
            .with_context(|| format!("no node binary at {}", binary.display()))?;
        let log = |ext: &str| std::fs::File::create(dir.join(format!("{name}.{ext}")));
        let child = Command::new(&binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("PAYDVM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log("out")?)
            .stderr(log("err")?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(NodeProcess { child })
    }

    /// Whether the process has not exited.
    pub fn running(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// User + system CPU time the process has used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_of_pid(Some(self.child.id())).context("the node's /proc stat")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM, then waits (up to a minute) for the clean shutdown's exit status.
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if sent != 0 {
            bail!(
                "could not signal the node: {}",
                std::io::Error::last_os_error()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        bail!("the node did not stop within a minute of SIGTERM (killed)")
    }

    /// Waits until the node's NIP-89 announcement is on the relay: it is connected and serving.
    pub async fn wait_serving(&mut self, relay: &RelayUrl, node: PublicKey) -> anyhow::Result<()> {
        let client = Client::default();
        client.add_relay(relay.clone()).await?;
        client.connect().await;
        let filter = Filter::new().author(node).kind(Kind::Custom(31990));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("the node exited at start ({status}); see node.err in its directory");
            }
            let found = client
                .fetch_events(filter.clone(), Duration::from_secs(1))
                .await?;
            if !found.is_empty() {
                client.disconnect().await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the node did not announce itself on {relay} within 30 s")
    }
}

/// User + system CPU time of process `pid` (this one for `None`) so far; none once it is gone.
pub fn cpu_of_pid(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    cpu_of_stat(&stat, clock_ticks_per_sec()).ok()
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces, so fields are counted after its closing one: state is the first,
/// utime the 12th, stime the 13th.
fn cpu_of_stat(stat: &str, ticks_per_sec: u64) -> anyhow::Result<Duration> {
    let rest = stat.rsplit_once(')').context("no ')' in /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        let text = fields.get(n).context("/proc stat too short")?;
        Ok(text.parse()?)
    };
    let ticks = field(11)? + field(12)?;
    Ok(Duration::from_millis(ticks * 1000 / ticks_per_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_after_a_name_with_spaces() {
        let stat = "4242 (paydvm (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        let cpu = cpu_of_stat(stat, 100).unwrap();
        assert_eq!(cpu, Duration::from_millis(3_000));
    }
}
