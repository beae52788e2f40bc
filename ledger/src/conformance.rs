//! The contract tests every [`LedgerStore`] must pass, whatever keeps its data.
//!
//! A store crate invokes [`ledger_store_conformance!`](crate::ledger_store_conformance) with an
//! expression that builds a fresh [`Harness`] (a new, empty location per test). The macro
//! generates one `#[test]` per contract and per retention (`everything::…`, `open_work::…`)
//! plus the snapshot contracts (`snapshots::…`, open work only). Build with the `conformance`
//! feature (the ledger's own tests enable it through a dev-dependency on itself).
//!
//! The contracts call only the trait; what a store cannot do through it (sabotage its own data
//! to prove `verify` and the snapshot checks notice) the harness does.

mod builders;
mod contracts;
mod follow_contracts;
pub mod model;
mod snapshot_contracts;

pub use builders::*;
pub use contracts::*;
pub use follow_contracts::*;
pub use snapshot_contracts::*;

use crate::error::LedgerError;
use crate::ledger_store::{Durability, LedgerStore, Retention, StoreOptions};

/// How a test damages the stored snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotDamage {
    /// Flip one byte of its body: the digest no longer matches.
    Body,
    /// A snapshot sound in itself (its digest matches) that names a hash the log does not have
    /// at its seq: it belongs to another history.
    OffChain,
    /// Every stored balance row credited 1 msat behind the store's back: the snapshot is sound
    /// and on the chain but no longer agrees with the stored projections.
    Projections,
}

/// One store location for one test, and the store-specific ways to sabotage it.
pub trait Harness {
    type Store: LedgerStore;
    /// Open the store at this harness's location: the same data every time it is called.
    fn open(&mut self, options: &StoreOptions) -> Result<Self::Store, LedgerError>;
    /// Change the stored body of event `seq` behind the store's back (the store may be open).
    fn tamper_event(&mut self, seq: u64);
    /// Make every later write of the store fail, until [`Harness::heal_writes`].
    fn break_writes(&mut self);
    fn heal_writes(&mut self);
    /// Damage the newest stored snapshot (the store is closed).
    fn damage_snapshot(&mut self, damage: SnapshotDamage);
}

/// Events between snapshots in the open-work contracts: small, so that the contracts cross
/// several snapshots.
pub const SNAPSHOT_EVERY: u64 = 5;

/// The options a contract opens its store with.
pub fn options(retention: Retention) -> StoreOptions {
    match retention {
        Retention::Everything => StoreOptions::everything(Durability::Normal),
        Retention::OpenWork => {
            StoreOptions::bounded(Durability::Normal).snapshot_every(SNAPSHOT_EVERY)
        }
    }
}

/// Generates the conformance tests for a store. `$make` is an expression (evaluated once per
/// test) that returns a fresh [`Harness`]; it is resolved in the invoking module.
#[macro_export]
macro_rules! ledger_store_conformance {
    (@tests $make:expr, $retention:expr) => {
        $crate::conformance_each!($make, $retention;
            appends_get_consecutive_seqs_and_the_head_follows,
            the_hash_chain_links_every_event,
            an_event_reads_back_by_seq_as_appended,
            a_repeated_key_is_a_no_op_returning_the_first_seq,
            a_repeated_key_with_another_body_is_told_apart,
            a_key_repeated_inside_a_group_is_refused,
            a_payment_reference_credits_once,
            a_payment_reference_of_an_ended_job_credits_once_after_reopen,
            a_refused_group_changes_nothing,
            batch_groups_are_accepted_or_refused_on_their_own,
            staged_groups_are_seen_at_once_and_written_by_flush,
            an_append_after_staging_writes_the_staged_groups_first,
            a_failed_flush_undoes_every_staged_group,
            a_failed_append_changes_neither_memory_nor_disk,
            close_drops_staged_groups,
            reopen_after_close_gives_the_same_state_and_head,
            ended_records_are_still_answered,
            recalled_records_are_in_state_until_the_next_write,
            a_job_id_is_never_reused,
            an_effect_ends_once_and_its_id_is_never_reused,
            a_late_payment_for_an_ended_job_is_booked_against_it,
            history_queries_cover_every_written_job,
            stored_request_and_quoted_invoices_come_from_written_groups,
            audit_finds_a_trail_by_every_kind_of_reference,
            a_subscriptions_audit_lists_the_notices_sent_about_it,
            export_round_trips_to_the_same_chain,
            verify_passes_a_clean_history,
            verify_names_a_tampered_event,
            resident_balances_agree_with_the_stored_ones,
            state_is_the_projection_of_the_written_history,
            a_refund_is_paid_from_the_asset_the_rules_name,
            a_refund_whose_outcome_is_unknown_is_never_started_again,
            a_store_follows_what_another_store_on_its_location_wrote,
            following_a_change_to_a_record_that_left_memory_loads_afresh,
            a_store_that_lost_the_race_follows_and_writes_again,
        );
    };
    (@snapshots $make:expr) => {
        $crate::conformance_each!($make, $crate::Retention::OpenWork;
            open_work_holds_only_records_that_have_not_ended,
            snapshots_are_written_every_n_events_and_at_close,
            reopen_loads_the_snapshot_and_replays_only_the_tail,
            snapshot_plus_tail_equals_a_full_replay,
            a_corrupt_snapshot_is_rejected_and_the_log_replayed,
            a_snapshot_of_another_history_is_rejected,
            a_snapshot_that_disagrees_with_the_stored_balances_is_rejected,
            verify_ignores_a_damaged_snapshot,
            a_store_keeping_everything_reopens_a_bounded_ledger,
        );
    };
    ($make:expr) => {
        mod everything {
            #[allow(unused_imports)]
            use super::*;
            $crate::ledger_store_conformance!(@tests $make, $crate::Retention::Everything);
        }
        mod open_work {
            #[allow(unused_imports)]
            use super::*;
            $crate::ledger_store_conformance!(@tests $make, $crate::Retention::OpenWork);
        }
        mod snapshots {
            #[allow(unused_imports)]
            use super::*;
            $crate::ledger_store_conformance!(@snapshots $make);
        }
    };
}

/// One `#[test]` per named contract.
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_each {
    ($make:expr, $retention:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let make = || $make;
                $crate::conformance::$name(&make, $retention);
            }
        )*
    };
}
