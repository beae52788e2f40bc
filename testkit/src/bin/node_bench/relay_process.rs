//! `--relay-binary`: the relay as its own process (`paydvm-relay`), so the node's figures do not
//! include serving the relay.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use nostr_sdk::prelude::*;

/// A running `paydvm-relay`; killed when dropped.
pub struct RelayProcess {
    child: Child,
    pub url: RelayUrl,
}

impl RelayProcess {
    /// Starts `binary` on a free port and reads the URL it prints first.
    pub fn start(binary: &Path) -> anyhow::Result<RelayProcess> {
        let mut child = Command::new(binary)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the relay's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = RelayUrl::parse(line.trim())
            .with_context(|| format!("the relay printed {line:?}, not its URL"))?;
        Ok(RelayProcess { child, url })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
