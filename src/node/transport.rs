//! Websockets with Nagle's algorithm off, on both ends of our relay connections.
//!
//! nostr-sdk's default transport and the embedded LocalRelay both leave `TCP_NODELAY` unset. A
//! Nostr exchange is small writes that wait for small answers, so with Nagle on, a write that
//! follows an unacknowledged one waits for the peer's delayed ACK: about 40 ms per hop on Linux
//! loopback. Measured: one request in flight took 44 ms request→result; 12 ms with delayed ACKs off.
//!
//! A client that may reach relays a customer named ([`guarded_client`]) connects to those through
//! the [`RelayGuard`]: resolved once, checked, and connected on the checked address.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_wsocket::futures_util::stream::SplitSink;
use async_wsocket::futures_util::{Sink, SinkExt, StreamExt, TryStreamExt};
use async_wsocket::{ConnectionMode, Message, WebSocket};
use nostr_sdk::pool::transport::error::TransportError;
use nostr_sdk::pool::transport::websocket::{
    DefaultWebsocketTransport, WebSocketSink, WebSocketStream, WebSocketTransport,
};
use nostr_sdk::prelude::{BoxedFuture, Client, Keys, Url};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::relay_guard::RelayGuard;

/// Longest websocket upgrade request we read.
const MAX_UPGRADE_REQUEST: usize = 8 * 1024;

/// A nostr-sdk client with our keys whose relay connections have Nagle off.
pub fn client(keys: Keys) -> Client {
    Client::builder()
        .signer(keys)
        .websocket_transport(NoDelayTransport::default())
        .build()
}

/// As [`client`], for a client that also publishes to relays customers name: those go through
/// `guard` (the operator's relays are connected as named).
pub fn guarded_client(keys: Keys, guard: Arc<RelayGuard>) -> Client {
    Client::builder()
        .signer(keys)
        .websocket_transport(NoDelayTransport { guard: Some(guard) })
        .build()
}

/// nostr-sdk's direct websocket transport with `TCP_NODELAY` set; proxied connections (SOCKS,
/// Tor) keep the default transport. With a guard, a relay the operator did not choose is
/// connected through it.
#[derive(Debug, Clone, Default)]
pub struct NoDelayTransport {
    guard: Option<Arc<RelayGuard>>,
}

#[derive(Debug, thiserror::Error)]
#[error("websocket connect timed out")]
struct ConnectTimeout;

impl WebSocketTransport for NoDelayTransport {
    fn support_ping(&self) -> bool {
        true
    }

    fn connect<'a>(
        &'a self,
        url: &'a Url,
        mode: &'a ConnectionMode,
        timeout: Duration,
    ) -> BoxedFuture<'a, Result<(WebSocketSink, WebSocketStream), TransportError>> {
        Box::pin(async move {
            if !matches!(mode, ConnectionMode::Direct) {
                return DefaultWebsocketTransport.connect(url, mode, timeout).await;
            }
            let stream = match &self.guard {
                Some(guard) if !guard.trusts(url) => {
                    tokio::time::timeout(timeout, guard.connect(url))
                        .await
                        .map_err(|_| TransportError::backend(ConnectTimeout))?
                        .map_err(TransportError::backend)?
                }
                _ => {
                    let connecting = tokio_tungstenite::connect_async_tls_with_config(
                        url.as_str(),
                        None,
                        true,
                        None,
                    );
                    tokio::time::timeout(timeout, connecting)
                        .await
                        .map_err(|_| TransportError::backend(ConnectTimeout))?
                        .map_err(TransportError::backend)?
                        .0
                }
            };
            let (tx, rx) = WebSocket::Tokio(stream).split();
            let sink: WebSocketSink = Box::new(NoDelaySink(tx));
            let stream: WebSocketStream = Box::pin(rx.map_err(TransportError::backend));
            Ok((sink, stream))
        })
    }
}

/// Maps the sink's errors by hand: nostr-sdk notes that `sink_map_err` can panic here.
struct NoDelaySink(SplitSink<WebSocket, Message>);

impl Sink<Message> for NoDelaySink {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready_unpin(cx).map_err(TransportError::backend)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.0
            .start_send_unpin(item)
            .map_err(TransportError::backend)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_flush_unpin(cx).map_err(TransportError::backend)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_close_unpin(cx).map_err(TransportError::backend)
    }
}

/// Answers a websocket upgrade request (RFC 6455 §4.2) on a freshly accepted stream, leaving it
/// at the first frame: the server half of [`NoDelayTransport`], for a relay that takes upgraded
/// streams. Reads byte by byte so that nothing past the request is consumed.
pub async fn accept_upgrade(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_UPGRADE_REQUEST {
            return Err(invalid("upgrade request too long"));
        }
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = std::str::from_utf8(&head).map_err(|_| invalid("upgrade request is not UTF-8"))?;
    let key = websocket_key(head);
    let Some(key) = key else {
        stream
            .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            .await?;
        return Err(invalid("not a websocket upgrade"));
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await
}

/// The `Sec-WebSocket-Key` of a `GET` upgrade request head.
fn websocket_key(head: &str) -> Option<&str> {
    let mut lines = head.split("\r\n");
    if !lines.next()?.starts_with("GET ") {
        return None;
    }
    lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim())
            .filter(|v| !v.is_empty())
    })
}

fn invalid(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_key_of_an_upgrade_request_only() {
        let req =
            "GET / HTTP/1.1\r\nHost: x\r\nsec-websocket-KEY:  dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert_eq!(websocket_key(req), Some("dGhlIHNhbXBsZSBub25jZQ=="));
        assert_eq!(
            websocket_key("POST / HTTP/1.1\r\nSec-WebSocket-Key: k\r\n\r\n"),
            None
        );
        assert_eq!(websocket_key("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), None);
        assert_eq!(
            websocket_key("GET / HTTP/1.1\r\nSec-WebSocket-Key:\r\n\r\n"),
            None
        );
    }

    #[test]
    fn accept_key_matches_rfc_6455() {
        // RFC 6455 §1.3's example.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
