//! The HTTP client for LNURL calls. Lightning addresses and LNURL callbacks are written by
//! customers and their servers, so every request goes through [`HostPolicy`]
//! (`paydvm-netguard`):
//!
//! - before the request, [`HostPolicy::check_url`] (scheme, plain http, IP literals — the HTTP
//!   client never resolves those — and the operator's allow-list), so a refused URL costs no
//!   I/O at all;
//! - at connect time, the guarded client's DNS resolver keeps only the addresses
//!   [`HostPolicy::filter_resolved`] allows and fails when none is left. The addresses checked
//!   are the ones connected to, on every connection (idle connections are not kept), so a name
//!   that resolves, or re-resolves, to a private address (DNS rebinding) is never reached.
//!
//! Redirects are not followed (each hop would need the same checks; LNURL needs none), and
//! proxy settings from the environment are ignored (a proxy would resolve names itself).

use std::collections::{HashMap, VecDeque};
use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nostr_sdk::Url;
use paydvm_netguard::{HostPolicy, Lud16, Refusal, Route};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::lnurl::{LnurlError, Role, CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// Clients for LNURL calls under one [`HostPolicy`]; cheap to clone.
#[derive(Clone)]
pub struct LnurlHttp {
    policy: Arc<HostPolicy>,
    /// For [`Route::Guarded`] requests: resolves through [`GuardedResolver`].
    guarded: reqwest::Client,
    /// For hosts on the operator's allow-list: resolves without the filter.
    allow_listed: reqwest::Client,
}

impl std::fmt::Debug for LnurlHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LnurlHttp")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl LnurlHttp {
    /// Resolves names with the system resolver.
    pub fn new(policy: HostPolicy) -> Result<LnurlHttp, LnurlError> {
        LnurlHttp::with_resolver(policy, Arc::new(SystemResolver))
    }

    /// Resolves names with `dns` (tests: a name that resolves to a private address).
    pub fn with_resolver(
        policy: HostPolicy,
        dns: Arc<dyn Resolve>,
    ) -> Result<LnurlHttp, LnurlError> {
        let policy = Arc::new(policy);
        let guarded = GuardedResolver {
            dns: Arc::clone(&dns),
            policy: Arc::clone(&policy),
        };
        Ok(LnurlHttp {
            guarded: client(Arc::new(guarded))?,
            allow_listed: client(Arc::new(Unfiltered(dns)))?,
            policy,
        })
    }

    /// Loopback over plain http allowed or not, nothing allow-listed.
    pub fn loopback(allowed: bool) -> Result<LnurlHttp, LnurlError> {
        LnurlHttp::new(HostPolicy::new(allowed, Default::default()))
    }

    pub fn policy(&self) -> &HostPolicy {
        &self.policy
    }

    /// The LNURL-pay URL of `address`, checked (plain http only where the policy allows it).
    pub fn pay_url(&self, address: &Lud16) -> Result<Url, LnurlError> {
        self.policy
            .pay_url(address)
            .map_err(|source| LnurlError::Refused {
                role: Role::PayEndpoint,
                source,
            })
    }

    /// The client to fetch `url` with, or why `url` may not be fetched at all.
    pub(super) fn client_for(&self, url: &Url) -> Result<&reqwest::Client, Refusal> {
        Ok(match self.policy.check_url(url)? {
            Route::Guarded => &self.guarded,
            Route::AllowListed => &self.allow_listed,
        })
    }
}

/// A client that resolves only through `dns`. Failing to build one is an error, never a
/// fallback to a default client (which would resolve without the guard and follow redirects).
fn client(dns: Arc<impl Resolve + 'static>) -> Result<reqwest::Client, LnurlError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // Every request resolves and is checked afresh.
        .pool_max_idle_per_host(0)
        .dns_resolver(dns)
        .build()
        .map_err(LnurlError::Client)
}

/// The guard's refusal inside a failed request's error chain (the resolver refused the name).
pub(super) fn refusal_in(error: &reqwest::Error) -> Option<Refusal> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        cause = e.source();
    }
    None
}

/// Resolves with `dns`, then keeps only the addresses the policy allows.
struct GuardedResolver {
    dns: Arc<dyn Resolve>,
    policy: Arc<HostPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let dns = Arc::clone(&self.dns);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let answer = dns.resolve(name).await?;
            let kept = policy.filter_resolved(&host, answer)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// `dns` as it is, for allow-listed hosts.
struct Unfiltered(Arc<dyn Resolve>);

impl Resolve for Unfiltered {
    fn resolve(&self, name: Name) -> Resolving {
        self.0.resolve(name)
    }
}

/// The system's resolver (`getaddrinfo`, on tokio's blocking pool).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A resolver answering from a script, for tests: each name has a list of answers, given one
/// per lookup, the last repeated (so a name can "rebind" between two lookups). Unknown names
/// fail. Counts lookups.
#[derive(Default)]
pub struct ScriptedDns {
    answers: Mutex<HashMap<String, VecDeque<Vec<IpAddr>>>>,
    lookups: AtomicUsize,
}

impl ScriptedDns {
    pub fn new() -> ScriptedDns {
        ScriptedDns::default()
    }

    /// `name`'s next answer (after the ones already scripted).
    pub fn answer(self, name: &str, addrs: &[IpAddr]) -> ScriptedDns {
        self.lock()
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push_back(addrs.to_vec());
        self
    }

    /// Lookups made so far.
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Vec<IpAddr>>>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let mut all = self.lock();
        let queue = all.get_mut(name)?;
        if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        }
    }
}

impl Resolve for ScriptedDns {
    fn resolve(&self, name: Name) -> Resolving {
        let answer = self.next(name.as_str());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = answer.ok_or_else(|| format!("{host}: no such name (scripted)"))?;
            let addrs: Vec<SocketAddr> = addrs.into_iter().map(|ip| (ip, 0).into()).collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
#[path = "lnurl_http_tests.rs"]
mod tests;
