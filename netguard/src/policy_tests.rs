//! The URL check, the pay URL's scheme, the allow-list and the resolved-address filter.

use super::*;
use crate::allow_list::AllowEntry;

fn url(s: &str) -> Url {
    Url::parse(s).unwrap()
}

fn allow(entries: &[&str]) -> AllowList {
    AllowList::new(entries.iter().map(|e| e.parse().unwrap()).collect())
}

fn strict() -> HostPolicy {
    HostPolicy::default()
}

fn test_mode() -> HostPolicy {
    HostPolicy::new(true, AllowList::default())
}

#[test]
fn private_and_loopback_literals_are_refused_with_the_rule() {
    let p = strict();
    for (u, want) in [
        (
            "https://10.0.0.5/x",
            "10.0.0.5 is a private address (10.0.0.0/8)",
        ),
        (
            "https://0.0.0.0:9000/x",
            "0.0.0.0 is an unspecified address (0.0.0.0/8)",
        ),
        (
            "https://0/x",
            "0.0.0.0 is an unspecified address (0.0.0.0/8)",
        ),
        (
            "https://2130706433/x",
            "127.0.0.1 is a loopback address (127.0.0.0/8)",
        ),
        (
            "https://[::ffff:127.0.0.1]:9000/x",
            "[::ffff:7f00:1] is a loopback address (IPv4-mapped form of 127.0.0.1, in 127.0.0.0/8)",
        ),
        (
            "https://[fd00::1]/x",
            "[fd00::1] is a unique-local address (fc00::/7)",
        ),
        ("https://localhost/x", "localhost is a loopback name"),
        ("https://a.LOCALHOST./x", "a.localhost. is a loopback name"),
        (
            "https://127.st.localhost../x",
            "127.st.localhost.. is a loopback name",
        ),
    ] {
        assert_eq!(p.check_url(&url(u)).unwrap_err().to_string(), want, "{u}");
    }
    assert_eq!(p.check_url(&url("https://8.8.8.8/x")), Ok(Route::Guarded));
    assert_eq!(
        p.check_url(&url("https://wallet.example.com/x")),
        Ok(Route::Guarded)
    );
}

#[test]
fn scheme_credentials_and_plain_http_are_checked() {
    let p = strict();
    assert_eq!(
        p.check_url(&url("ftp://example.com/x")),
        Err(Refusal::Scheme("ftp".into()))
    );
    assert_eq!(
        p.check_url(&url("https://user:pw@example.com/x")),
        Err(Refusal::Credentials)
    );
    assert_eq!(
        p.check_url(&url("http://example.com:8080/cb"))
            .unwrap_err()
            .to_string(),
        "plain http to example.com:8080 is not allowed: https is required unless \
         node.lnurl_allow_hosts lists \"http://example.com:8080\""
    );
    // Loopback allowed (tests, the demo): loopback hosts over plain http too, nothing else.
    let t = test_mode();
    assert_eq!(
        t.check_url(&url("http://127.0.0.1:9000/x")),
        Ok(Route::Guarded)
    );
    assert_eq!(
        t.check_url(&url("http://[::ffff:127.0.0.1]:9/x")),
        Ok(Route::Guarded)
    );
    assert_eq!(
        t.check_url(&url("http://localhost:9/x")),
        Ok(Route::Guarded)
    );
    // The host's rule comes first: https would not help.
    assert_eq!(
        t.check_url(&url("http://10.255.255.1:9/cb"))
            .unwrap_err()
            .to_string(),
        "10.255.255.1 is a private address (10.0.0.0/8)"
    );
    assert!(matches!(
        t.check_url(&url("http://example.com/cb")),
        Err(Refusal::PlainHttp { .. })
    ));
    assert!(matches!(
        t.check_url(&url("https://10.255.255.1:9/cb")),
        Err(Refusal::Address { .. })
    ));
    assert!(matches!(
        t.check_url(&url("https://0.0.0.0:9/x")),
        Err(Refusal::Address { .. })
    ));
}

