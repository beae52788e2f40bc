//! The mints the operator trusts (from the policy file) and their keysets, fetched once and
//! cached. A mint that cannot be reached is reported in its [`MintStatus`] and skipped; it never
//! stops the node.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use cdk::mint_url::MintUrl;
use cdk::nuts::{CurrencyUnit, Id, KeySet, KeySetInfo, MintInfo};
use cdk::wallet::{HttpClient, MintConnector};
use tracing::{info, warn};

use crate::url::normalise_mint_url;

/// One trusted mint: normalised URL and the units we take from it (lowercase, e.g. "sat").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedMint {
    pub url: String,
    pub units: Vec<String>,
}

impl TrustedMint {
    pub fn new(url: &str, units: impl IntoIterator<Item = impl Into<String>>) -> Self {
        TrustedMint {
            url: normalise_mint_url(url),
            units: units.into_iter().map(Into::into).collect(),
        }
    }

    pub fn accepts_unit(&self, unit: &str) -> bool {
        self.units.iter().any(|u| u == unit)
    }
}

/// Whether the last keyset fetch from a mint worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintStatus {
    /// Never fetched yet.
    Unknown,
    /// Keysets fetched; `keysets` of them cached.
    Up { keysets: usize },
    /// The mint could not be reached or answered nonsense. `reason` never holds a secret.
    Down { reason: String },
}

/// Why a mint's keysets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("mint {url} is not trusted")]
    NotTrusted { url: String },
    #[error("mint {url}: bad URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("mint {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("mint {url}: keyset {id} does not match its keys (id check failed)")]
    KeysetIdMismatch { url: String, id: String },
}

#[derive(Debug, Default)]
struct MintEntry {
    keysets: HashMap<Id, KeySet>,
    status: Option<MintStatus>,
    /// NUT-11 and NUT-12 support as the mint's info says; `None` until fetched.
    supports_p2pk_and_dleq: Option<bool>,
}

/// Trusted mints and their cached keysets.
#[derive(Debug, Default)]
pub struct MintRegistry {
    trusted: Vec<TrustedMint>,
    entries: BTreeMap<String, MintEntry>,
}

impl MintRegistry {
    pub fn new(trusted: Vec<TrustedMint>) -> Self {
        let entries = trusted
            .iter()
            .map(|m| (m.url.clone(), MintEntry::default()))
            .collect();
        MintRegistry { trusted, entries }
    }

    pub fn trusted(&self) -> &[TrustedMint] {
        &self.trusted
    }

    /// The trusted mint at `url` (compared after normalisation).
    pub fn mint(&self, url: &str) -> Option<&TrustedMint> {
        let url = normalise_mint_url(url);
        self.trusted.iter().find(|m| m.url == url)
    }

    pub fn status(&self, url: &str) -> MintStatus {
        self.entries
            .get(&normalise_mint_url(url))
            .and_then(|e| e.status.clone())
            .unwrap_or(MintStatus::Unknown)
    }

    /// A cached keyset of a trusted mint.
    pub fn keyset(&self, url: &str, id: &Id) -> Option<&KeySet> {
        self.entries.get(&normalise_mint_url(url))?.keysets.get(id)
    }

