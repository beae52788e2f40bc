//! NIP-89 announcements, the kind 0 profile and the kind 11998 heartbeat, against a real
//! LocalRelay.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nostr_sdk::prelude::*;
use paydvm::config::Config;
use paydvm::node::announce::{d_tag, HANDLER_INFO_KIND, HEARTBEAT_KIND};
use paydvm::node::{Node, NodeHandle, NodeOptions};
use paydvm_ledger::store::Store;
use paydvm_testkit::fixture::{NodeDir, Offer};

const WAIT: Duration = Duration::from_secs(15);
const HEARTBEAT: Duration = Duration::from_millis(200);

async fn start_relay() -> (paydvm::node::local_relay::EmbeddedRelay, RelayUrl) {
    paydvm::node::local_relay::start_local_relay()
        .await
        .expect("relay runs")
}

/// A node directory: 5050 (fixed 5000 msat, named offer) and 5001 (free). Rewriting it keeps
/// the node's key.
fn write_node_dir(dir: &Path, relay: &RelayUrl, offer_about: &str) -> PathBuf {
    write_node_dir_on(dir, std::slice::from_ref(relay), offer_about)
}

/// [`write_node_dir`] on several relays.
fn write_node_dir_on(dir: &Path, relays: &[RelayUrl], offer_about: &str) -> PathBuf {
    node_dir(relays, offer_about)
        .offer(Offer::text(5001))
        .write(dir)
        .unwrap()
}

/// [`write_node_dir_on`] without the 5001 offer (its price stays in the policy).
fn write_node_dir_without_5001(dir: &Path, relays: &[RelayUrl]) -> PathBuf {
    node_dir(relays, "reverses text").write(dir).unwrap()
}

fn node_dir(relays: &[RelayUrl], offer_about: &str) -> NodeDir {
    NodeDir::new("announce node")
        .node_setting("about = \"a test node\"")
        .node_setting("picture = \"https://example.com/p.png\"")
        .node_setting("lud16 = \"dvm@127.0.0.1:9\"")
        .node_setting("lnurl_http_loopback = true")
        .policy(
            "[[pricing.kind]]\nkind = 5001\nmode = \"free\"\n\n\
             [[pricing.kind]]\nkind = 5050\nmode = \"fixed\"\namount_msat = 5000\n",
        )
        .offer(
            Offer::text(5050)
                .line("name = \"reverser\"")
                .line(format!("about = {offer_about:?}")),
        )
        .relays(relays)
}

async fn start_node(config: &Path) -> NodeHandle {
    start_node_beating_every(config, HEARTBEAT).await
}

async fn start_node_beating_every(config: &Path, heartbeat_every: Duration) -> NodeHandle {
    let config = Config::load(config).expect("config loads");
    Node::start_with(
        config,
        NodeOptions {
            heartbeat_every,
            ..NodeOptions::default()
        },
    )
    .await
    .expect("node starts")
}

/// A relay address nothing listens on yet, and its URL.
fn unused_relay_address() -> (std::net::SocketAddr, RelayUrl) {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    (addr, RelayUrl::parse(&format!("ws://{addr}")).unwrap())
}

async fn reader(relay: &RelayUrl) -> Client {
    let client = paydvm::node::transport::client(Keys::generate());
    client.add_relay(relay.clone()).await.unwrap();
    client.try_connect(Duration::from_secs(5)).await;
    client
}

async fn fetch(client: &Client, author: PublicKey, kind: u16) -> Vec<Event> {
    client
        .fetch_events(
            Filter::new().author(author).kind(Kind::Custom(kind)),
            Duration::from_secs(2),
        )
        .await
        .map(|e| e.into_iter().collect())
        .unwrap_or_default()
}

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tag<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    event.tags.iter().find_map(|t| match t.as_slice() {
        [n, v, ..] if n == name => Some(v.as_str()),
        _ => None,
    })
}

/// Starts the node, waits until it has sent a heartbeat (so it has connected and handed its
/// announcements to the core), and stops it.
async fn run_until_a_heartbeat(config: &Path) {
    let node = start_node(config).await;
    let stats = node.heartbeat_stats();
    eventually("a heartbeat after the restart", || async {
        (stats.published() > 0).then_some(())
    })
    .await;
    node.shutdown().await;
}

