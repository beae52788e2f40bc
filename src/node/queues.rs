//! Every queue between the node's tasks is bounded; what happens when one is full is decided
//! here, per queue, never a silent drop:
//!
//! | queue | from → to | when full |
//! |---|---|---|
//! | [`COMMANDS`] | intake, rails, desks, executors, outbox, ticker, control socket → core | the sender waits (back-pressure); intake stops reading its relay notifications meanwhile |
//! | [`OUTBOX`] | core → outbox | the core does not wait: the effect stays pending in the ledger and is handed over again after `resend_after`, as if the outbox had given up on it |
//! | [`OUTBOX_LANE`] | outbox → one publishing lane | the outbox waits |
//! | [`ZAP_RECEIPTS`], [`NUTZAPS`] | intake → zap / NutZap rail | intake waits |
//! | [`SETTLEMENTS`] | invoice watcher → invoice desk | the watcher waits |
//! | [`QUOTED`] | core → Cashu rail: jobs quoted whose swapped tokens the rail holds | the core does not wait: the tell is dropped and the rail's retry timer attempts the held row again after 5 s (the same when the rail's `WhenQuoted` finds the core's queue full) |
//!
//! The invoice watch list (core → watcher) is not a queue of work but the set of open quotes'
//! invoices: it holds one entry per open quote and empties as they settle or expire.

use tokio::sync::mpsc;

use super::core::Command;

/// Commands waiting for the core. A batch of up to `MAX_BATCH` is taken at once; this is many
/// batches, so senders wait only when the core is truly behind (a slow disk).
pub const COMMANDS: usize = 4096;
/// Publications waiting for the outbox.
pub const OUTBOX: usize = 4096;
/// Publications waiting in one lane of the outbox.
pub const OUTBOX_LANE: usize = 256;
/// Zap receipts waiting for the zap rail.
pub const ZAP_RECEIPTS: usize = 1024;
/// NutZap events waiting for the NutZap rail (each may take a mint round trip).
pub const NUTZAPS: usize = 1024;
/// Invoice settlements waiting for the invoice desk.
pub const SETTLEMENTS: usize = 1024;
/// Jobs just quoted whose request tokens wait on the Cashu rail.
pub const QUOTED: usize = 256;

/// Where commands for the core are sent.
pub type CommandSender = mpsc::Sender<Command>;

/// The core's queue.
pub fn commands() -> (CommandSender, mpsc::Receiver<Command>) {
    mpsc::channel(COMMANDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full core queue makes its sender wait; what it sends arrives, in order, once the core
    /// has taken something: back-pressure, not loss.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_command_queue_makes_senders_wait_and_loses_nothing() {
        let (tx, mut rx) = commands();
        for _ in 0..COMMANDS {
            tx.try_send(Command::Tick).expect("room");
        }
        assert!(matches!(
            tx.try_send(Command::Tick),
            Err(mpsc::error::TrySendError::Full(_))
        ));
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(Command::OutboxDrained).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the sender waits while the queue is full"
        );
        assert!(matches!(rx.recv().await, Some(Command::Tick)));
        assert!(waiting.await.unwrap(), "sent once there was room");
        let mut rest = Vec::new();
        while let Ok(command) = rx.try_recv() {
            rest.push(command);
        }
        assert_eq!(rest.len(), COMMANDS);
        assert!(matches!(rest.last(), Some(Command::OutboxDrained)));
    }
}
