//! The guard inside the HTTP client: a scripted resolver makes `wallet.example.com` resolve to
//! private or loopback addresses, and a live LNURL server on 127.0.0.1 counts the connections
//! that reach it.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use nostr_sdk::prelude::Keys;
use paydvm_ledger::Msat;
use paydvm_netguard::AllowList;

use super::*;
use crate::payments::lnurl::{fetch_pay_endpoint, request_invoice};
use paydvm_testkit::zapper::{Zapper, ZapperOptions};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn strict_with(dns: &Arc<ScriptedDns>) -> LnurlHttp {
    LnurlHttp::with_resolver(HostPolicy::default(), dns.clone()).unwrap()
}

async fn wallet(callback: Option<String>) -> Zapper {
    let mut options = ZapperOptions::new("alice", Keys::generate().public_key());
    options.callback = callback;
    Zapper::start(options).await.unwrap()
}

/// The server's lightning address (the testkit build's `Lud16`, carried over as text).
fn address_of(server: &Zapper) -> Lud16 {
    server.lud16().to_string().parse().unwrap()
}

fn refusal(result: Result<impl std::fmt::Debug, LnurlError>) -> (Role, Refusal) {
    match result {
        Err(LnurlError::Refused { role, source }) => (role, source),
        other => panic!("not refused by the guard: {other:?}"),
    }
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused_at_connect_time() {
    let dns = Arc::new(ScriptedDns::new().answer("wallet.example.com", &[ip("10.0.0.5")]));
    let http = strict_with(&dns);
    let address: Lud16 = "alice@wallet.example.com".parse().unwrap();
    let url = http.pay_url(&address).unwrap();
    let (role, why) = refusal(fetch_pay_endpoint(&http, url).await);
    assert_eq!(role, Role::PayEndpoint);
    assert!(matches!(why, Refusal::Resolved { .. }), "{why:?}");
    assert_eq!(
        why.to_string(),
        "wallet.example.com resolves to 10.0.0.5, a private address (10.0.0.0/8)"
    );
    assert_eq!(dns.lookups(), 1, "refused after resolving, not before");
}

#[tokio::test]
async fn a_name_resolving_to_loopback_never_reaches_the_server_unless_allow_listed() {
    let server = wallet(None).await;
    let port = server.port();
    let dns = Arc::new(ScriptedDns::new().answer("wallet.example.com", &[ip("127.0.0.1")]));
    let address: Lud16 = format!("alice@wallet.example.com:{port}").parse().unwrap();

    let http = strict_with(&dns);
    let url = http.pay_url(&address).unwrap();
    let (_, why) = refusal(fetch_pay_endpoint(&http, url).await);
    assert!(why.to_string().contains("a loopback address"), "{why}");
    // The same server at a mapped-loopback literal: refused with no lookup at all.
    let literal: Lud16 = format!("alice@[::ffff:127.0.0.1]:{port}").parse().unwrap();
    let (_, why) = refusal(http.pay_url(&literal));
    assert!(matches!(why, Refusal::Address { .. }), "{why:?}");
    assert_eq!(server.connections(), 0, "nothing reached the server");
    assert_eq!(dns.lookups(), 1);

    // Allow-listed with plain http, the same name through the same resolver is fetched: the
    // resolver really is the one the client connects with.
    let entry = format!("http://wallet.example.com:{port}").parse().unwrap();
    let policy = HostPolicy::new(false, AllowList::new(vec![entry]));
    let http = LnurlHttp::with_resolver(policy, dns.clone()).unwrap();
    let url = http.pay_url(&address).unwrap();
    assert_eq!(url.scheme(), "http");
    let endpoint = fetch_pay_endpoint(&http, url).await.unwrap();
    assert_eq!(endpoint.nostr_pubkey, Some(server.nostr_pubkey()));
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn only_public_addresses_of_a_mixed_answer_are_kept() {
    let dns = Arc::new(ScriptedDns::new().answer(
        "wallet.example.com",
        &[
            ip("10.0.0.5"),
            ip("93.184.216.34"),
            ip("::ffff:127.0.0.1"),
            ip("2606:4700::1"),
        ],
    ));
    let guard = GuardedResolver {
        dns: dns.clone(),
        policy: Arc::new(HostPolicy::default()),
    };
    let kept: Vec<IpAddr> = guard
        .resolve(Name::from_str("wallet.example.com").unwrap())
        .await
        .unwrap()
        .map(|a| a.ip())
        .collect();
    assert_eq!(kept, [ip("93.184.216.34"), ip("2606:4700::1")]);
}

#[tokio::test]
async fn a_name_that_rebinds_is_caught_on_the_next_connection() {
    // Loopback allowed (test mode), so `localhost` may be fetched over http — while it
    // resolves to a loopback address. The second lookup (the callback) answers a private one.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut options = ZapperOptions::new("alice", Keys::generate().public_key());
    options.callback = Some(format!("http://localhost:{port}/lnurlp/alice/callback"));
    let server = Zapper::start_on(listener, options).await.unwrap();
    let dns = Arc::new(
        ScriptedDns::new()
            .answer("localhost", &[ip("127.0.0.1")])
            .answer("localhost", &[ip("10.0.0.5")]),
    );
    let http =
        LnurlHttp::with_resolver(HostPolicy::new(true, AllowList::default()), dns.clone()).unwrap();
    let address: Lud16 = format!("alice@localhost:{port}").parse().unwrap();
    let endpoint = fetch_pay_endpoint(&http, http.pay_url(&address).unwrap())
        .await
        .unwrap();
    assert_eq!(endpoint.callback.host_str(), Some("localhost"));
    let (role, why) =
        refusal(request_invoice(&http, &endpoint, Msat::from_msat(5_000), None).await);
    assert_eq!(role, Role::Callback);
    assert_eq!(
        why.to_string(),
        "localhost resolves to 10.0.0.5, a private address (10.0.0.0/8)"
    );
    assert_eq!(dns.lookups(), 2);
    assert_eq!(server.connections(), 1, "only the pay endpoint was reached");
    assert!(server.issued().is_empty());
}

#[tokio::test]
async fn a_callback_on_a_private_or_plain_http_host_is_refused_before_connecting() {
    for (callback, want) in [
        (
            "http://10.255.255.1:9/cb",
            "LNURL callback refused: 10.255.255.1 is a private address (10.0.0.0/8)",
        ),
        (
            "https://[::ffff:192.168.1.1]/cb",
            "LNURL callback refused: [::ffff:c0a8:101] is a private address (IPv4-mapped form \
             of 192.168.1.1, in 192.168.0.0/16)",
        ),
        (
            "http://wallet.example.com/cb",
            "LNURL callback refused: plain http to wallet.example.com is not allowed: https is \
             required unless node.lnurl_allow_hosts lists \"http://wallet.example.com\"",
        ),
    ] {
        let server = wallet(Some(callback.to_owned())).await;
        let dns = Arc::new(ScriptedDns::new());
        let http =
            LnurlHttp::with_resolver(HostPolicy::new(true, AllowList::default()), dns.clone())
                .unwrap();
        let endpoint = fetch_pay_endpoint(&http, http.pay_url(&address_of(&server)).unwrap())
            .await
            .unwrap();
        let refused = request_invoice(&http, &endpoint, Msat::from_msat(5_000), None)
            .await
            .unwrap_err();
        assert_eq!(refused.to_string(), want);
        assert_eq!(dns.lookups(), 0, "{callback}: refused before any lookup");
        assert!(server.issued().is_empty());
    }
}
