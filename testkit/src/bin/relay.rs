//! paydvm-relay: the embedded test relay (`start_local_relay`: rust-nostr's relay builder with
//! `TCP_NODELAY`, rate limit lifted) as a process of its own, for benchmarks that keep the
//! relay, the node and the load generator apart. Not a relay to run in production.
//!
//! `paydvm-relay [--port P]` prints its `ws://127.0.0.1:P` URL on the first line of stdout and
//! serves until SIGTERM or SIGINT.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};

use clap::Parser;
use paydvm::node::local_relay::start_local_relay_on;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(about = "Serve the embedded test relay on 127.0.0.1")]
struct Args {
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (relay, url) =
        start_local_relay_on(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port))).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{url}")?;
    stdout.flush()?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    relay.shutdown();
    Ok(())
}
