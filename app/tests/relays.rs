//! Relays that are down when the node starts, go away and come back (issue 13, problem 1), and
//! what `paydvm status` says about them.

use std::net::SocketAddr;
use std::time::Duration;

use nostr_relay_builder::prelude::{LocalRelay, RelayBuilder};
use nostr_sdk::prelude::*;
use paydvm::config::Config;
use paydvm::node::local_relay::{start_local_relay, start_local_relay_on, EmbeddedRelay};
use paydvm::node::relays::Backoff;
use paydvm::node::{Node, NodeHandle, NodeOptions};
use paydvm_ledger::JobState;

use super::node::{wait_state, write_node_dir, Customer};

const WAIT: Duration = Duration::from_secs(20);

/// A loopback address nobody listens on (yet).
fn free_addr() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

fn url_of(addr: SocketAddr) -> RelayUrl {
    RelayUrl::parse(&format!("ws://{addr}")).unwrap()
}

/// A relay on `addr`, once the address is free again (a stopped relay's listener closes when its
/// aborted task is dropped, which may be a moment later).
async fn relay_on(addr: SocketAddr) -> EmbeddedRelay {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match start_local_relay_on(addr).await {
            Ok((relay, _)) => return relay,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "relay never started on {addr}: {e:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Quick retries, so that a test does not wait out the default back-off.
fn quick() -> NodeOptions {
    NodeOptions {
        relay_backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
        ..NodeOptions::default()
    }
}

async fn start_node(config: &std::path::Path) -> NodeHandle {
    Node::start_with(Config::load(config).unwrap(), quick())
        .await
        .expect("node starts")
}

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the node reports `url` as up.
fn is_up(node: &NodeHandle, url: &RelayUrl) -> bool {
    node.relays()
        .iter()
        .any(|r| r.url == url.to_string() && r.up)
}

/// Sends a free 5001 job to `relays` only and waits for its result there.
async fn job_answered_via(node: &NodeHandle, relays: &[RelayUrl], text: &str) {
    let mut customer = Customer::connect(relays).await;
    let request = customer.request(5001, text, &[]);
    customer.client.send_event(&request).await.unwrap();
    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    let words = text.split_whitespace().count();
    assert_eq!(result.content, format!("{words} words"));
    wait_state(node, &request.id.to_hex(), JobState::Succeeded).await;
    customer.client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_down_at_start_is_read_once_it_comes_up() {
    let (_up, up_url) = start_local_relay().await.unwrap();
    let late = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), &[up_url, url_of(late)], "refund");
    let node = start_node(&config).await;

    let _late_relay = relay_on(late).await;
    // A job sent only to the relay that came up after the node started.
    job_answered_via(&node, &[url_of(late)], "sent to the late relay").await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_restarts_empty_is_read_again() {
    let addr = free_addr();
    let url = url_of(addr);
    let relay = relay_on(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), std::slice::from_ref(&url), "refund");
    let node = start_node(&config).await;
    job_answered_via(&node, std::slice::from_ref(&url), "before the restart").await;

    relay.shutdown();
    drop(relay);
    eventually("the node to see the relay down", || {
        (!is_up(&node, &url)).then_some(())
    })
    .await;
    let _relay = relay_on(addr).await;
    job_answered_via(
        &node,
        std::slice::from_ref(&url),
        "after the relay came back",
    )
    .await;
    node.shutdown().await;
}

/// `paydvm status --config <config> --json`, parsed.
fn status_json(config: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paydvm"))
        .args(["status", "--config", config.to_str().unwrap(), "--json"])
        .output()
        .expect("run paydvm");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The relays `paydvm status` reports up, and those down.
fn up_and_down(status: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let mut up = Vec::new();
    let mut down = Vec::new();
    for relay in status["node"]["relays"].as_array().into_iter().flatten() {
        let url = relay["url"].as_str().unwrap_or_default().to_owned();
        if relay["up"] == true {
            up.push(url);
        } else {
            down.push(url);
        }
    }
    (up, down)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_which_relays_are_up() {
    let (_up, up_url) = start_local_relay().await.unwrap();
    let late = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), &[up_url.clone(), url_of(late)], "refund");
    let node = start_node(&config).await;
    let (one, other) = (up_url.to_string(), url_of(late).to_string());
    eventually("status: one relay up, one down", || {
        let status = status_json(&config);
        (status["node"]["running"] == true
            && up_and_down(&status) == (vec![one.clone()], vec![other.clone()]))
            .then_some(())
    })
    .await;
    let _late_relay = relay_on(late).await;
    let mut both = vec![one.clone(), other.clone()];
    both.sort();
    eventually("status: both relays up", || {
        (up_and_down(&status_json(&config)) == (both.clone(), vec![])).then_some(())
    })
    .await;
    node.shutdown().await;
    let stopped = status_json(&config);
    assert_eq!(stopped["node"]["running"], false, "{stopped}");
    assert_eq!(up_and_down(&stopped), (vec![], vec![]));
}

/// Serves `relay` on `addr` (websocket upgrade by hand, as the embedded relay does) until the
/// returned task is aborted.
async fn serve_on(relay: &LocalRelay, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "cannot listen on {addr}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let relay = relay.clone();
    tokio::spawn(async move {
        let mut sessions = tokio::task::JoinSet::new();
        while let Ok((mut stream, peer)) = listener.accept().await {
            let relay = relay.clone();
            sessions.spawn(async move {
                if paydvm::node::transport::accept_upgrade(&mut stream)
                    .await
                    .is_ok()
                {
                    let _ = relay.take_connection(stream, peer).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_while_the_node_was_cut_off_is_caught_up_on_reconnect() {
    let addr = free_addr();
    let url = url_of(addr);
    let relay = relay_on(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), std::slice::from_ref(&url), "refund");
    let node = start_node(&config).await;
    eventually("the node connected", || is_up(&node, &url).then_some(())).await;
    relay.shutdown();
    drop(relay);
    eventually("the node to see the relay down", || {
        (!is_up(&node, &url)).then_some(())
    })
    .await;

    // The relay comes back with a request the node cannot have seen live: it was published
    // through a side door while the node's address was still closed.
    let back = LocalRelay::new(RelayBuilder::default());
    let side = free_addr();
    let side_door = serve_on(&back, side).await;
    let mut customer = Customer::connect(&[url_of(side)]).await;
    // Created a little before it reached the relay, as a slow client's would be: a catch-up
    // that started at the reconnect would miss it.
    let request = EventBuilder::new(Kind::Custom(5001), "")
        .tag(Tag::parse(["i", "sent while cut off", "text"]).unwrap())
        .custom_created_at(Timestamp::now() - 5)
        .sign_with_keys(&customer.keys)
        .unwrap();
    customer.client.send_event(&request).await.unwrap();
    let front_door = serve_on(&back, addr).await;

    let result = customer
        .wait_for(request.id, |e| e.kind == Kind::Custom(6001))
        .await;
    assert_eq!(result.content, "4 words");
    node.shutdown().await;
    customer.client.shutdown().await;
    front_door.abort();
    side_door.abort();
    back.shutdown();
}