    /// The cached keysets of a trusted mint as [`KeySetInfo`]s: what V4 tokens' short keyset
    /// ids are resolved against.
    pub fn keyset_infos(&self, url: &str) -> Vec<KeySetInfo> {
        self.entries
            .get(&normalise_mint_url(url))
            .map(|e| {
                e.keysets
                    .values()
                    .map(|k| KeySetInfo {
                        id: k.id,
                        unit: k.unit.clone(),
                        active: k.active.unwrap_or(false),
                        input_fee_ppk: k.input_fee_ppk,
                        final_expiry: k.final_expiry,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Caches `keyset` for the trusted mint at `url` after checking its id against its keys.
    pub fn insert_keyset(&mut self, url: &str, keyset: KeySet) -> Result<(), RegistryError> {
        let url = normalise_mint_url(url);
        let entry = self
            .entries
            .get_mut(&url)
            .ok_or_else(|| RegistryError::NotTrusted { url: url.clone() })?;
        if keyset.verify_id().is_err() {
            return Err(RegistryError::KeysetIdMismatch {
                url,
                id: keyset.id.to_string(),
            });
        }
        entry.keysets.insert(keyset.id, keyset);
        let keysets = entry.keysets.len();
        entry.status = Some(MintStatus::Up { keysets });
        Ok(())
    }

    /// Fetches every keyset (active or not) of every trusted mint in a unit we accept. A mint
    /// that fails is logged and marked down; the others are still loaded.
    pub async fn refresh_all(&mut self) {
        let urls: Vec<String> = self.trusted.iter().map(|m| m.url.clone()).collect();
        for url in urls {
            if let Err(e) = self.refresh(&url).await {
                warn!(mint = %url, "mint unavailable: {e}");
            }
        }
    }

    /// Fetches the keysets of one trusted mint (only those not cached yet).
    pub async fn refresh(&mut self, url: &str) -> Result<(), RegistryError> {
        let url = normalise_mint_url(url);
        let Some(mint) = self.mint(&url).cloned() else {
            return Err(RegistryError::NotTrusted { url });
        };
        let result = fetch(&mint, self.entries.get(&url)).await;
        let entry = self.entries.entry(url.clone()).or_default();
        match result {
            Ok((keysets, info)) => {
                for keyset in keysets {
                    if keyset.verify_id().is_err() {
                        let e = RegistryError::KeysetIdMismatch {
                            url: url.clone(),
                            id: keyset.id.to_string(),
                        };
                        entry.status = Some(MintStatus::Down {
                            reason: e.to_string(),
                        });
                        return Err(e);
                    }
                    entry.keysets.insert(keyset.id, keyset);
                }
                if let Some(info) = info {
                    entry.supports_p2pk_and_dleq =
                        Some(info.nuts.nut11.supported && info.nuts.nut12.supported);
                    if entry.supports_p2pk_and_dleq == Some(false) {
                        warn!(mint = %url, "mint does not announce NUT-11 and NUT-12 support");
                    }
                }
                let keysets = entry.keysets.len();
                info!(mint = %url, keysets, "mint keysets loaded");
                entry.status = Some(MintStatus::Up { keysets });
                Ok(())
            }
            Err(e) => {
                entry.status = Some(MintStatus::Down {
                    reason: e.to_string(),
                });
                Err(e)
            }
        }
    }

    /// Every trusted mint with its status, for operators.
    pub fn statuses(&self) -> Vec<(String, MintStatus)> {
        self.trusted
            .iter()
            .map(|m| (m.url.clone(), self.status(&m.url)))
            .collect()
    }

    /// Whether the mint's info says it supports NUT-11 and NUT-12 (`None`: not fetched).
    pub fn supports_p2pk_and_dleq(&self, url: &str) -> Option<bool> {
        self.entries
            .get(&normalise_mint_url(url))?
            .supports_p2pk_and_dleq
    }
}

async fn fetch(
    mint: &TrustedMint,
    cached: Option<&MintEntry>,
) -> Result<(Vec<KeySet>, Option<MintInfo>), RegistryError> {
    let fetch_err = |e: cdk::Error| RegistryError::Fetch {
        url: mint.url.clone(),
        reason: e.to_string(),
    };
    let mint_url = MintUrl::from_str(&mint.url).map_err(|e| RegistryError::BadUrl {
        url: mint.url.clone(),
        reason: e.to_string(),
    })?;
    let client = HttpClient::new(mint_url, None);
    let listed = client.get_mint_keysets().await.map_err(fetch_err)?;
    let mut out = Vec::new();
    for info in listed.keysets {
        if !mint.accepts_unit(&unit_name(&info.unit)) {
            continue;
        }
        if cached.is_some_and(|c| c.keysets.contains_key(&info.id)) {
            continue;
        }
        out.push(client.get_mint_keyset(info.id).await.map_err(fetch_err)?);
    }
    let info = client.get_mint_info().await.ok();
    Ok((out, info))
}

/// The lowercase NUT-01 name of a unit ("sat", "msat", "usd", …).
pub fn unit_name(unit: &CurrencyUnit) -> String {
    unit.to_string().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mint_that_is_down_is_reported_and_the_others_still_load() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = format!("http://127.0.0.1:{port}");
        let mut registry = MintRegistry::new(vec![TrustedMint::new(&down, ["sat"])]);
        assert_eq!(registry.status(&down), MintStatus::Unknown);
        registry.refresh_all().await;
        assert!(
            matches!(registry.status(&down), MintStatus::Down { .. }),
            "{:?}",
            registry.status(&down)
        );
        assert!(matches!(
            registry.refresh("https://not-trusted.example").await,
            Err(RegistryError::NotTrusted { .. })
        ));
    }
}
