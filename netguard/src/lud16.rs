//! A lightning address `name@domain` (LUD-16), as a customer or the operator writes it, and the
//! LNURL-pay URL it stands for. Whether that URL may be fetched is [`HostPolicy`]'s call.
//!
//! [`HostPolicy`]: crate::HostPolicy

use std::fmt;
use std::str::FromStr;

use thiserror::Error;
use url::{Host, Url};

use crate::policy::is_loopback_host;

/// Why a string is not a lightning address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a lightning address (name@domain)")]
pub struct BadLud16(pub String);

/// A lightning address `name@domain` (LUD-16); `domain` may carry a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lud16 {
    name: String,
    domain: String,
}

impl Lud16 {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The domain as written (lower-cased), with its port if any.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether the domain is a loopback host: an address in 127.0.0.0/8 or `::1` (also in an
    /// IPv6 form carrying one, such as `[::ffff:127.0.0.1]`), or the name `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.url(false)
            .host()
            .is_some_and(|host| is_loopback_host(&host))
    }

    /// The host the URL parser makes of the domain: odd IPv4 forms (`2130706433`, `0x7f.1`,
    /// `127.1`) become the address they mean.
    pub fn host(&self) -> Host<String> {
        self.url(false)
            .host()
            .map(|h| h.to_owned())
            .expect("checked when parsed: the URL has a host")
    }

    /// The LNURL-pay endpoint `https://domain/.well-known/lnurlp/name` (`http://` with
    /// `plain_http`).
    pub fn url(&self, plain_http: bool) -> Url {
        Self::url_for(&self.name, &self.domain, plain_http)
            .expect("checked when parsed: the URL parses with either scheme")
    }

    fn url_for(name: &str, domain: &str, plain_http: bool) -> Option<Url> {
        let scheme = if plain_http { "http" } else { "https" };
        Url::parse(&format!("{scheme}://{domain}/.well-known/lnurlp/{name}"))
            .ok()
            .filter(|url| url.host().is_some())
    }
}

impl FromStr for Lud16 {
    type Err = BadLud16;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadLud16(s.to_owned());
        let (name, domain) = s.split_once('@').ok_or_else(bad)?;
        // LUD-16: the username is a-z0-9-_.+ (lower case only).
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.+".contains(&b));
        if !name_ok || domain.is_empty() || domain.contains(['/', '?', '#', '@', ' ', '\\']) {
            return Err(bad());
        }
        let domain = domain.to_ascii_lowercase();
        // The domain must make a URL with a host (a port is fine), under both schemes, so
        // `url` cannot fail later.
        if Self::url_for(name, &domain, false).is_none()
            || Self::url_for(name, &domain, true).is_none()
        {
            return Err(bad());
        }
        Ok(Lud16 {
            name: name.to_owned(),
            domain,
        })
    }
}

impl fmt::Display for Lud16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lightning_addresses_parse_and_map_to_their_pay_url() {
        let a: Lud16 = "dvm@example.com".parse().unwrap();
        assert_eq!(
            a.url(false).as_str(),
            "https://example.com/.well-known/lnurlp/dvm"
        );
        assert!(!a.is_loopback());
        let local: Lud16 = "zap.me@127.0.0.1:9000".parse().unwrap();
        assert_eq!(
            local.url(true).as_str(),
            "http://127.0.0.1:9000/.well-known/lnurlp/zap.me"
        );
        for bad in [
            "",
            "dvm",
            "@x.com",
            "Dvm@x.com",
            "a@",
            "a@b/c",
            "a@b\\c",
            "a b@x.com",
            "a@b@c",
            "a@999.1.1.1",
            "a@x.com:99999",
            "a@[fe80::1%25eth0]",
        ] {
            assert!(bad.parse::<Lud16>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn odd_address_forms_become_the_host_they_mean() {
        for (domain, host) in [
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("0", "0.0.0.0"),
            ("%31%32%37.0.0.1", "127.0.0.1"),
            ("[::ffff:127.0.0.1]:99", "[::ffff:7f00:1]"),
            ("LocalHost", "localhost"),
        ] {
            let a: Lud16 = format!("x@{domain}").parse().unwrap();
            assert_eq!(a.host().to_string(), host, "{domain}");
        }
        for loopback in [
            "2130706433",
            "[::ffff:127.0.0.1]",
            "[::1]",
            "localhost",
            "a.localhost.",
        ] {
            let a: Lud16 = format!("x@{loopback}").parse().unwrap();
            assert!(a.is_loopback(), "{loopback}");
        }
        let zero: Lud16 = "x@0".parse().unwrap();
        assert!(!zero.is_loopback(), "0.0.0.0 is unspecified, not loopback");
    }
}
