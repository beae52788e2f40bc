//! Connections to relays a customer named (a request's `relays` tag, a kind 10019), checked the
//! way LNURL calls are (`payments/lnurl_http.rs`): the relay's name is resolved here, only the
//! addresses the host policy allows are tried, and the websocket is opened on the address that
//! was checked. The configuration's check (`Relays::customer_host_allowed`) already refuses an
//! address or `localhost` written in the URL; this catches a public-looking name that resolves
//! to the node's own host or network, and a name that changes its answer between a check and a
//! connection (there is one lookup, and the connection uses its answer).
//!
//! The operator's relays (`[relays] urls`, and customer relays the operator listed) are
//! connected as named: the operator chose them, and they are often on this machine.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use nostr_sdk::prelude::Url;
use nostr_sdk::RelayUrl;
use paydvm_netguard::{AllowList, HostPolicy, Refusal};
use reqwest::dns::{Name, Resolve};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::config::{CustomerRelays, Relays};
use crate::payments::lnurl_http::SystemResolver;

/// Why a customer's relay was not connected to.
#[derive(Debug, thiserror::Error)]
pub enum RelayRefused {
    #[error("relay {0}: no host in the URL")]
    NoHost(String),
    #[error("relay {host}: cannot resolve: {reason}")]
    Resolve { host: String, reason: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("relay {host}: cannot connect to any allowed address: {reason}")]
    Connect { host: String, reason: String },
    #[error("relay {url}: websocket handshake: {reason}")]
    Handshake { url: String, reason: String },
}

/// Which relays need the check, and how names are resolved.
pub struct RelayGuard {
    policy: HostPolicy,
    /// Connected as named: the operator's own relays and the customer relays it listed.
    operators: Vec<RelayUrl>,
    dns: Arc<dyn Resolve>,
}

impl std::fmt::Debug for RelayGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayGuard")
            .field("loopback", &self.policy.loopback_allowed())
            .field("operators", &self.operators)
            .finish()
    }
}

impl RelayGuard {
    /// From the node's `[relays]`; `dns` instead of the system's resolver (tests).
    pub fn new(relays: &Relays, dns: Option<Arc<dyn Resolve>>) -> RelayGuard {
        let mut operators = relays.urls.clone();
        if let CustomerRelays::Only(listed) = &relays.customer {
            operators.extend(listed.iter().cloned());
        }
        RelayGuard {
            policy: HostPolicy::new(relays.customer_loopback, AllowList::default()),
            operators,
            dns: dns.unwrap_or_else(|| Arc::new(SystemResolver)),
        }
    }

    /// Whether `url` is one of the operator's relays (connected without the check). Compared
    /// without a trailing slash: the relay library hands the transport the parsed URL.
    pub fn trusts(&self, url: &Url) -> bool {
        let url = url.as_str().trim_end_matches('/');
        self.operators
            .iter()
            .any(|r| r.as_str_without_trailing_slash() == url)
    }

    /// Resolves `url`'s host once, keeps the allowed addresses, and opens the websocket on the
    /// first of them that takes a connection (Nagle off, TLS named after the host).
    pub async fn connect(
        &self,
        url: &Url,
    ) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, RelayRefused> {
        let addrs = self.addresses(url).await?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let mut last = String::from("no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    let _ = tcp.set_nodelay(true);
                    let handshake = tokio_tungstenite::client_async_tls_with_config(
                        url.as_str(),
                        tcp,
                        None,
                        None,
                    );
                    return match handshake.await {
                        Ok((ws, _)) => Ok(ws),
                        Err(e) => Err(RelayRefused::Handshake {
                            url: url.to_string(),
                            reason: e.to_string(),
                        }),
                    };
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(RelayRefused::Connect { host, reason: last })
    }

    /// The addresses of `url`'s host that the policy allows, with the URL's port.
    async fn addresses(&self, url: &Url) -> Result<Vec<SocketAddr>, RelayRefused> {
        let host = url
            .host_str()
            .ok_or_else(|| RelayRefused::NoHost(url.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let resolved: Vec<SocketAddr> = match std::net::IpAddr::from_str(&host) {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => self.resolve(&host, port).await?,
        };
        Ok(self.policy.filter_resolved(&host, resolved)?)
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, RelayRefused> {
        let failed = |reason: String| RelayRefused::Resolve {
            host: host.to_owned(),
            reason,
        };
        let name = Name::from_str(host).map_err(|e| failed(e.to_string()))?;
        let answer = self
            .dns
            .resolve(name)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(answer.map(|a| SocketAddr::new(a.ip(), port)).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::payments::lnurl_http::ScriptedDns;

    fn relays(loopback: bool) -> Relays {
        Relays {
            urls: vec![RelayUrl::parse("ws://127.0.0.1:7000").unwrap()],
            publish_cap: crate::config::DEFAULT_PUBLISH_CAP,
            customer: CustomerRelays::Any,
            customer_loopback: loopback,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard(loopback: bool) -> RelayGuard {
        let dns = ScriptedDns::new()
            .answer("inside.example", &[ip("127.0.0.1")])
            .answer("office.example", &[ip("10.1.2.3")])
            .answer("mixed.example", &[ip("10.1.2.3"), ip("93.184.215.14")]);
        RelayGuard::new(&relays(loopback), Some(Arc::new(dns)))
    }

    async fn addresses(g: &RelayGuard, url: &str) -> Result<Vec<SocketAddr>, RelayRefused> {
        g.addresses(&Url::parse(url).unwrap()).await
    }

    #[test]
    fn the_operators_relays_are_trusted_with_or_without_a_slash() {
        let g = guard(false);
        assert!(g.trusts(&Url::parse("ws://127.0.0.1:7000").unwrap()));
        assert!(g.trusts(&Url::parse("ws://127.0.0.1:7000/").unwrap()));
        assert!(!g.trusts(&Url::parse("ws://127.0.0.1:7001").unwrap()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_name_is_resolved_once_and_only_allowed_addresses_are_kept() {
        let strict = guard(false);
        assert!(matches!(
            addresses(&strict, "ws://inside.example:7000").await,
            Err(RelayRefused::Refused(_))
        ));
        assert!(matches!(
            addresses(&strict, "wss://office.example").await,
            Err(RelayRefused::Refused(_))
        ));
        assert!(matches!(
            addresses(&strict, "ws://192.168.1.1:7000").await,
            Err(RelayRefused::Refused(_))
        ));
        assert_eq!(
            addresses(&strict, "wss://mixed.example").await.unwrap(),
            vec![SocketAddr::new(ip("93.184.215.14"), 443)]
        );
        assert!(matches!(
            addresses(&strict, "ws://nowhere.example").await,
            Err(RelayRefused::Resolve { .. })
        ));
        // Loopback only when the operator allows it; other private ranges never.
        let open = guard(true);
        assert_eq!(
            addresses(&open, "ws://inside.example:7000").await.unwrap(),
            vec![SocketAddr::new(ip("127.0.0.1"), 7000)]
        );
        assert!(addresses(&open, "wss://office.example").await.is_err());
    }
}
