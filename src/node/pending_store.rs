//! The pending-swap store (`paydvm_mints::PendingRows`: an SQLite file with one fsync per write,
//! or the ledger's PostgreSQL database, see [`super::ecash_store`]) as the NutZap rail's task
//! uses it: every call runs on tokio's blocking pool, so a write never holds
//! up the async runtime (intake, outbox and the other rails share it). The rail awaits each
//! call, so the order of its writes is unchanged.

use std::sync::Arc;

use paydvm_mints::pending::PendingError;
use paydvm_mints::{DeferredRow, PendingRows, PendingSwap, VerifiedNutZap};

#[derive(Clone)]
pub struct PendingStore(Arc<dyn PendingRows>);

impl PendingStore {
    pub fn new(rows: Arc<dyn PendingRows>) -> Self {
        PendingStore(rows)
    }

    async fn run<T, F>(&self, f: F) -> Result<T, PendingError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn PendingRows) -> Result<T, PendingError> + Send + 'static,
    {
        let swaps = Arc::clone(&self.0);
        match tokio::task::spawn_blocking(move || f(swaps.as_ref())).await {
            Ok(result) => result,
            // Only a panic inside the store gets here (the runtime shutting down cancels the
            // rail first); the store rolled the statement back.
            Err(e) => Err(PendingError::Row {
                event: String::new(),
                reason: format!("the store call did not finish: {e}"),
            }),
        }
    }

    /// See [`PendingRows::insert`].
    pub async fn insert(&self, nutzap: &VerifiedNutZap, now_ms: u64) -> Result<bool, PendingError> {
        let nutzap = nutzap.clone();
        self.run(move |s| s.insert(&nutzap, now_ms)).await
    }

    pub async fn mark_swapped(
        &self,
        event_id: &str,
        received: u64,
        fee: u64,
    ) -> Result<(), PendingError> {
        let id = event_id.to_owned();
        self.run(move |s| s.mark_swapped(&id, received, fee)).await
    }

    pub async fn back_off(&self, event_id: &str, now_ms: u64) -> Result<u64, PendingError> {
        let id = event_id.to_owned();
        self.run(move |s| s.back_off(&id, now_ms)).await
    }

    pub async fn remove(&self, event_id: &str) -> Result<(), PendingError> {
        let id = event_id.to_owned();
        self.run(move |s| s.remove(&id)).await
    }

    pub async fn due(&self, now_ms: u64) -> Result<Vec<PendingSwap>, PendingError> {
        self.run(move |s| s.due(now_ms)).await
    }

    /// See [`PendingRows::keep_deferred`].
    pub async fn keep_deferred(&self, row: DeferredRow) -> Result<(), PendingError> {
        self.run(move |s| s.keep_deferred(&row)).await
    }

    pub async fn forget_deferred(&self, event_id: &str) -> Result<(), PendingError> {
        let id = event_id.to_owned();
        self.run(move |s| s.forget_deferred(&id)).await
    }

    /// See [`PendingRows::give_up_deferred`].
    pub async fn give_up_deferred(&self, event_id: &str, now_ms: u64) -> Result<(), PendingError> {
        let id = event_id.to_owned();
        self.run(move |s| s.give_up_deferred(&id, now_ms)).await
    }

    pub async fn given_up(&self, event_id: &str) -> Result<bool, PendingError> {
        let id = event_id.to_owned();
        self.run(move |s| s.given_up(&id)).await
    }

    pub async fn deferred(&self) -> Result<Vec<DeferredRow>, PendingError> {
        self.run(|s| s.deferred()).await
    }
}
