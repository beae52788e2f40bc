//! `[relays]`: where the node listens and publishes, and which customer-requested relays it uses.

use nostr_sdk::RelayUrl;
use paydvm_netguard::{AllowList, HostPolicy};

use super::check::Check;
use super::raw::RawRelays;
use super::ConfigError;

pub const MAX_RELAYS: usize = 16;
pub const DEFAULT_PUBLISH_CAP: usize = 8;
pub const MAX_PUBLISH_CAP: usize = 64;
pub const MAX_ALLOWLIST: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relays {
    /// The node's own relays: it reads requests from and publishes to all of them.
    pub urls: Vec<RelayUrl>,
    /// At most this many relays (own plus customer-requested) receive one result.
    pub publish_cap: usize,
    pub customer: CustomerRelays,
    /// Whether a relay a customer names may be on this machine (`customer_relay_loopback`; for
    /// tests and single-machine setups). Other private ranges are refused whatever it says.
    pub customer_loopback: bool,
}

/// Which relays named in a request's `relays` tag the node also publishes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerRelays {
    /// None: results go only to the node's own relays.
    Ignored,
    Any,
    /// Only requested relays that are in this list.
    Only(Vec<RelayUrl>),
}

impl CustomerRelays {
    /// Whether a relay a customer asked for may be used.
    pub fn allows(&self, relay: &RelayUrl) -> bool {
        match self {
            CustomerRelays::Ignored => false,
            CustomerRelays::Any => true,
            CustomerRelays::Only(list) => list.contains(relay),
        }
    }
}

impl Relays {
    pub(crate) fn from_raw(raw: RawRelays, check: Check<'_>) -> Result<Self, ConfigError> {
        let urls = check.required("relays.urls", raw.urls)?;
        if urls.is_empty() || urls.len() > MAX_RELAYS {
            return Err(check.invalid(
                "relays.urls",
                format!("must list 1 to {MAX_RELAYS} relays, got {}", urls.len()),
            ));
        }
        let urls = relay_list("relays.urls", &urls, check)?;
        let publish_cap = match raw.publish_cap {
            None => DEFAULT_PUBLISH_CAP,
            Some(cap) => {
                check.int_in("relays.publish_cap", cap, 1, MAX_PUBLISH_CAP as i64)? as usize
            }
        };
        let allow = raw.allow_customer_relays.unwrap_or(true);
        let customer = match (allow, raw.customer_relay_allowlist) {
            (false, None) => CustomerRelays::Ignored,
            (true, None) => CustomerRelays::Any,
            (false, Some(_)) => {
                return Err(check.invalid(
                    "relays.customer_relay_allowlist",
                    "is set but allow_customer_relays = false; remove one of them",
                ))
            }
            (true, Some(list)) => {
                let field = "relays.customer_relay_allowlist";
                if list.is_empty() || list.len() > MAX_ALLOWLIST {
                    return Err(check.invalid(
                        field,
                        format!(
                            "must list 1 to {MAX_ALLOWLIST} relays, got {} \
                             (to use no customer relays, set allow_customer_relays = false)",
                            list.len()
                        ),
                    ));
                }
                CustomerRelays::Only(relay_list(field, &list, check)?)
            }
        };
        Ok(Relays {
            urls,
            publish_cap,
            customer,
            customer_loopback: raw.customer_relay_loopback.unwrap_or(false),
        })
    }

    /// Whether a relay named in a request's `relays` tag gets the results: the operator's
    /// policy allows it, and, unless the operator listed it, it is not on the node's own host
    /// or network ([`Relays::customer_host_allowed`]).
    pub fn customer_may_use(&self, relay: &RelayUrl) -> bool {
        let listed = matches!(self.customer, CustomerRelays::Only(_));
        self.customer.allows(relay) && (listed || self.customer_host_allowed(relay))
    }

    /// Whether the node may open a websocket to a relay a customer wrote (a request's `relays`
    /// tag, a kind 10019): the host passes the LNURL guard's host check
    /// (`paydvm_netguard::HostPolicy::check_host`: an address in a range the node never contacts
    /// on a customer's say-so, in any form the URL parser reads as an address, or a `localhost`
    /// name is refused; loopback only with `customer_relay_loopback`). A name is not resolved
    /// here: the node's transport resolves it when it connects and checks the answer
    /// (`node::relay_guard`).
    pub fn customer_host_allowed(&self, relay: &RelayUrl) -> bool {
        let Ok(url) = url::Url::parse(relay.as_str()) else {
            return false;
        };
        let policy = HostPolicy::new(self.customer_loopback, AllowList::default());
        url.host()
            .is_some_and(|host| policy.check_host(&host).is_ok())
    }
}

/// Parses `ws://` / `wss://` URLs, rejecting duplicates (compared after normalising).
fn relay_list(
    field: &str,
    urls: &[String],
    check: Check<'_>,
) -> Result<Vec<RelayUrl>, ConfigError> {
    let mut out: Vec<RelayUrl> = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let parsed = RelayUrl::parse(url).map_err(|e| {
            check.invalid(
                &field,
                format!("{url:?} is not a ws:// or wss:// relay URL: {e}"),
            )
        })?;
        if out.contains(&parsed) {
            return Err(check.invalid(&field, format!("{url:?} is listed twice")));
        }
        out.push(parsed);
    }
    Ok(out)
}
