//! LNURL-pay (LUD-06 / LUD-16) as far as zaps need it: the lightning address (`lud16`), its pay
//! endpoint's response with the NIP-57 fields, a cached fetch of our own endpoint's
//! `nostrPubkey`, and the callback that turns an amount (and a zap request) into an invoice.
//!
//! Every response is attacker-written: bodies are capped at [`MAX_RESPONSE_BYTES`], requests
//! time out, redirects are not followed, and fields are checked before use. Every URL (the pay
//! endpoint, the callback) goes through [`LnurlHttp`], which refuses hosts that are not public
//! (see `lnurl_http.rs`).

use std::fmt;
use std::time::{Duration, Instant};

use nostr_sdk::prelude::PublicKey;
use nostr_sdk::Url;
use paydvm_ledger::Msat;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::Mutex;

use super::lnurl_http::refusal_in;
pub use super::lnurl_http::LnurlHttp;
pub use paydvm_netguard::{Lud16, Refusal};

/// Largest LNURL response body read (LUD-06 responses are a few hundred bytes).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Whole-request timeout for one LNURL call.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fetched pay endpoint is trusted before it is fetched again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, Error)]
pub enum LnurlError {
    #[error("cannot build the LNURL HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The guard refused the URL before connecting (see `paydvm-netguard`).
    #[error("LNURL {role} refused: {source}")]
    Refused {
        role: Role,
        #[source]
        source: Refusal,
    },
    #[error("LNURL request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("LNURL server answered HTTP {status}")]
    Status { status: u16 },
    #[error("LNURL response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("LNURL server error: {0}")]
    Server(String),
    #[error("LNURL response invalid: {0}")]
    Invalid(String),
    #[error("the LNURL endpoint does not support zaps ({0})")]
    NoZaps(&'static str),
}

/// Which LNURL call a URL is for (in messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    PayEndpoint,
    Callback,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::PayEndpoint => "pay endpoint",
            Role::Callback => "callback",
        })
    }
}

/// A LUD-06 `payRequest` response with the NIP-57 fields, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayEndpoint {
    pub callback: Url,
    pub min_sendable: Msat,
    pub max_sendable: Msat,
    /// The metadata JSON string, as sent (a plain LNURL invoice hashes it).
    pub metadata: String,
    pub allows_nostr: bool,
    /// The key that signs zap receipts, when `allows_nostr`.
    pub nostr_pubkey: Option<PublicKey>,
}