/// Waits until the relay `client` reads holds one 31990 of `author`'s, and checks it is 5050's.
async fn only_5050_left(client: &Client, author: PublicKey) {
    let left = eventually("the relay holding one 31990", || async {
        let events = fetch(client, author, HANDLER_INFO_KIND).await;
        (events.len() == 1).then_some(events)
    })
    .await;
    assert_eq!(tag(&left[0], "d"), Some(d_tag(5050).as_str()));
}

/// Announcement effects stored in the ledger, by event kind.
fn ledgered(ledger: &Path, kind: u64) -> usize {
    let store = Store::open_read_only(ledger).unwrap();
    store
        .state()
        .effects()
        .filter(|e| e.job.is_none())
        .filter(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            v["event"]["kind"].as_u64() == Some(kind)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_each_offered_kind_and_a_profile_once() {
    let (_relay, url) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), &url, "reverses text");
    let node = start_node(&config).await;
    let pubkey = node.pubkey();
    let ledger = node.ledger_path().to_owned();
    let client = reader(&url).await;

    let announced = eventually("two 31990 announcements", || async {
        let events = fetch(&client, pubkey, HANDLER_INFO_KIND).await;
        (events.len() == 2).then_some(events)
    })
    .await;
    for kind in [5050u16, 5001] {
        let event = announced
            .iter()
            .find(|e| tag(e, "k") == Some(kind.to_string().as_str()))
            .unwrap_or_else(|| panic!("no 31990 for kind {kind}"));
        assert_eq!(tag(event, "d"), Some(d_tag(kind).as_str()));
        let content: serde_json::Value = serde_json::from_str(&event.content).unwrap();
        assert_eq!(content["supportsEncryption"], true);
        assert_eq!(content["encryptionSupported"], true);
        assert_eq!(content["acceptsNutZaps"], false);
        assert_eq!(content["cashuAccepted"], false);
        assert_eq!(content["picture"], "https://example.com/p.png");
        assert_eq!(content["lud16"], "dvm@127.0.0.1:9");
        if kind == 5050 {
            assert_eq!(content["name"], "reverser");
            assert_eq!(content["about"], "reverses text");
            assert_eq!(content["amount"], "5");
            assert_eq!(
                content["nip90Params"]["mode"]["values"],
                serde_json::json!(["reverse", "upper"])
            );
        } else {
            assert_eq!(content["name"], "announce node");
            assert_eq!(content["about"], "a test node");
            assert_eq!(content["amount"], "free");
        }
    }
    let profile = eventually("a kind 0 profile", || async {
        fetch(&client, pubkey, 0).await.into_iter().next()
    })
    .await;
    let content: serde_json::Value = serde_json::from_str(&profile.content).unwrap();
    assert_eq!(content["name"], "announce node");
    assert_eq!(content["about"], "a test node");
    assert_eq!(content["picture"], "https://example.com/p.png");
    assert_eq!(content["lud16"], "dvm@127.0.0.1:9");
    node.shutdown().await;
    assert_eq!(ledgered(&ledger, 31990), 2);
    assert_eq!(ledgered(&ledger, 0), 1);
    let mut first: Vec<EventId> = announced.iter().map(|e| e.id).collect();
    first.sort();

    // A restart with the same config (a second later, so a re-signed event would get a new id)
    // publishes nothing new.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run_until_a_heartbeat(&config).await;
    assert_eq!(
        ledgered(&ledger, 31990),
        2,
        "no second announcement ledgered"
    );
    assert_eq!(ledgered(&ledger, 0), 1, "no second profile ledgered");
    let events = fetch(&client, pubkey, HANDLER_INFO_KIND).await;
    let mut again: Vec<EventId> = events.iter().map(|e| e.id).collect();
    again.sort();
    assert_eq!(again, first, "the relay holds the same two announcements");
    assert_eq!(fetch(&client, pubkey, 0).await.len(), 1);

    // Changing one offer's text re-announces that kind only.
    write_node_dir(dir.path(), &url, "reverses or shouts text");
    let node = start_node(&config).await;
    let updated = eventually("the updated 5050 announcement", || async {
        fetch(&client, pubkey, HANDLER_INFO_KIND)
            .await
            .into_iter()
            .find(|e| e.content.contains("shouts"))
    })
    .await;
    assert_eq!(tag(&updated, "d"), Some(d_tag(5050).as_str()));
    node.shutdown().await;
    assert_eq!(ledgered(&ledger, 31990), 3);
    assert_eq!(ledgered(&ledger, 0), 1);
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_only_while_a_relay_is_connected() {
    let (relay, url) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), &url, "reverses text");
    let node = start_node(&config).await;
    let pubkey = node.pubkey();
    let stats = node.heartbeat_stats();
    let client = reader(&url).await;

    let beat = eventually("a heartbeat on the relay", || async {
        fetch(&client, pubkey, HEARTBEAT_KIND)
            .await
            .into_iter()
            .next()
    })
    .await;
    let expiration: u64 = tag(&beat, "expiration")
        .expect("an expiration tag")
        .parse()
        .unwrap();
    assert!(expiration > beat.created_at.as_secs());
    client.shutdown().await;

    relay.shutdown();
    let skipped = stats.skipped();
    eventually("the heartbeat noticing the relay is down", || async {
        (stats.skipped() >= skipped + 2).then_some(())
    })
    .await;
    let attempted = stats.attempted();
    let published = stats.published();
    let skipped = stats.skipped();
    eventually("more skipped heartbeats", || async {
        (stats.skipped() >= skipped + 3).then_some(())
    })
    .await;
    assert_eq!(stats.attempted(), attempted, "no heartbeat sent while down");
    assert_eq!(stats.published(), published);
    node.shutdown().await;
}

