//! Is an IP address one the node may connect to for a customer? Public addresses are; every
//! special-purpose range in the tables below is not.
//!
//! The ranges are data ([`V4_RANGES`], [`V6_RANGES`], [`V6_CARRYING_V4`]), checked first match
//! wins. An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64,
//! 6to4) gets the verdict of the IPv4 address it carries: the kernel or a translator delivers it
//! there (`[::ffff:127.0.0.1]` reaches the local machine). IPv6 outside the global unicast block
//! 2000::/3 is refused whatever it is, so a range missing from the table fails closed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a range is never connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    Unspecified,
    Loopback,
    Private,
    LinkLocal,
    /// Carrier-grade NAT, 100.64.0.0/10.
    SharedCgnat,
    Multicast,
    Broadcast,
    Documentation,
    Benchmarking,
    Reserved,
    IetfProtocol,
    UniqueLocal,
    SiteLocal,
    Teredo,
    DiscardOnly,
    /// IPv6 outside 2000::/3.
    NotGlobalUnicast,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::Unspecified => "an unspecified address",
            Rule::Loopback => "a loopback address",
            Rule::Private => "a private address",
            Rule::LinkLocal => "a link-local address",
            Rule::SharedCgnat => "a shared (CGNAT) address",
            Rule::Multicast => "a multicast address",
            Rule::Broadcast => "the broadcast address",
            Rule::Documentation => "a documentation address",
            Rule::Benchmarking => "a benchmarking address",
            Rule::Reserved => "a reserved address",
            Rule::IetfProtocol => "an IETF protocol address",
            Rule::UniqueLocal => "a unique-local address",
            Rule::SiteLocal => "a site-local address",
            Rule::Teredo => "a Teredo address",
            Rule::DiscardOnly => "a discard-only address",
            Rule::NotGlobalUnicast => "an address outside IPv6 global unicast",
        })
    }
}

/// An address prefix, `net/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Cidr {
        Cidr {
            net: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            len,
        }
    }

    const fn v6(s: [u16; 8], len: u8) -> Cidr {
        Cidr {
            net: IpAddr::V6(Ipv6Addr::new(
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
            )),
            len,
        }
    }

    pub fn network(&self) -> IpAddr {
        self.net
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is inside (always false across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

/// One forbidden range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub cidr: Cidr,
    pub rule: Rule,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, rule: Rule) -> Range {
    Range {
        cidr: Cidr::v4(a, b, c, d, len),
        rule,
    }
}

const fn v6(segments: [u16; 8], len: u8, rule: Rule) -> Range {
    Range {
        cidr: Cidr::v6(segments, len),
        rule,
    }
}

/// IPv4 ranges never connected to (IANA special-purpose registry). First match wins: the
/// broadcast address comes before the reserved block holding it.
pub const V4_RANGES: &[Range] = &[
    v4(0, 0, 0, 0, 8, Rule::Unspecified),
    v4(10, 0, 0, 0, 8, Rule::Private),
    v4(100, 64, 0, 0, 10, Rule::SharedCgnat),
    v4(127, 0, 0, 0, 8, Rule::Loopback),
    v4(169, 254, 0, 0, 16, Rule::LinkLocal),
    v4(172, 16, 0, 0, 12, Rule::Private),
    v4(192, 0, 0, 0, 24, Rule::IetfProtocol),
    v4(192, 0, 2, 0, 24, Rule::Documentation),
    // The deprecated 6to4 relay anycast (RFC 7526).
    v4(192, 88, 99, 0, 24, Rule::Reserved),
    v4(192, 168, 0, 0, 16, Rule::Private),
    v4(198, 18, 0, 0, 15, Rule::Benchmarking),
    v4(198, 51, 100, 0, 24, Rule::Documentation),
    v4(203, 0, 113, 0, 24, Rule::Documentation),
    v4(224, 0, 0, 0, 4, Rule::Multicast),
    v4(255, 255, 255, 255, 32, Rule::Broadcast),
    v4(240, 0, 0, 0, 4, Rule::Reserved),
];

/// IPv6 ranges never connected to, checked before the IPv4-carrying forms (so `::` and `::1`
/// are named as themselves, not as IPv4-compatible 0.0.0.0 and 0.0.0.1).
pub const V6_RANGES: &[Range] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, Rule::Unspecified),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, Rule::Loopback),
    // NAT64 local use (RFC 8215): translated into the operator's own network.
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Rule::Private),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Rule::DiscardOnly),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Rule::Teredo),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, Rule::Benchmarking),
    // ORCHID and ORCHIDv2: identifiers, not routable.
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, Rule::Reserved),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, Rule::Reserved),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Rule::Documentation),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Rule::Documentation),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Rule::UniqueLocal),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Rule::LinkLocal),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Rule::SiteLocal),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Rule::Multicast),
];