impl PayEndpoint {
    /// The key receipts must be signed with; an error if the endpoint does not do zaps.
    pub fn zap_signer(&self) -> Result<PublicKey, LnurlError> {
        if !self.allows_nostr {
            return Err(LnurlError::NoZaps("allowsNostr is not true"));
        }
        self.nostr_pubkey
            .ok_or(LnurlError::NoZaps("no valid nostrPubkey"))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPayResponse {
    status: Option<String>,
    reason: Option<String>,
    tag: Option<String>,
    callback: Option<String>,
    min_sendable: Option<u64>,
    max_sendable: Option<u64>,
    metadata: Option<String>,
    allows_nostr: Option<bool>,
    nostr_pubkey: Option<String>,
}

/// Parses a pay endpoint's JSON body.
pub fn parse_pay_response(body: &[u8]) -> Result<PayEndpoint, LnurlError> {
    let raw: RawPayResponse =
        serde_json::from_slice(body).map_err(|e| LnurlError::Invalid(e.to_string()))?;
    if raw
        .status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("ERROR"))
    {
        return Err(LnurlError::Server(
            raw.reason.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    let invalid = |why: &str| LnurlError::Invalid(why.to_owned());
    if raw.tag.as_deref() != Some("payRequest") {
        return Err(invalid("tag is not payRequest"));
    }
    let callback = raw.callback.ok_or_else(|| invalid("no callback"))?;
    let callback = Url::parse(&callback).map_err(|_| invalid("callback is not a URL"))?;
    if !matches!(callback.scheme(), "http" | "https") {
        return Err(invalid("callback is not http(s)"));
    }
    let min = raw.min_sendable.ok_or_else(|| invalid("no minSendable"))?;
    let max = raw.max_sendable.ok_or_else(|| invalid("no maxSendable"))?;
    if min == 0 || min > max || Msat::from_msat(max) > Msat::MAX_SUPPLY {
        return Err(invalid("minSendable/maxSendable out of range"));
    }
    let metadata = raw.metadata.ok_or_else(|| invalid("no metadata"))?;
    if !serde_json::from_str::<serde_json::Value>(&metadata).is_ok_and(|m| m.is_array()) {
        return Err(invalid("metadata is not a JSON array string"));
    }
    Ok(PayEndpoint {
        callback,
        min_sendable: Msat::from_msat(min),
        max_sendable: Msat::from_msat(max),
        metadata,
        allows_nostr: raw.allows_nostr == Some(true),
        // A malformed key is as good as none: the endpoint then does not do zaps.
        nostr_pubkey: raw.nostr_pubkey.and_then(|k| PublicKey::from_hex(&k).ok()),
    })
}

/// GETs `url` and returns its body, at most [`MAX_RESPONSE_BYTES`]; nothing is sent if the
/// guard refuses `url` or the addresses its host resolves to.
async fn get_capped(http: &LnurlHttp, role: Role, url: Url) -> Result<Vec<u8>, LnurlError> {
    let refused = |source| LnurlError::Refused { role, source };
    let client = http.client_for(&url).map_err(refused)?;
    let shown = redacted(&url);
    let http_error = |source: reqwest::Error| match refusal_in(&source) {
        Some(refusal) => refused(refusal),
        None => LnurlError::Http {
            url: shown.clone(),
            source,
        },
    };
    let mut response = client.get(url).send().await.map_err(http_error)?;
    let status = response.status();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(LnurlError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(http_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(LnurlError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    // LUD-06 errors may come with a non-2xx status and a JSON reason; prefer the reason.
    if !status.is_success() {
        if let Ok(RawError {
            status: Some(s),
            reason,
        }) = serde_json::from_slice::<RawError>(&body)
        {
            if s.eq_ignore_ascii_case("ERROR") {
                return Err(LnurlError::Server(reason.unwrap_or_default()));
            }
        }
        return Err(LnurlError::Status {
            status: status.as_u16(),
        });
    }
    Ok(body)
}

#[derive(Deserialize)]
struct RawError {
    status: Option<String>,
    reason: Option<String>,
}

/// The URL without its query (a callback query may carry a whole zap request).
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

/// Fetches and parses the pay endpoint at `url`.
pub async fn fetch_pay_endpoint(http: &LnurlHttp, url: Url) -> Result<PayEndpoint, LnurlError> {
    parse_pay_response(&get_capped(http, Role::PayEndpoint, url).await?)
}

/// Asks `endpoint`'s callback for an invoice of `amount`; `zap_request` is the signed 9734 JSON
/// for a zap. The callback's host gets the same checks as the pay endpoint's (https unless
/// allowed). The returned bolt11 is not checked here: the payer checks it before paying.
pub async fn request_invoice(
    http: &LnurlHttp,
    endpoint: &PayEndpoint,
    amount: Msat,
    zap_request: Option<&str>,
) -> Result<String, LnurlError> {
    if amount < endpoint.min_sendable || amount > endpoint.max_sendable {
        return Err(LnurlError::Invalid(format!(
            "{} msat is outside {}..={} msat",
            amount.as_msat(),
            endpoint.min_sendable.as_msat(),
            endpoint.max_sendable.as_msat()
        )));
    }
    let mut url = endpoint.callback.clone();
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("amount", &amount.as_msat().to_string());
        if let Some(request) = zap_request {
            query.append_pair("nostr", request);
        }
    }
    parse_invoice_answer(&get_capped(http, Role::Callback, url).await?)
}

/// Parses a callback's JSON body: the `pr` (not checked here), or the server's error.
pub fn parse_invoice_answer(body: &[u8]) -> Result<String, LnurlError> {
    #[derive(Deserialize)]
    struct RawInvoice {
        pr: Option<String>,
        status: Option<String>,
        reason: Option<String>,
    }
    let raw: RawInvoice =
        serde_json::from_slice(body).map_err(|e| LnurlError::Invalid(e.to_string()))?;
    if raw
        .status
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("ERROR"))
    {
        return Err(LnurlError::Server(raw.reason.unwrap_or_default()));
    }
    raw.pr
        .filter(|pr| !pr.is_empty())
        .ok_or_else(|| LnurlError::Invalid("no pr in the callback answer".into()))
}

/// Our own pay endpoint, fetched when first needed and again once `ttl` has passed.
///
/// If a refresh fails, the last good endpoint is kept and the next attempt waits
/// [`RETRY_AFTER`]: an LNURL server briefly down must neither stop zap intake nor make every
/// receipt wait for a timeout.
pub struct PayEndpointCache {
    http: LnurlHttp,
    url: Url,
    ttl: Duration,
    cached: Mutex<Option<Cached>>,
}

/// How long a failed refresh keeps the last good endpoint before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

struct Cached {
    endpoint: PayEndpoint,
    refresh_at: Instant,
}

impl PayEndpointCache {
    /// Our own address goes through the same guard as customers' (`http`'s policy).
    pub fn new(lud16: &Lud16, http: LnurlHttp, ttl: Duration) -> Result<Self, LnurlError> {
        Ok(PayEndpointCache {
            url: http.pay_url(lud16)?,
            http,
            ttl,
            cached: Mutex::new(None),
        })
    }

    /// The endpoint, from the cache while it is fresh.
    pub async fn endpoint(&self) -> Result<PayEndpoint, LnurlError> {
        // Held across the fetch: concurrent callers wait for one fetch instead of each making one.
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.endpoint.clone());
            }
        }
        match fetch_pay_endpoint(&self.http, self.url.clone()).await {
            Ok(endpoint) => {
                *cached = Some(Cached {
                    endpoint: endpoint.clone(),
                    refresh_at: Instant::now() + self.ttl,
                });
                Ok(endpoint)
            }
            Err(e) => match cached.as_mut() {
                Some(stale) => {
                    tracing::warn!(
                        "refreshing our LNURL pay endpoint failed, keeping the last one: {e}"
                    );
                    stale.refresh_at = Instant::now() + RETRY_AFTER;
                    Ok(stale.endpoint.clone())
                }
                None => Err(e),
            },
        }
    }

    /// The key our zap receipts must be signed with.
    pub async fn zap_signer(&self) -> Result<PublicKey, LnurlError> {
        self.endpoint().await?.zap_signer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pay_urls_use_plain_http_only_for_loopback_in_test_mode() {
        let a: Lud16 = "dvm@example.com".parse().unwrap();
        let local: Lud16 = "zap.me@127.0.0.1:9000".parse().unwrap();
        let test_mode = LnurlHttp::loopback(true).unwrap();
        assert_eq!(
            test_mode.pay_url(&a).unwrap().as_str(),
            "https://example.com/.well-known/lnurlp/dvm"
        );
        assert_eq!(
            test_mode.pay_url(&local).unwrap().as_str(),
            "http://127.0.0.1:9000/.well-known/lnurlp/zap.me"
        );
        let refused = LnurlHttp::loopback(false)
            .unwrap()
            .pay_url(&local)
            .unwrap_err();
        assert!(matches!(
            refused,
            LnurlError::Refused {
                role: Role::PayEndpoint,
                source: Refusal::Address { .. }
            }
        ));
        assert_eq!(
            refused.to_string(),
            "LNURL pay endpoint refused: 127.0.0.1 is a loopback address (127.0.0.0/8)"
        );
    }

    const VECTOR: &str = r#"{
        "callback": "https://dvm.example/lnurlp/dvm/callback",
        "minSendable": 1000, "maxSendable": 100000000000,
        "metadata": "[[\"text/plain\",\"Pay the DVM\"]]",
        "tag": "payRequest", "allowsNostr": true,
        "nostrPubkey": "4a358ec7dd3203ad442d401dd7633392cf47fa5f91d97323691314b5a42fed8a"
    }"#;

    #[test]
    fn a_zap_capable_pay_response_parses() {
        let e = parse_pay_response(VECTOR.as_bytes()).unwrap();
        assert_eq!(e.min_sendable.as_msat(), 1000);
        assert_eq!(
            e.zap_signer().unwrap().to_hex(),
            "4a358ec7dd3203ad442d401dd7633392cf47fa5f91d97323691314b5a42fed8a"
        );
    }

    #[test]
    fn bad_pay_responses_are_refused() {
        let edit = |from: &str, to: &str| VECTOR.replace(from, to);
        for body in [
            edit("payRequest", "withdrawRequest"),
            edit("\"minSendable\": 1000", "\"minSendable\": 0"),
            edit("\"maxSendable\": 100000000000", "\"maxSendable\": 10"),
            edit("[[\\\"text/plain\\\",\\\"Pay the DVM\\\"]]", "oops"),
            edit("https://dvm.example/lnurlp/dvm/callback", "ftp://x/y"),
            r#"{"status":"ERROR","reason":"no such user"}"#.to_owned(),
            "[]".to_owned(),
        ] {
            assert!(parse_pay_response(body.as_bytes()).is_err(), "{body}");
        }
        let no_zaps = parse_pay_response(edit("true", "false").as_bytes()).unwrap();
        assert!(matches!(no_zaps.zap_signer(), Err(LnurlError::NoZaps(_))));
        let bad_key = parse_pay_response(edit("4a358ec7", "zz").as_bytes()).unwrap();
        assert!(matches!(bad_key.zap_signer(), Err(LnurlError::NoZaps(_))));
    }
}

#[cfg(test)]
mod fetch_tests {
    use std::net::Ipv4Addr;

    use axum::routing::get;
    use axum::Router;
    use nostr_sdk::prelude::Keys;

    use super::*;
    use paydvm_testkit::zapper::{Zapper, ZapperOptions};

    #[tokio::test]
    async fn our_endpoint_is_cached_and_kept_while_the_server_is_down() {
        let zapper = Zapper::start(ZapperOptions::new("dvm", Keys::generate().public_key()))
            .await
            .unwrap();
        let signer = zapper.nostr_pubkey();
        // The zapper's `Lud16` is the testkit build's type: carry it over as text.
        let address: Lud16 = zapper.lud16().to_string().parse().unwrap();
        let cache = |ttl| PayEndpointCache::new(&address, LnurlHttp::loopback(true).unwrap(), ttl);
        let fresh = cache(Duration::from_secs(600)).unwrap();
        let stale = cache(Duration::ZERO).unwrap();
        assert_eq!(fresh.zap_signer().await.unwrap(), signer);
        assert_eq!(stale.zap_signer().await.unwrap(), signer);
        let never = cache(Duration::ZERO).unwrap();
        zapper.shutdown().await;
        assert_eq!(
            fresh.zap_signer().await.unwrap(),
            signer,
            "served from the cache"
        );
        assert_eq!(stale.zap_signer().await.unwrap(), signer, "last good kept");
        assert!(matches!(
            never.zap_signer().await,
            Err(LnurlError::Http { .. })
        ));
    }

    #[tokio::test]
    async fn oversized_redirecting_and_unknown_answers_are_refused() {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/.well-known/lnurlp/huge",
                get(|| async { "x".repeat(MAX_RESPONSE_BYTES + 1) }),
            )
            .route(
                "/.well-known/lnurlp/moved",
                get(|| async { axum::response::Redirect::temporary("/.well-known/lnurlp/huge") }),
            );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let fetch = |name: &str| {
            let lud16: Lud16 = format!("{name}@{addr}").parse().unwrap();
            async move {
                let http = LnurlHttp::loopback(true).unwrap();
                fetch_pay_endpoint(&http, http.pay_url(&lud16).unwrap()).await
            }
        };
        assert!(matches!(fetch("huge").await, Err(LnurlError::TooLarge)));
        assert!(matches!(
            fetch("moved").await,
            Err(LnurlError::Status { status: 307 })
        ));
        assert!(matches!(
            fetch("nobody").await,
            Err(LnurlError::Status { status: 404 })
        ));
        server.abort();
    }
}
