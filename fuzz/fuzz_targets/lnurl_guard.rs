//! Refund addresses and LNURL URLs through `paydvm-netguard`'s checks.
//!
//! Input: byte 0 picks the policy (bit 0: loopback allowed; bit 1: use the allow-list written in
//! the input); the rest is text, `allow-list entries (comma-separated) \n subject`. The subject
//! is tried as a lightning address (→ its pay URL under the policy), as an LNURL callback URL,
//! and, as raw bytes, as addresses a name resolved to.
//!
//! Asserts: no panic; whatever the policy lets through satisfies an oracle written apart from
//! the crate (std's address predicates plus a few prefixes, and carried IPv4 addresses decoded
//! by hand): a guarded literal host is public (or loopback when loopback is allowed), a guarded
//! name is not `localhost` unless loopback is allowed, plain http only where allowed, an
//! allow-listed route only for a matching entry; an address round-trips through `Display`; the
//! resolved-address filter keeps only permitted addresses and refuses only when none is.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use paydvm_netguard::{AllowEntry, AllowList, HostPolicy, Lud16, Route};
use url::{Host, Url};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (allow_text, subject) = text.split_once('\n').unwrap_or(("", &text));
    let entries: Vec<AllowEntry> = if flags & 2 != 0 {
        allow_text
            .split(',')
            .filter_map(|e| e.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let policy = HostPolicy::new(flags & 1 != 0, AllowList::new(entries));

    if let Ok(address) = subject.parse::<Lud16>() {
        let again: Lud16 = address.to_string().parse().expect("Display round-trips");
        assert_eq!(again, address);
        let _ = (address.host(), address.is_loopback());
        if let Ok(url) = policy.pay_url(&address) {
            let route = policy.check_url(&url).expect("pay_url checked it");
            assert_sound(&policy, &url, route);
        }
    }
    if let Ok(url) = Url::parse(subject) {
        if let Ok(route) = policy.check_url(&url) {
            assert_sound(&policy, &url, route);
        }
    }
    check_resolved(&policy, rest);
});

fn assert_sound(policy: &HostPolicy, url: &Url, route: Route) {
    assert!(matches!(url.scheme(), "http" | "https"), "{url}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{url}"
    );
    let host = url.host().expect("a checked URL has a host");
    let entry = policy
        .allow_list()
        .entries()
        .iter()
        .find(|e| e.matches(url));
    if url.scheme() == "http" {
        let loopback_http = policy.loopback_allowed() && oracle_loopback_host(&host);
        let entry_http = policy
            .allow_list()
            .entries()
            .iter()
            .any(|e| e.matches(url) && e.plain_http());
        assert!(loopback_http || entry_http, "plain http let through: {url}");
    }
    match route {
        Route::AllowListed => assert!(entry.is_some(), "allow-listed without an entry: {url}"),
        Route::Guarded => match host {
            Host::Domain(name) => assert!(
                policy.loopback_allowed() || !is_localhost(name),
                "localhost let through: {url}"
            ),
            Host::Ipv4(ip) => assert_permitted(policy, ip.into(), url.as_str()),
            Host::Ipv6(ip) => assert_permitted(policy, ip.into(), url.as_str()),
        },
    }
}

/// The raw input as 4- and 16-byte addresses a name "resolved" to.
fn check_resolved(policy: &HostPolicy, bytes: &[u8]) {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, chunk) in bytes.chunks(16).enumerate().take(8) {
        let ip: IpAddr = match (i % 2, chunk.len()) {
            (0, 16) => Ipv6Addr::from(<[u8; 16]>::try_from(chunk).unwrap()).into(),
            (_, n) if n >= 4 => Ipv4Addr::new(chunk[0], chunk[1], chunk[2], chunk[3]).into(),
            _ => continue,
        };
        addrs.push(SocketAddr::new(ip, 443));
    }
    match policy.filter_resolved("fuzz.example", addrs.clone()) {
        Ok(kept) => {
            assert!(!kept.is_empty());
            for addr in &kept {
                assert_permitted(policy, addr.ip(), "resolved");
                assert!(addrs.contains(addr));
            }
        }
        // The oracle knows fewer ranges than the table, so it cannot say an address should
        // have been kept; the filter must agree with `permits` though.
        Err(_) => assert!(addrs.iter().all(|a| policy.permits(a.ip()).is_err())),
    }
}

fn assert_permitted(policy: &HostPolicy, ip: IpAddr, what: &str) {
    assert!(oracle_permitted(policy, ip), "{ip} let through ({what})");
}

/// Not special by the oracle, or loopback while loopback is allowed.
fn oracle_permitted(policy: &HostPolicy, ip: IpAddr) -> bool {
    !oracle_special(ip) || (policy.loopback_allowed() && oracle_loopback(ip))
}

fn oracle_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || carried(v6).is_some_and(|v4| v4.is_loopback()),
    }
}

fn oracle_loopback_host(host: &Host<&str>) -> bool {
    match *host {
        Host::Domain(name) => is_localhost(name),
        Host::Ipv4(ip) => oracle_loopback(ip.into()),
        Host::Ipv6(ip) => oracle_loopback(ip.into()),
    }
}

fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

fn oracle_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || carried(v6).is_some_and(|v4| oracle_special(v4.into()))
        }
    }
}

/// The IPv4 address inside a mapped, compatible, NAT64 or 6to4 IPv6 address, decoded by hand.
fn carried(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = v6.octets();
    let s = v6.segments();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..5] == [0; 5] && (s[5] == 0 || s[5] == 0xffff) {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    (s[0] == 0x2002).then(|| Ipv4Addr::new(o[2], o[3], o[4], o[5]))
}