#[test]
fn the_pay_url_uses_plain_http_only_where_allowed() {
    let address = |s: &str| s.parse::<Lud16>().unwrap();
    let t = test_mode();
    assert_eq!(
        t.pay_url(&address("z@127.0.0.1:9000")).unwrap().as_str(),
        "http://127.0.0.1:9000/.well-known/lnurlp/z"
    );
    assert_eq!(
        t.pay_url(&address("z@example.com")).unwrap().as_str(),
        "https://example.com/.well-known/lnurlp/z"
    );
    let s = strict();
    assert!(matches!(
        s.pay_url(&address("z@127.0.0.1:9000")),
        Err(Refusal::Address { .. })
    ));
    let lan = HostPolicy::new(false, allow(&["http://wallet.lan:8080", "10.1.2.3:443"]));
    assert_eq!(
        lan.pay_url(&address("z@wallet.lan:8080")).unwrap().as_str(),
        "http://wallet.lan:8080/.well-known/lnurlp/z"
    );
    assert_eq!(
        lan.pay_url(&address("z@10.1.2.3")).unwrap().as_str(),
        "https://10.1.2.3/.well-known/lnurlp/z"
    );
    // Another port of an allow-listed host is not allow-listed.
    assert!(matches!(
        lan.pay_url(&address("z@10.1.2.3:8443")),
        Err(Refusal::Address { .. })
    ));
    assert_eq!(
        lan.check_url(&url("https://wallet.lan:8080/cb")),
        Ok(Route::AllowListed)
    );
    assert!(
        lan.check_url(&url("http://10.1.2.3/cb")).is_err(),
        "https only"
    );
}

#[test]
fn allow_list_entries_are_validated_and_normalised() {
    for (entry, shown) in [
        ("wallet.lan", "wallet.lan"),
        ("Wallet.LAN:8080", "wallet.lan:8080"),
        ("http://10.1.2.3", "http://10.1.2.3"),
        ("0x0a.1.2.3", "10.1.2.3"),
        ("[fd00::1]:443", "[fd00::1]:443"),
        ("http://[::1]:80", "http://[::1]:80"),
    ] {
        let parsed: AllowEntry = entry.parse().unwrap();
        assert_eq!(parsed.to_string(), shown, "{entry}");
    }
    for bad in [
        "",
        "https://wallet.lan",
        "http://",
        "wallet.lan/path",
        "user@wallet.lan",
        "*.lan",
        "wallet.lan:0",
        "wallet.lan:65536",
        "wallet.lan:+80",
        "wallet.lan:",
        "fd00::1",
        "[fd00::1",
        "[fd00::1]x",
        "wal let",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "[::]",
        "999.1.1.1",
    ] {
        assert!(bad.parse::<AllowEntry>().is_err(), "{bad:?}");
    }
    let e: AllowEntry = "http://wallet.lan:80".parse().unwrap();
    assert!(
        e.matches(&url("http://wallet.lan/cb")),
        "the scheme's default port"
    );
    assert!(!e.matches(&url("https://wallet.lan/cb")));
}

#[test]
fn resolved_addresses_are_filtered_and_an_all_forbidden_answer_is_refused() {
    let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), 0);
    let p = strict();
    assert_eq!(
        p.filter_resolved("w.example", [at("10.0.0.5"), at("93.184.216.34")]),
        Ok(vec![at("93.184.216.34")])
    );
    let refused = p
        .filter_resolved("w.example", [at("10.0.0.5"), at("::1")])
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "w.example resolves to 10.0.0.5, a private address (10.0.0.0/8) and ::1, a loopback \
         address (::1/128)"
    );
    assert_eq!(
        p.filter_resolved("w.example", []),
        Err(Refusal::NoAddress {
            host: "w.example".into()
        })
    );
    assert_eq!(
        test_mode().filter_resolved("localhost", [at("127.0.0.1")]),
        Ok(vec![at("127.0.0.1")])
    );
    assert!(test_mode()
        .filter_resolved("localhost", [at("10.0.0.5")])
        .is_err());
}
