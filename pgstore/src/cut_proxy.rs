//! A TCP proxy in front of a test's PostgreSQL server that loses a `COMMIT`, or the answer to
//! one, or holds all traffic as a frozen server or a silent network would: how the tests reach
//! a write whose outcome is unknown. For tests; listens on 127.0.0.1 only.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

/// `COMMIT` as tokio-postgres sends it: a simple query message ('Q', length 11, the text).
const COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// What happens to the next `COMMIT` after [`CutProxy::arm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The server gets it and commits; the client's connection is closed before the answer.
    AnswerLost,
    /// The server never gets it; both connections are closed (the server rolls back).
    CommitLost,
    /// The server never gets it and the connection stays open towards it, silent, as behind a
    /// network partition: the server's transaction holds its locks until the server ends it.
    CommitHeld,
}

struct Shared {
    armed: Mutex<Option<(Cut, bool)>>,
    /// True while all traffic is held (bytes stay where they are; connections stay open).
    held: watch::Sender<bool>,
    cuts: AtomicUsize,
}

pub struct CutProxy {
    port: u16,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl CutProxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to `target_port`.
    pub fn start(target_port: u16) -> io::Result<CutProxy> {
        let runtime = crate::client::one_worker_runtime("cut-proxy")?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            armed: Mutex::new(None),
            held: watch::channel(false).0,
            cuts: AtomicUsize::new(0),
        });
        runtime.spawn(accept(listener, target_port, Arc::clone(&shared)));
        Ok(CutProxy {
            port,
            shared,
            runtime: Some(runtime),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` (a URL of the target server) through this proxy.
    pub fn url(&self, url: &str, target_port: u16) -> String {
        url.replacen(&format!(":{target_port}/"), &format!(":{}/", self.port), 1)
    }

    /// The next `COMMIT` on any connection is cut as `cut`; with `then_hold` all traffic is held
    /// right after (until [`CutProxy::release`]), so the client cannot check at once.
    pub fn arm(&self, cut: Cut, then_hold: bool) {
        *self.shared.armed.lock().unwrap() = Some((cut, then_hold));
    }

    /// Holds all traffic, both ways, on every connection (new ones too).
    pub fn hold(&self) {
        self.shared.held.send_replace(true);
    }

    pub fn release(&self) {
        self.shared.held.send_replace(false);
    }

    /// How many `COMMIT`s were cut.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, target_port: u16, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let cut = Arc::new(ConnectionCut::default());
        let (s, c) = (Arc::clone(&shared), Arc::clone(&cut));
        tokio::spawn(pump(client_read, server_write, s, c, Way::ToServer));
        tokio::spawn(pump(
            server_read,
            client_write,
            shared.clone(),
            cut,
            Way::ToClient,
        ));
    }
}

/// Set when a connection is cut, before the `COMMIT` goes on: no answer read after it reaches
/// the client.
#[derive(Default)]
struct ConnectionCut {
    done: AtomicBool,
    notify: Notify,
}

async fn released(shared: &Shared) {
    let mut held = shared.held.subscribe();
    let _ = held.wait_for(|held| !held).await;
}

/// Which way a pump carries bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Client to server, watching for the armed `COMMIT`.
    ToServer,
    /// Server to client; stops at once when the connection is cut.
    ToClient,
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    cut: Arc<ConnectionCut>,
    way: Way,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        released(&shared).await;
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = cut.notify.notified(), if way == Way::ToClient => return,
        };
        released(&shared).await;
        let chunk = &buf[..n];
        let cut_now = match way {
            Way::ToClient => cut.done.load(Ordering::SeqCst).then_some(Cut::CommitLost),
            Way::ToServer => cut_at_commit(chunk, &shared, &cut, &mut to).await,
        };
        match cut_now {
            // Keeps the server's side open (this task holds it) and sends nothing more.
            Some(Cut::CommitHeld) => return std::future::pending().await,
            Some(_) => return,
            None => {}
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Cuts the connection if `chunk` carries a `COMMIT` and one is armed: marks it cut (so the
/// other pump forwards nothing more), then passes the `COMMIT` on or not. How, when cut.
async fn cut_at_commit(
    chunk: &[u8],
    shared: &Shared,
    cut: &ConnectionCut,
    to: &mut OwnedWriteHalf,
) -> Option<Cut> {
    if !chunk.windows(COMMIT.len()).any(|w| w == COMMIT) {
        return None;
    }
    let (how, then_hold) = shared.armed.lock().unwrap().take()?;
    cut.done.store(true, Ordering::SeqCst);
    cut.notify.notify_one();
    shared.cuts.fetch_add(1, Ordering::SeqCst);
    if how == Cut::AnswerLost {
        let _ = to.write_all(chunk).await;
    }
    if then_hold {
        shared.held.send_replace(true);
    }
    Some(how)
}
