//! The operator's way into a running node: a Unix socket next to the ledger
//! (`<ledger>.sock`, mode 0600, so only the node's own user can connect). One JSON
//! [`OperatorRequest`] per connection, one JSON [`OperatorReply`] back; the core decides and
//! writes it like any other command, and answers once it is on disk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::core::Command;
use crate::operator::{OperatorReply, OperatorRequest};

/// Largest request read (a request is a few hundred bytes).
const MAX_REQUEST_BYTES: u64 = 16 * 1024;
/// How long a client may take to send its request, and the core to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The control socket of `ledger`: `<ledger>.sock`.
pub fn socket_path(ledger: &Path) -> PathBuf {
    let mut s = ledger.as_os_str().to_owned();
    s.push(".sock");
    PathBuf::from(s)
}

/// The listening socket; removed when the node stops.
pub struct Control {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Control {
    /// Listens on `<ledger>.sock`. Call only while holding the ledger lock: a socket file left
    /// by a node that died is then stale and is replaced.
    pub fn start(ledger: &Path, commands: mpsc::Sender<Command>) -> std::io::Result<Control> {
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
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, commands).await {
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

async fn serve(stream: UnixStream, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    tokio::time::timeout(TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::other("no request in time"))??;
    let reply = match serde_json::from_str::<OperatorRequest>(&line) {
        Ok(request) => ask_core(request, &commands).await,
        Err(e) => OperatorReply::refused(format!("unreadable request: {e}")),
    };
    let mut out = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
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
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
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