/// The ids of our announcements (both 31990s and the kind 0) on `relay`, once all are there.
async fn announced_ids(relay: &RelayUrl, pubkey: PublicKey) -> Vec<EventId> {
    let client = reader(relay).await;
    let ids = eventually("both 31990s and the kind 0 on the relay", || async {
        let mut events = fetch(&client, pubkey, HANDLER_INFO_KIND).await;
        events.extend(fetch(&client, pubkey, 0).await);
        let mut ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
        ids.sort();
        (ids.len() == 3).then_some(ids)
    })
    .await;
    client.shutdown().await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_lost_its_data_gets_the_stored_announcements_again() {
    let (addr, _) = unused_relay_address();
    let (relay, url) = paydvm::node::local_relay::start_local_relay_on(addr)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), &url, "reverses text");
    let node = start_node(&config).await;
    let pubkey = node.pubkey();
    let ledger = node.ledger_path().to_owned();
    let first = announced_ids(&url, pubkey).await;

    // The relay restarts empty on the same address (a second later, so a re-signed event would
    // get a new id).
    relay.shutdown();
    drop(relay);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _relay = eventually("the relay back on its address", || async {
        paydvm::node::local_relay::start_local_relay_on(addr)
            .await
            .ok()
    })
    .await;
    let again = announced_ids(&url, pubkey).await;
    assert_eq!(again, first, "the stored signed events, not new ones");
    node.shutdown().await;
    assert_eq!(ledgered(&ledger, 31990), 2, "nothing new ledgered");
    assert_eq!(ledgered(&ledger, 0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_added_to_the_config_gets_the_stored_announcements() {
    let (_first, first_url) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), &first_url, "reverses text");
    let node = start_node(&config).await;
    let pubkey = node.pubkey();
    let ledger = node.ledger_path().to_owned();
    let announced = announced_ids(&first_url, pubkey).await;
    node.shutdown().await;

    let (_added, added_url) = start_relay().await;
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml.replace(
        &format!("urls = [{:?}]", first_url.to_string()),
        &format!(
            "urls = [{:?}, {:?}]",
            first_url.to_string(),
            added_url.to_string()
        ),
    );
    std::fs::write(&config, toml).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let node = start_node(&config).await;
    let on_added = announced_ids(&added_url, pubkey).await;
    assert_eq!(
        on_added, announced,
        "the stored signed events, not new ones"
    );
    node.shutdown().await;
    assert_eq!(ledgered(&ledger, 31990), 2, "nothing new ledgered");
    assert_eq!(ledgered(&ledger, 0), 1);
}

