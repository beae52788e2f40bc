//! The rules for one outbound LNURL request to a host a customer (or a customer's LNURL server)
//! named: which scheme, which hosts, and which resolved addresses.
//!
//! Two checks, both pure:
//! - [`HostPolicy::check_url`] before a request: scheme, credentials, plain http, the
//!   allow-list, and the address itself when the host is an IP literal (the HTTP client never
//!   resolves those, so this is their only check).
//! - [`HostPolicy::filter_resolved`] at connect time, inside the HTTP client's resolver, on the
//!   addresses a name resolves to: the addresses checked are the ones connected to, so a name
//!   that re-resolves to a private address (DNS rebinding) is caught on every connection.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use thiserror::Error;
use url::{Host, Url};

use crate::allow_list::AllowList;
use crate::ip_class::{forbidden, Forbidden, Rule};
use crate::lud16::Lud16;

/// Why a request is refused before any connection is made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("the URL's scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL carries a user name or password")]
    Credentials,
    #[error("plain http to {host} is not allowed: https is required unless node.lnurl_allow_hosts lists \"http://{host}\"")]
    PlainHttp { host: String },
    #[error("{host} is a loopback name")]
    LoopbackName { host: String },
    #[error("{host} is {why}")]
    Address { host: String, why: Forbidden },
    #[error("{host} resolves to {}", Resolved(.refused))]
    Resolved {
        host: String,
        refused: Vec<(IpAddr, Forbidden)>,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
}

/// `10.0.0.5, a private address (10.0.0.0/8) and 127.0.0.1, …`
struct Resolved<'a>(&'a [(IpAddr, Forbidden)]);

impl fmt::Display for Resolved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (ip, why)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{ip}, {why}")?;
        }
        Ok(())
    }
}

/// How a request that passed [`HostPolicy::check_url`] is to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Through the guarded client: a name is connected to only at addresses
    /// [`HostPolicy::filter_resolved`] lets through.
    Guarded,
    /// The operator allow-listed this host (and port): connect wherever it resolves.
    AllowListed,
}

/// The outbound rules: loopback allowed or not (`lnurl_http_loopback`, tests and the demo), and
/// the operator's allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    loopback: bool,
    allow: AllowList,
}

impl HostPolicy {
    /// `loopback`: loopback hosts are allowed, over plain http too (tests, the demo).
    pub fn new(loopback: bool, allow: AllowList) -> HostPolicy {
        HostPolicy { loopback, allow }
    }

    pub fn loopback_allowed(&self) -> bool {
        self.loopback
    }

    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// Whether plain `http://` may be used to `url`'s host: a loopback host when loopback is
    /// allowed, or an allow-list entry written with `http://`.
    pub fn plain_http_allowed(&self, url: &Url) -> bool {
        let loopback = self.loopback && url.host().is_some_and(|h| is_loopback_host(&h));
        loopback || self.allow.allows_plain_http(url)
    }

    /// Checks `url` before any connection; see the module docs. A host's own rule is reported
    /// before a plain-http refusal: it would be refused over https too.
    pub fn check_url(&self, url: &Url) -> Result<Route, Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refusal::Credentials);
        }
        let host = url.host().ok_or(Refusal::NoHost)?;
        let route = match self.allow.find(url) {
            Some(_) => Route::AllowListed,
            None => {
                self.check_host(&host)?;
                Route::Guarded
            }
        };
        if url.scheme() == "http" && !self.plain_http_allowed(url) {
            return Err(Refusal::PlainHttp {
                host: host_port(url),
            });
        }
        Ok(route)
    }

    /// A literal address must be permitted; a name must not be `localhost` (unless loopback
    /// is allowed). Other names are checked when they resolve. Whatever the scheme: the node
    /// also checks the websocket relays a customer names with it.
    pub fn check_host(&self, host: &Host<&str>) -> Result<(), Refusal> {
        let ip: IpAddr = match *host {
            Host::Domain(name) if is_localhost_name(name) && !self.loopback => {
                return Err(Refusal::LoopbackName {
                    host: name.to_owned(),
                })
            }
            Host::Domain(_) => return Ok(()),
            Host::Ipv4(ip) => ip.into(),
            Host::Ipv6(ip) => ip.into(),
        };
        self.permits(ip).map_err(|why| Refusal::Address {
            host: host.to_string(),
            why,
        })
    }

    /// The LNURL-pay URL for `address` (plain http where allowed, else https), checked.
    pub fn pay_url(&self, address: &Lud16) -> Result<Url, Refusal> {
        let http = address.url(true);
        let url = if self.plain_http_allowed(&http) {
            http
        } else {
            address.url(false)
        };
        self.check_url(&url)?;
        Ok(url)
    }

    /// Whether an address may be connected to by the guarded client.
    pub fn permits(&self, ip: IpAddr) -> Result<(), Forbidden> {
        match forbidden(ip) {
            None => Ok(()),
            Some(f) if self.loopback && f.rule == Rule::Loopback => Ok(()),
            Some(f) => Err(f),
        }
    }

    /// The addresses `host` resolved to that may be connected to; an error naming the refused
    /// ones when none is left.
    pub fn filter_resolved(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let mut kept = Vec::new();
        let mut refused = Vec::new();
        for addr in addrs {
            match self.permits(addr.ip()) {
                Ok(()) => kept.push(addr),
                Err(why) => refused.push((addr.ip(), why)),
            }
        }
        match (kept.is_empty(), refused.is_empty()) {
            (false, _) => Ok(kept),
            (true, false) => Err(Refusal::Resolved {
                host: host.to_owned(),
                refused,
            }),
            (true, true) => Err(Refusal::NoAddress {
                host: host.to_owned(),
            }),
        }
    }
}

/// `host` or `host:port` as the URL has it (for messages).
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// A loopback address (127.0.0.0/8, `::1`, or an IPv6 form carrying a 127.x address), or a
/// `localhost` name.
pub(crate) fn is_loopback_host(host: &Host<&str>) -> bool {
    let ip: IpAddr = match *host {
        Host::Domain(name) => return is_localhost_name(name),
        Host::Ipv4(ip) => ip.into(),
        Host::Ipv6(ip) => ip.into(),
    };
    forbidden(ip).is_some_and(|f| f.rule == Rule::Loopback)
}

/// `localhost` and names under it (RFC 6761), with or without final dots (the fuzzer found
/// `a.localhost..` passing when only one dot was stripped).
fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name
            .len()
            .checked_sub(".localhost".len())
            .and_then(|at| name.get(at..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
