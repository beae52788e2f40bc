//! `GET /api/v1/payments`: every row of the wallet that LNbits counts in its balance (settled and
//! pending; failed and expired ones are left out), read page by page, oldest first, for
//! `paydvm reconcile`. Read with the invoice key; nothing is changed.
//!
//! Paging is by offset over rows sorted by creation time, so a row created while we read lands on
//! a later page rather than shifting earlier ones; a row seen twice (rows created in the same
//! instant may come back in another order) is kept once, by LNbits' `checking_id`. A row missed
//! that way shows as a list that does not add up to the balance, which the caller reports.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};

use super::answers::PaymentRow;
use super::{Key, LnbitsLightning};
use crate::lightning::LightningError;

/// Rows asked for per page (LNbits serves at most 1000; 100 rows stay well under the body cap).
const PAGE: usize = 100;
/// Most rows read: a bound against a server that never stops answering full pages.
pub const MAX_ROWS: usize = 1_000_000;

impl LnbitsLightning {
    /// The wallet's payments (see the module docs), oldest first.
    pub async fn payments(&self) -> Result<Vec<PaymentRow>, LightningError> {
        let mut rows = Vec::new();
        let mut seen = HashSet::new();
        let mut offset = 0usize;
        loop {
            let page = self.payments_page(offset).await?;
            let full = page.len() == PAGE;
            offset += page.len();
            for row in page {
                // Rows without an id cannot be told apart: each is kept.
                if row
                    .checking_id
                    .as_ref()
                    .is_none_or(|id| seen.insert(id.clone()))
                {
                    rows.push(row);
                }
            }
            if !full {
                return Ok(rows);
            }
            if offset >= MAX_ROWS {
                return Err(LightningError::BadAnswer(format!(
                    "LNbits lists more than {MAX_ROWS} payments; not read further"
                )));
            }
        }
    }

    async fn payments_page(&self, offset: usize) -> Result<Vec<PaymentRow>, LightningError> {
        let path =
            format!("api/v1/payments?limit={PAGE}&offset={offset}&sortby=created_at&direction=asc");
        let answer = self
            .call(Method::GET, &path, Key::Invoice, None)
            .await
            .map_err(LightningError::Unreachable)?;
        if answer.status != StatusCode::OK {
            return Err(if answer.status.is_client_error() {
                LightningError::Refused(answer.describe())
            } else {
                LightningError::Unreachable(answer.describe())
            });
        }
        let page: Vec<PaymentRow> = answer.json().map_err(LightningError::BadAnswer)?;
        if page.len() > PAGE {
            return Err(LightningError::BadAnswer(format!(
                "LNbits answered {} rows for a page of {PAGE}",
                page.len()
            )));
        }
        Ok(page)
    }
}