/// An offer removed from the config has its announcement withdrawn (NIP-09, `a` tag naming its
/// address) at the next start, once; offered again, it is announced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_removed_from_the_config_is_withdrawn_once_and_announced_again_when_back() {
    let (_relay, url) = start_relay().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), &url, "reverses text");
    let node = start_node(&config).await;
    let pubkey = node.pubkey();
    let ledger = node.ledger_path().to_owned();
    let client = reader(&url).await;
    eventually("two 31990 announcements", || async {
        (fetch(&client, pubkey, HANDLER_INFO_KIND).await.len() == 2).then_some(())
    })
    .await;
    node.shutdown().await;
    let removed = fetch(&client, pubkey, HANDLER_INFO_KIND)
        .await
        .into_iter()
        .find(|e| tag(e, "d") == Some(d_tag(5001).as_str()))
        .unwrap();

    // 5001 no longer offered: its announcement is withdrawn and the relay drops it.
    write_node_dir_without_5001(dir.path(), std::slice::from_ref(&url));
    let node = start_node(&config).await;
    let deletion = eventually("a deletion of the 5001 announcement", || async {
        fetch(&client, pubkey, 5).await.into_iter().next()
    })
    .await;
    let coordinate = format!("{HANDLER_INFO_KIND}:{}:{}", pubkey.to_hex(), d_tag(5001));
    assert_eq!(tag(&deletion, "a"), Some(coordinate.as_str()));
    assert_eq!(tag(&deletion, "e"), Some(removed.id.to_hex().as_str()));
    assert_eq!(tag(&deletion, "k"), Some("31990"));
    only_5050_left(&client, pubkey).await;
    node.shutdown().await;
    assert_eq!(ledgered(&ledger, 5), 1);

    // Started again with the same config, a second later (a deletion made again would get a
    // new id): nothing withdrawn a second time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    run_until_a_heartbeat(&config).await;
    assert_eq!(ledgered(&ledger, 5), 1, "withdrawn once");
    assert_eq!(ledgered(&ledger, 31990), 2);

    // Offered again (a second later than the deletion, which covers what is older): announced
    // again, and the relay holds both.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write_node_dir(dir.path(), &url, "reverses text");
    let node = start_node(&config).await;
    eventually("two 31990 announcements again", || async {
        (fetch(&client, pubkey, HANDLER_INFO_KIND).await.len() == 2).then_some(())
    })
    .await;
    node.shutdown().await;
    assert_eq!(ledgered(&ledger, 31990), 3);
    assert_eq!(ledgered(&ledger, 5), 1);
    client.shutdown().await;
}

/// A relay that missed a withdrawal (here: left out of the config while it was sent) is given the
/// stored deletion when it is connected again, and drops the withdrawn announcement; nothing new
/// is signed or ledgered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_missed_a_withdrawal_is_given_the_stored_deletion() {
    let (_kept, kept_url) = start_relay().await;
    let (_missed, missed_url) = start_relay().await;
    let both = [kept_url.clone(), missed_url.clone()];
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir_on(dir.path(), &both, "reverses text");
    let node = start_node(&config).await;
    let pubkey = node.pubkey();
    let ledger = node.ledger_path().to_owned();
    let missed = reader(&missed_url).await;
    eventually(
        "both 31990s on the relay that will miss the withdrawal",
        || async { (fetch(&missed, pubkey, HANDLER_INFO_KIND).await.len() == 2).then_some(()) },
    )
    .await;
    node.shutdown().await;

    // 5001 withdrawn while only the first relay is configured.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write_node_dir_without_5001(dir.path(), std::slice::from_ref(&kept_url));
    let kept = reader(&kept_url).await;
    let node = start_node(&config).await;
    let deletion = eventually("the deletion on the configured relay", || async {
        fetch(&kept, pubkey, 5).await.into_iter().next()
    })
    .await;
    node.shutdown().await;
    assert_eq!(fetch(&missed, pubkey, HANDLER_INFO_KIND).await.len(), 2);

    // Both configured again: the relay that missed it gets the same deletion and drops 5001.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write_node_dir_without_5001(dir.path(), &both);
    let node = start_node(&config).await;
    let given = eventually("the deletion on the relay that missed it", || async {
        fetch(&missed, pubkey, 5).await.into_iter().next()
    })
    .await;
    assert_eq!(given.id, deletion.id, "the stored deletion, not a new one");
    only_5050_left(&missed, pubkey).await;
    node.shutdown().await;
    assert_eq!(ledgered(&ledger, 5), 1, "withdrawn once");
    assert_eq!(ledgered(&ledger, 31990), 2, "nothing announced again");
    kept.shutdown().await;
    missed.shutdown().await;
}

