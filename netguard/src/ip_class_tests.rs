//! Every range, with its edges and the public neighbours just outside it.

use super::*;

fn rule_of(text: &str) -> Option<Rule> {
    let ip: IpAddr = text.parse().unwrap_or_else(|_| panic!("{text} is an IP"));
    forbidden(ip).map(|f| f.rule)
}

fn check(cases: &[(&str, Option<Rule>)]) {
    for (ip, want) in cases {
        assert_eq!(rule_of(ip), *want, "{ip}");
    }
}

#[test]
fn every_ipv4_range_is_refused_and_its_neighbours_are_public() {
    use Rule::*;
    check(&[
        ("0.0.0.0", Some(Unspecified)),
        ("0.255.255.255", Some(Unspecified)),
        ("1.0.0.0", None),
        ("9.255.255.255", None),
        ("10.0.0.0", Some(Private)),
        ("10.255.255.255", Some(Private)),
        ("11.0.0.0", None),
        ("100.63.255.255", None),
        ("100.64.0.0", Some(SharedCgnat)),
        ("100.127.255.255", Some(SharedCgnat)),
        ("100.128.0.0", None),
        ("126.255.255.255", None),
        ("127.0.0.1", Some(Loopback)),
        ("127.255.255.255", Some(Loopback)),
        ("128.0.0.0", None),
        ("169.253.255.255", None),
        ("169.254.0.1", Some(LinkLocal)),
        ("169.254.255.255", Some(LinkLocal)),
        ("169.255.0.0", None),
        ("172.15.255.255", None),
        ("172.16.0.0", Some(Private)),
        ("172.31.255.255", Some(Private)),
        ("172.32.0.0", None),
        ("191.255.255.255", None),
        ("192.0.0.0", Some(IetfProtocol)),
        ("192.0.0.255", Some(IetfProtocol)),
        ("192.0.1.0", None),
        ("192.0.2.0", Some(Documentation)),
        ("192.0.2.255", Some(Documentation)),
        ("192.0.3.0", None),
        ("192.88.98.255", None),
        ("192.88.99.1", Some(Reserved)),
        ("192.88.100.0", None),
        ("192.167.255.255", None),
        ("192.168.0.0", Some(Private)),
        ("192.168.255.255", Some(Private)),
        ("192.169.0.0", None),
        ("198.17.255.255", None),
        ("198.18.0.0", Some(Benchmarking)),
        ("198.19.255.255", Some(Benchmarking)),
        ("198.20.0.0", None),
        ("198.51.99.255", None),
        ("198.51.100.0", Some(Documentation)),
        ("198.51.100.255", Some(Documentation)),
        ("198.51.101.0", None),
        ("203.0.112.255", None),
        ("203.0.113.0", Some(Documentation)),
        ("203.0.113.255", Some(Documentation)),
        ("203.0.114.0", None),
        ("223.255.255.255", None),
        ("224.0.0.0", Some(Multicast)),
        ("239.255.255.255", Some(Multicast)),
        ("240.0.0.0", Some(Reserved)),
        ("255.255.255.254", Some(Reserved)),
        ("255.255.255.255", Some(Broadcast)),
        ("8.8.8.8", None),
        ("93.184.216.34", None),
    ]);
}

#[test]
fn every_ipv6_range_is_refused_and_its_neighbours_are_public() {
    use Rule::*;
    check(&[
        ("::", Some(Unspecified)),
        ("::1", Some(Loopback)),
        ("64:ff9b:1::1", Some(Private)),
        ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Some(Private)),
        ("100::1", Some(DiscardOnly)),
        ("100::ffff:ffff:ffff:ffff", Some(DiscardOnly)),
        ("100:0:0:1::", Some(NotGlobalUnicast)),
        ("2001::1", Some(Teredo)),
        ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Some(Teredo)),
        ("2001:1::1", None),
        ("2001:2::1", Some(Benchmarking)),
        ("2001:2:0:ffff::", Some(Benchmarking)),
        ("2001:2:1::", None),
        ("2001:f:ffff::", None),
        ("2001:10::1", Some(Reserved)),
        ("2001:2f:ffff::", Some(Reserved)),
        ("2001:30::", None),
        ("2001:db7:ffff:ffff::", None),
        ("2001:db8::1", Some(Documentation)),
        ("2001:db8:ffff:ffff::", Some(Documentation)),
        ("2001:db9::", None),
        ("3ffe:ffff::", None),
        ("3fff::1", Some(Documentation)),
        ("3fff:fff:ffff::", Some(Documentation)),
        ("3fff:1000::", None),
        ("fbff:ffff::", Some(NotGlobalUnicast)),
        ("fc00::1", Some(UniqueLocal)),
        ("fdff:ffff::", Some(UniqueLocal)),
        ("fe80::1", Some(LinkLocal)),
        ("febf:ffff::", Some(LinkLocal)),
        ("fec0::1", Some(SiteLocal)),
        ("feff:ffff::", Some(SiteLocal)),
        ("ff02::1", Some(Multicast)),
        ("ffff:ffff::", Some(Multicast)),
        ("1fff:ffff::", Some(NotGlobalUnicast)),
        ("2000::", None),
        ("3fff:ffff:ffff::", None),
        ("4000::", Some(NotGlobalUnicast)),
        ("2606:4700:4700::1111", None),
        ("2001:4860:4860::8888", None),
        // IPv4-translated (::ffff:0:0:0/96) carries no address we decode: outside 2000::/3.
        ("::ffff:0:7f00:1", Some(NotGlobalUnicast)),
    ]);
}

#[test]
fn ipv6_forms_carrying_ipv4_get_the_ipv4_verdict() {
    use Rule::*;
    check(&[
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("::ffff:10.0.0.5", Some(Private)),
        ("::ffff:0.0.0.0", Some(Unspecified)),
        ("::ffff:169.254.169.254", Some(LinkLocal)),
        ("::ffff:8.8.8.8", None),
        ("::127.0.0.1", Some(Loopback)),
        ("::0.0.0.2", Some(Unspecified)),
        ("::8.8.8.8", None),
        ("64:ff9b::10.0.0.1", Some(Private)),
        ("64:ff9b::127.0.0.1", Some(Loopback)),
        ("64:ff9b::8.8.8.8", None),
        ("2002:7f00:1::", Some(Loopback)),
        ("2002:a00:5::1", Some(Private)),
        ("2002:c0a8:101::", Some(Private)),
        ("2002:808:808::1", None),
    ]);
    let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
    assert_eq!(
        carried_v4(mapped),
        Some(("IPv4-mapped", Ipv4Addr::LOCALHOST))
    );
    let six_to_four: Ipv6Addr = "2002:c0a8:101:1::".parse().unwrap();
    assert_eq!(
        carried_v4(six_to_four),
        Some(("6to4", Ipv4Addr::new(192, 168, 1, 1)))
    );
}

#[test]
fn reasons_name_the_rule_the_range_and_a_carried_address() {
    let show = |ip: &str| forbidden(ip.parse().unwrap()).unwrap().to_string();
    assert_eq!(show("10.0.0.5"), "a private address (10.0.0.0/8)");
    assert_eq!(
        show("::ffff:127.0.0.1"),
        "a loopback address (IPv4-mapped form of 127.0.0.1, in 127.0.0.0/8)"
    );
    assert_eq!(
        show("4000::1"),
        "an address outside IPv6 global unicast (2000::/3)"
    );
    assert_eq!(
        show("255.255.255.255"),
        "the broadcast address (255.255.255.255/32)"
    );
}
