//! Properties of the address checks, against a model written differently from `ip_class`: the
//! ranges as CIDR strings, matched by comparing addresses as strings of bits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use paydvm_netguard::{forbidden, HostPolicy, Lud16, Refusal, Rule};
use proptest::prelude::*;

const MODEL_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

const MODEL_V6: &[&str] = &[
    "::/128",
    "::1/128",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:2::/48",
    "2001:10::/28",
    "2001:20::/28",
    "2001:db8::/32",
    "3fff::/20",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

fn bits(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:08b}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:08b}")).collect(),
    }
}

fn in_model(table: &[&str], ip: IpAddr) -> bool {
    table.iter().any(|cidr| {
        let (net, len) = cidr.split_once('/').unwrap();
        let net: IpAddr = net.parse().unwrap();
        let len: usize = len.parse().unwrap();
        net.is_ipv4() == ip.is_ipv4() && bits(net)[..len] == bits(ip)[..len]
    })
}

/// The IPv4 address a model IPv6 address carries, by reading its segments.
fn model_carried(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn model_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => in_model(MODEL_V4, ip),
        IpAddr::V6(v6) => {
            if in_model(MODEL_V6, ip) {
                return true;
            }
            if let Some(v4) = model_carried(v6) {
                return in_model(MODEL_V4, IpAddr::V4(v4));
            }
            !bits(ip).starts_with("001")
        }
    }
}

/// What std already knows is special (the stable predicates).
fn std_says_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| std_says_special(v4.into()))
        }
    }
}

fn near(cidr: &str, offset: i64, from_end: bool) -> IpAddr {
    let (net, len) = cidr.split_once('/').unwrap();
    let len: u32 = len.parse().unwrap();
    match net.parse::<IpAddr>().unwrap() {
        IpAddr::V4(n) => {
            let span = 1u64 << (32 - len);
            let base = u64::from(u32::from(n)) + if from_end { span - 1 } else { 0 };
            IpAddr::V4(Ipv4Addr::from(base.wrapping_add_signed(offset) as u32))
        }
        IpAddr::V6(n) => {
            let span = 1u128.checked_shl(128 - len).unwrap_or(0);
            let base = u128::from(n).wrapping_add(if from_end { span.wrapping_sub(1) } else { 0 });
            IpAddr::V6(Ipv6Addr::from(base.wrapping_add_signed(i128::from(offset))))
        }
    }
}

/// Any address, but mostly ones at or next to the edge of a range.
fn an_ip() -> impl Strategy<Value = IpAddr> {
    let edges = (
        prop::sample::select([MODEL_V4, MODEL_V6].concat()),
        -3i64..=3,
        any::<bool>(),
    )
        .prop_map(|(cidr, offset, end)| near(cidr, offset, end));
    let carried = (any::<u32>(), 0..4u8).prop_map(|(v4, form)| {
        let v4 = Ipv4Addr::from(v4);
        let [a, b, c, d] = v4.octets();
        let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
        IpAddr::V6(match form {
            0 => v4.to_ipv6_mapped(),
            1 => Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo),
            2 => Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
            _ => Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1),
        })
    });
    prop_oneof![
        3 => edges,
        2 => carried,
        1 => any::<u32>().prop_map(|v| IpAddr::V4(v.into())),
        1 => any::<u128>().prop_map(|v| IpAddr::V6(v.into())),
        1 => any::<u128>().prop_map(|v| IpAddr::V6(((v >> 3) | (1 << 125)).into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_classifier_agrees_with_the_model(ip in an_ip()) {
        prop_assert_eq!(forbidden(ip).is_some(), model_forbidden(ip), "{}", ip);
        if std_says_special(ip) {
            prop_assert!(forbidden(ip).is_some(), "std calls {} special", ip);
        }
    }

    #[test]
    fn ipv6_forms_carrying_ipv4_get_the_ipv4_rule(v4 in any::<u32>()) {
        let v4 = Ipv4Addr::from(v4);
        let [a, b, c, d] = v4.octets();
        let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
        let want = forbidden(v4.into()).map(|f| f.rule);
        for v6 in [
            v4.to_ipv6_mapped(),
            Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
            Ipv6Addr::new(0x2002, hi, lo, 7, 0, 0, 0, 1),
        ] {
            prop_assert_eq!(forbidden(v6.into()).map(|f| f.rule), want, "{}", v6);
        }
    }

    #[test]
    fn an_address_on_a_forbidden_literal_is_refused_before_any_io(
        ip in an_ip().prop_filter("forbidden", |ip| forbidden(*ip).is_some()),
        form in 0..4u8,
        port in prop::option::of(1..=u16::MAX),
        loopback_allowed in any::<bool>(),
    ) {
        let domain = literal(ip, form) + &port.map(|p| format!(":{p}")).unwrap_or_default();
        let address: Lud16 = format!("alice@{domain}").parse().unwrap();
        let policy = HostPolicy::new(loopback_allowed, Default::default());
        let verdict = policy.pay_url(&address);
        let loopback = forbidden(ip).is_some_and(|f| f.rule == Rule::Loopback);
        if loopback && loopback_allowed {
            prop_assert!(verdict.is_ok(), "{} {:?}", domain, verdict);
        } else {
            prop_assert!(matches!(verdict, Err(Refusal::Address { .. })), "{} {:?}", domain, verdict);
        }
    }

    #[test]
    fn a_public_literal_passes_with_https(ip in an_ip().prop_filter("public", |ip| forbidden(*ip).is_none()), form in 0..4u8) {
        let address: Lud16 = format!("alice@{}", literal(ip, form)).parse().unwrap();
        let url = HostPolicy::default().pay_url(&address).unwrap();
        prop_assert_eq!(url.scheme(), "https");
    }
}

/// `ip` written the ways a URL parser accepts: dotted, one decimal number, hex, octal parts
/// (IPv4); compressed or with a dotted tail (IPv6, in brackets).
fn literal(ip: IpAddr, form: u8) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            match form {
                0 => v4.to_string(),
                1 => u32::from(v4).to_string(),
                2 => format!("0x{:x}", u32::from(v4)),
                _ => format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
            }
        }
        IpAddr::V6(v6) => {
            let [.., a, b, c, d] = v6.octets();
            match form {
                0 | 1 => format!("[{v6}]"),
                _ => {
                    let s = v6.segments();
                    let head: Vec<String> = s[..6].iter().map(|x| format!("{x:x}")).collect();
                    format!("[{}:{a}.{b}.{c}.{d}]", head.join(":"))
                }
            }
        }
    }
}
