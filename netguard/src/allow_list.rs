//! The operator's allow-list (`[node] lnurl_allow_hosts`): hosts the node may reach for LNURL
//! even though they are not public, e.g. a wallet on the operator's own network.
//!
//! An entry is `host` or `host:port` (https only), or the same behind `http://` (plain http is
//! allowed too). `host` is a name or an IP address (`[…]` for IPv6) and is compared with the
//! URL's host after the URL parser's normalisation; without a port any port matches. A name on
//! the list is connected to wherever it resolves: listing it says the operator trusts its DNS.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;
use url::{Host, Url};

use crate::ip_class::{forbidden, Rule};

/// Why an allow-list entry is refused at load.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{entry:?} {why}")]
pub struct BadAllowEntry {
    pub entry: String,
    pub why: &'static str,
}

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowEntry {
    host: Host<String>,
    port: Option<u16>,
    plain_http: bool,
}

impl AllowEntry {
    /// Whether plain `http://` is allowed to this host too.
    pub fn plain_http(&self) -> bool {
        self.plain_http
    }

    /// Whether `url`'s host and port (the scheme's default if none is written) are this entry's.
    pub fn matches(&self, url: &Url) -> bool {
        url.host().is_some_and(|h| h.to_owned() == self.host)
            && match self.port {
                Some(port) => url.port_or_known_default() == Some(port),
                None => true,
            }
    }
}

impl FromStr for AllowEntry {
    type Err = BadAllowEntry;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| BadAllowEntry {
            entry: s.to_owned(),
            why,
        };
        let (plain_http, rest) = match s.strip_prefix("http://") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if rest.contains("://") {
            return Err(bad("may only start with http:// (a bare host means https)"));
        }
        if rest.is_empty()
            || rest.contains(['/', '?', '#', '@', '*', '\\', '%'])
            || rest.contains(char::is_whitespace)
        {
            return Err(bad(
                "must be host or host:port (no path, user, wildcard or escape)",
            ));
        }
        let (host, port) =
            split_port(rest).ok_or_else(|| bad("has a port that is not 1..=65535"))?;
        let host = Host::parse(host).map_err(|_| bad("is not a host name or IP address"))?;
        let ip = match &host {
            Host::Ipv4(ip) => Some((*ip).into()),
            Host::Ipv6(ip) => Some((*ip).into()),
            Host::Domain(_) => None,
        };
        let never_a_server = ip.and_then(forbidden).is_some_and(|f| {
            matches!(
                f.rule,
                Rule::Unspecified | Rule::Multicast | Rule::Broadcast
            )
        });
        if never_a_server {
            return Err(bad("is never a server's address"));
        }
        Ok(AllowEntry {
            host,
            port,
            plain_http,
        })
    }
}

/// `host[:port]` → (host, port); `None` for a bad port.
fn split_port(s: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').map_or(s.len(), |i| i + 1);
        let (host, rest) = s.split_at(end);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    match port {
        None => Some((host, None)),
        // Digits only: `u16::from_str` would also take a leading `+`.
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .map(|p| (host, Some(p))),
        Some(_) => None,
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.plain_http {
            f.write_str("http://")?;
        }
        write!(f, "{}", self.host)?;
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// The whole allow-list; empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<AllowEntry>,
}

impl AllowList {
    pub fn new(entries: Vec<AllowEntry>) -> AllowList {
        AllowList { entries }
    }

    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    /// The first entry `url` matches.
    pub fn find(&self, url: &Url) -> Option<&AllowEntry> {
        self.entries.iter().find(|e| e.matches(url))
    }

    /// Whether an entry matching `url` allows plain http.
    pub fn allows_plain_http(&self, url: &Url) -> bool {
        self.entries.iter().any(|e| e.plain_http && e.matches(url))
    }
}
