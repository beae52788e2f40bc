//! The zapper's two HTTP routes: the LUD-06 pay endpoint and its callback (NIP-57 Appendix D
//! checks on the `nostr` parameter).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bitcoin::hashes::{sha256, Hash};
use nostr_sdk::prelude::{Event, JsonUtil, Keys, Kind, Tag};
use paydvm_ledger::Msat;
use serde::Deserialize;
use serde_json::json;

use super::{Issued, State, ZapperOptions};
use paydvm::lightning::regtest_invoice::{regtest_invoice, InvoiceSpec};
use paydvm::lightning::{InvoiceDescription, LightningBackend};
use paydvm::payments::zap::ZAP_REQUEST_KIND;

pub(super) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/.well-known/lnurlp/{name}", get(pay_endpoint))
        .route("/lnurlp/{name}/callback", get(callback))
        .with_state(state)
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "status": "ERROR", "reason": reason.into() })),
    )
        .into_response()
}

async fn pay_endpoint(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
) -> Response {
    if name != state.options.name {
        return error(StatusCode::NOT_FOUND, "unknown user");
    }
    Json(json!({
        "callback": state.callback,
        "minSendable": state.options.min_sendable.as_msat(),
        "maxSendable": state.options.max_sendable.as_msat(),
        "metadata": state.metadata,
        "tag": "payRequest",
        "allowsNostr": state.options.allows_nostr,
        "nostrPubkey": state.options.signer.public_key().to_hex(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    amount: Option<u64>,
    nostr: Option<String>,
}

async fn callback(
    AxumState(state): AxumState<Arc<State>>,
    Path(name): Path<String>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    if name != state.options.name {
        return error(StatusCode::NOT_FOUND, "unknown user");
    }
    let Some(amount) = query.amount else {
        return error(StatusCode::BAD_REQUEST, "amount is required");
    };
    let options = &state.options;
    if amount < options.min_sendable.as_msat() || amount > options.max_sendable.as_msat() {
        return error(StatusCode::BAD_REQUEST, "amount out of range");
    }
    let nostr = query.nostr.as_ref().filter(|_| state.options.allows_nostr);
    let description = match nostr {
        Some(request) => match check_zap_request(request, amount, &state) {
            Ok(()) => request.as_str(),
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        },
        None => state.metadata.as_str(),
    };
    // A dishonest wallet (tests of the refund checks) asks for more than it was told.
    let amount = amount.saturating_add(options.overcharge.as_msat());
    let made = match make_invoice(options, amount, description).await {
        Ok(made) => made,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let invoice = made.bolt11.clone();
    state.lock_issued().insert(
        invoice.clone(),
        Issued {
            bolt11: made.bolt11,
            payment_hash: made.payment_hash,
            amount: Msat::from_msat(amount),
            preimage: made.preimage,
            zap_request: nostr.cloned(),
            settled: false,
        },
    );
    if let Some(gate) = &state.options.answer_gate {
        if let Ok(permit) = gate.acquire().await {
            permit.forget();
        }
    }
    Json(json!({ "pr": invoice, "routes": [] })).into_response()
}

/// One invoice made for the callback.
struct Made {
    bolt11: String,
    payment_hash: String,
    preimage: [u8; 32],
}

/// An invoice for `amount_msat` committing to `description` (its SHA-256 is the `h` field):
/// made in the wallet behind the address if there is one, otherwise signed here.
async fn make_invoice(
    options: &ZapperOptions,
    amount_msat: u64,
    description: &str,
) -> Result<Made, String> {
    let description_hash = sha256::Hash::hash(description.as_bytes());
    let expiry = options.invoice_expiry;
    if let Some(wallet) = &options.wallet {
        let issued = wallet
            .create_invoice(
                Msat::from_msat(amount_msat),
                InvoiceDescription::Hash(description_hash.to_byte_array()),
                expiry.as_secs(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let preimage = wallet
            .preimage(&issued.payment_hash)
            .ok_or("the wallet lost the invoice it just made")?;
        return Ok(Made {
            bolt11: issued.bolt11,
            payment_hash: issued.payment_hash,
            preimage,
        });
    }
    let preimage = Keys::generate().secret_key().secret_bytes();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let invoice = regtest_invoice(
        &options.node_key,
        &InvoiceSpec {
            amount_msat,
            description_hash,
            preimage,
            created: Duration::from_secs(created.as_secs()),
            expiry,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(Made {
        bolt11: invoice.to_string(),
        payment_hash: invoice.payment_hash().to_string(),
        preimage,
    })
}

/// NIP-57 Appendix D: what a zapper checks before issuing a zap invoice.
fn check_zap_request(json: &str, amount: u64, state: &State) -> Result<(), &'static str> {
    let request = Event::from_json(json).map_err(|_| "nostr is not an event")?;
    if request.kind != Kind::from(ZAP_REQUEST_KIND) {
        return Err("nostr is not a kind 9734 zap request");
    }
    request
        .verify()
        .map_err(|_| "zap request signature invalid")?;
    let values = |name: &str| -> Vec<&[String]> {
        request
            .tags
            .iter()
            .map(Tag::as_slice)
            .filter(|t| t.first().is_some_and(|n| n == name))
            .collect()
    };
    let p = values("p");
    if p.len() != 1 {
        return Err("zap request must have exactly one p tag");
    }
    if p[0].get(1) != Some(&state.options.recipient.to_hex()) {
        return Err("zap request is not for this address's owner");
    }
    if values("e").len() > 1 {
        return Err("zap request has more than one e tag");
    }
    if values("relays").is_empty() {
        return Err("zap request has no relays tag");
    }
    if let Some(tag) = values("amount").first() {
        if tag.get(1).and_then(|a| a.parse::<u64>().ok()) != Some(amount) {
            return Err("zap request amount differs from the amount parameter");
        }
    }
    Ok(())
}