/// An IPv6 prefix whose addresses carry an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carrier {
    pub cidr: Cidr,
    pub form: &'static str,
    /// Where the IPv4 address starts, in bits from the top.
    pub v4_at: u32,
}

/// The IPv6 forms that carry an IPv4 address.
pub const V6_CARRYING_V4: &[Carrier] = &[
    Carrier {
        cidr: Cidr::v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96),
        form: "IPv4-mapped",
        v4_at: 96,
    },
    Carrier {
        cidr: Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        form: "IPv4-compatible",
        v4_at: 96,
    },
    Carrier {
        cidr: Cidr::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96),
        form: "NAT64",
        v4_at: 96,
    },
    Carrier {
        cidr: Cidr::v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16),
        form: "6to4",
        v4_at: 16,
    },
];

/// IPv6 global unicast; everything else not matched above is refused.
pub const V6_GLOBAL_UNICAST: Cidr = Cidr::v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// Why an address is refused: its rule, the range it fell in, and the IPv4 address it carries
/// when the verdict came from that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub rule: Rule,
    pub range: Cidr,
    pub carried: Option<(&'static str, Ipv4Addr)>,
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.carried {
            None => write!(f, "{} ({})", self.rule, self.range),
            Some((form, v4)) => write!(f, "{} ({form} form of {v4}, in {})", self.rule, self.range),
        }
    }
}

/// `None` for a public address; otherwise why it is never connected to.
pub fn forbidden(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// Whether `ip` is a public address.
pub fn is_public(ip: IpAddr) -> bool {
    forbidden(ip).is_none()
}

fn first_match(table: &[Range], ip: IpAddr) -> Option<Forbidden> {
    table
        .iter()
        .find(|r| r.cidr.contains(ip))
        .map(|r| Forbidden {
            rule: r.rule,
            range: r.cidr,
            carried: None,
        })
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    first_match(V4_RANGES, IpAddr::V4(ip))
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    if let Some(hit) = first_match(V6_RANGES, IpAddr::V6(ip)) {
        return Some(hit);
    }
    if let Some((form, v4)) = carried_v4(ip) {
        return forbidden_v4(v4).map(|f| Forbidden {
            carried: Some((form, v4)),
            ..f
        });
    }
    (!V6_GLOBAL_UNICAST.contains(IpAddr::V6(ip))).then_some(Forbidden {
        rule: Rule::NotGlobalUnicast,
        range: V6_GLOBAL_UNICAST,
        carried: None,
    })
}

/// The IPv4 address an IPv6 address carries, with the form's name.
pub fn carried_v4(ip: Ipv6Addr) -> Option<(&'static str, Ipv4Addr)> {
    let carrier = V6_CARRYING_V4
        .iter()
        .find(|c| c.cidr.contains(IpAddr::V6(ip)))?;
    let bits = u128::from(ip) >> (96 - carrier.v4_at);
    // Truncation keeps the 32 bits just shifted down: the IPv4 address.
    Some((carrier.form, Ipv4Addr::from(bits as u32)))
}

#[cfg(test)]
#[path = "ip_class_tests.rs"]
mod tests;
