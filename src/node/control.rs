//! The operator's way into a running node: a Unix socket next to the ledger
//! (`<ledger>.sock`, mode 0600, so only the node's own user can connect). One JSON
//! [`OperatorRequest`] per connection, one JSON [`OperatorReply`] back; the core decides and
//! writes it like any other command, and answers once it is on disk. A [`NodeQuery`] instead
//! asks what the node sees now (its relays, for `paydvm status`) and changes nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::core::Command;
use super::relays::{RelayBoard, RelayReport};
use crate::operator::{OperatorReply, OperatorRequest};

/// Largest request read (a request is a few hundred bytes).
const MAX_REQUEST_BYTES: u64 = 16 * 1024;
/// Largest answer read (a relay list: a few hundred bytes per relay).
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// How long a client may take to send its request, and the core to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The control socket of `ledger`: `<ledger>.sock`.
pub fn socket_path(ledger: &Path) -> PathBuf {
    let mut s = ledger.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// A read-only question to the running node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "snake_case")]
pub enum NodeQuery {
    /// Which relays intake is connected to.
    Relays,
}

/// The answer to [`NodeQuery::Relays`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelaysReply {
    pub relays: Vec<RelayReport>,
}

/// The listening socket; removed when the node stops.
pub struct Control {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Control {
    /// Listens on `<ledger>.sock`. Call only while holding the ledger lock: a socket file left
    /// by a node that died is then stale and is replaced.
    pub fn start(
        ledger: &Path,
        commands: mpsc::Sender<Command>,
        relays: RelayBoard,
    ) -> std::io::Result<Control> {
        let path = socket_path(ledger);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let commands = commands.clone();
                let relays = relays.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, commands, relays).await {
                        warn!("operator connection: {e}");
                    }
                });
            }
        });
        Ok(Control { path, task })
    }

    pub fn shutdown(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(
    stream: UnixStream,
    commands: mpsc::Sender<Command>,
    relays: RelayBoard,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    tokio::time::timeout(TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no request in time"))??;
    let reply = if let Ok(NodeQuery::Relays) = serde_json::from_str::<NodeQuery>(&line) {
        serde_json::to_string(&RelaysReply {
            relays: relays.snapshot(),
        })
    } else {
        let reply = match serde_json::from_str::<OperatorRequest>(&line) {
            Ok(request) => ask_core(request, &commands).await,
            Err(e) => OperatorReply::refused(format!("unreadable request: {e}")),
        };
        serde_json::to_string(&reply)
    };
    let mut out = reply.map_err(std::io::Error::other)?;
    out.push('\n');
    write.write_all(out.as_bytes()).await
}

async fn ask_core(request: OperatorRequest, commands: &mpsc::Sender<Command>) -> OperatorReply {
    info!(id = %request.id, action = ?request.action, "operator request");
    let (reply, answer) = oneshot::channel();
    if commands
        .send(Command::Operator { request, reply })
        .await
        .is_err()
    {
        return OperatorReply::refused("the node is stopping");
    }
    match tokio::time::timeout(TIMEOUT, answer).await {
        Ok(Ok(reply)) => reply,
        _ => OperatorReply::refused("the node did not answer in time; check `paydvm refund list`"),
    }
}

/// Sends `request` to the node listening on `ledger`'s socket. `Ok(None)`: no node listens.
pub async fn send(
    ledger: &Path,
    request: &OperatorRequest,
) -> std::io::Result<Option<OperatorReply>> {
    exchange(ledger, request).await
}

/// The relays of the node listening on `ledger`'s socket. `Ok(None)`: no node listens.
pub async fn relays(ledger: &Path) -> std::io::Result<Option<Vec<RelayReport>>> {
    let reply: Option<RelaysReply> = exchange(ledger, &NodeQuery::Relays).await?;
    Ok(reply.map(|r| r.relays))
}

/// One request line out, one answer line back.
async fn exchange<Q: Serialize, A: DeserializeOwned>(
    ledger: &Path,
    request: &Q,
) -> std::io::Result<Option<A>> {
    let path = socket_path(ledger);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    let mut reader = BufReader::new(read.take(MAX_ANSWER_BYTES));
    tokio::time::timeout(
        TIMEOUT + Duration::from_secs(5),
        reader.read_line(&mut answer),
    )
    .await
    .map_err(|_| std::io::Error::other("the node did not answer in time"))??;
    serde_json::from_str(&answer)
        .map(Some)
        .map_err(|e| std::io::Error::other(format!("unreadable answer from the node: {e}")))
}