/// The run's announcements are handed to the core once, at the first connect to a relay. A
/// ledger faulted then keeps them waiting with the other commands, and they go out once it can
/// be written again (dropped, they would have waited for the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_handed_over_while_the_ledger_is_faulted_go_out_once_it_recovers() {
    let (addr, url) = unused_relay_address();
    let dir = tempfile::tempdir().unwrap();
    // The relay is down at start: nothing is announced or written when the flag goes on.
    let config = write_node_dir(dir.path(), &url, "reverses text");
    let node = start_node(&config).await;
    let shm = PathBuf::from(format!("{}-shm", node.ledger_path().display()));
    let Some(flag) = crate::ledger_faults::Immutable::set(&shm) else {
        eprintln!("skipped: chattr +i is not possible here");
        node.shutdown().await;
        return;
    };
    eventually("the ledger fault", || async { node.ledger_fault() }).await;

    // The relay comes up: the first heartbeat (not ledgered) comes with the hand-over.
    let (_relay, _) = paydvm::node::local_relay::start_local_relay_on(addr)
        .await
        .unwrap();
    let stats = node.heartbeat_stats();
    eventually("a heartbeat", || async {
        (stats.published() > 0).then_some(())
    })
    .await;
    let client = reader(&url).await;
    let pubkey = node.pubkey();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fetch(&client, pubkey, HANDLER_INFO_KIND).await.is_empty());
    assert!(node.ledger_fault().is_some());

    drop(flag);
    eventually("both 31990s once the ledger can be written", || async {
        (fetch(&client, pubkey, HANDLER_INFO_KIND).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(node.ledger_fault(), None);
    let ledger = node.ledger_path().to_owned();
    node.shutdown().await;
    client.shutdown().await;
    assert_eq!(ledgered(&ledger, 31990), 2);
    Store::open_read_only(&ledger).unwrap().verify().unwrap();
}

/// With the production heartbeat period (a minute), a relay down at start that comes up gets
/// the announcements within seconds: while no relay is connected the heartbeat looks again
/// every second, not once a period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_down_at_start_gets_the_announcements_soon_after_it_comes_up() {
    let (addr, url) = unused_relay_address();
    let dir = tempfile::tempdir().unwrap();
    let config = write_node_dir(dir.path(), &url, "reverses text");
    let node = start_node_beating_every(&config, paydvm::node::announce::HEARTBEAT_EVERY).await;
    let stats = node.heartbeat_stats();
    eventually("a heartbeat skipped while the relay is down", || async {
        (stats.skipped() > 0).then_some(())
    })
    .await;

    let (_relay, _) = paydvm::node::local_relay::start_local_relay_on(addr)
        .await
        .unwrap();
    let client = reader(&url).await;
    let pubkey = node.pubkey();
    eventually("both 31990s and a heartbeat", || async {
        let offers = fetch(&client, pubkey, HANDLER_INFO_KIND).await.len();
        let beats = fetch(&client, pubkey, HEARTBEAT_KIND).await.len();
        (offers == 2 && beats == 1).then_some(())
    })
    .await;
    node.shutdown().await;
    client.shutdown().await;
}
