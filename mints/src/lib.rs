//! paydvm's Cashu rail: trusted mints and their keysets ([`registry`]), NIP-61 NutZap parsing
//! ([`nutzap`]) and offline verification ([`verify`]: mint, unit, P2PK lock to our dedicated
//! key, NUT-12 DLEQ) and of Cashu tokens offered in job requests ([`token`]), then redemption at the mint ([`redeem`]) with a durable record of swaps
//! not finished yet ([`pending`]), and the NIP-60/61 events we publish ([`events`]).
//!
//! No Nostr types here: the node hands events in as plain tags and builds the events it signs
//! from the tags returned.

pub mod events;
pub mod holdings;
pub mod intake;
#[cfg(test)]
mod intake_tests;
pub mod nutzap;
pub mod pending;
pub mod private_file;
mod recovery;
pub mod redeem;
pub mod refund;
pub mod registry;
pub mod token;
pub mod url;
pub mod verify;
pub mod wallet_copy;
#[cfg(test)]
mod wallet_copy_tests;

pub use holdings::{store_holdings, wallet_holdings, Holding};
pub use nutzap::{NutZapEvent, NUTZAP_INFO_KIND, NUTZAP_KIND};
pub use pending::{DeferredRow, PendingRows, PendingState, PendingSwap, PendingSwaps};
pub use redeem::{FloatError, MintPacing, ReceiveKey, Redeemer, SwapOutcome, WalletStore};
pub use refund::{FeePayer, Plan, PrepareError, RefundRequest, RefundRun, RefundToken};
pub use registry::{MintRegistry, MintStatus, TrustedMint};
pub use token::{token_id, verify_token, RequestToken};
pub use url::normalise_mint_url;
pub use verify::{verify_nutzap, Origin, Recipient, Reject, VerifiedNutZap};

/// A normalised URL as cdk's [`MintUrl`](cdk::mint_url::MintUrl).
pub fn mint_url_of(url: &str) -> Result<cdk::mint_url::MintUrl, cdk::Error> {
    use std::str::FromStr;
    cdk::mint_url::MintUrl::from_str(url).map_err(Into::into)
}

#[cfg(test)]
mod vector_tests;
