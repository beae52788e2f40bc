//! The refund saga against the in-memory mint and store: every way an attempt can be cut short
//! (the answer lost after the mint swapped, inputs spent by someone else, a refusal, the mint
//! down, the process dying between two writes) ends in exactly one token or an explicit failure
//! with our inputs given back — never a token made twice, never a spent proof reused.

use super::record::Step;
use super::saga::{Order, Outcome, Saga};
use super::select::FeePayer;
use super::sim::{SimMint, SimStore, SwapFault};
use cdk::nuts::{PublicKey, SecretKey};

const SEED: [u8; 64] = [3; 64];

fn customer() -> PublicKey {
    SecretKey::from_slice(&[9; 32]).unwrap().public_key()
}

fn order(tag: &str, owed: u64, payer: FeePayer) -> Order {
    Order {
        tag: tag.into(),
        mint: "http://mint.test".into(),
        unit: "sat".into(),
        owed,
        lock: Some(customer()),
        fee_payer: payer,
        now: 1_700_000_000,
    }
}

fn saga<'a>(mint: &'a SimMint, store: &'a SimStore) -> Saga<'a> {
    Saga {
        mint,
        store,
        seed: &SEED,
    }
}

fn token_value(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Token { proofs, .. } => proofs.iter().map(|p| u64::from(p.amount)).sum(),
        other => panic!("expected a token, got {other:?}"),
    }
}

fn setup(wallet: u64, fee_ppk: u64) -> (SimMint, SimStore) {
    let mint = SimMint::new(1, fee_ppk);
    let store = SimStore::default();
    store.add(mint.issue(wallet));
    (mint, store)
}

#[tokio::test]
async fn a_refund_is_made_once_and_change_comes_back() {
    let (mint, store) = setup(13, 0);
    let s = saga(&mint, &store);
    let plan = s
        .prepare(&order("j:fail#1", 5, FeePayer::Operator))
        .await
        .unwrap();
    assert_eq!((plan.token_value, plan.fee), (5, 0));
    // Preparing again gives the same plan and reserves nothing more.
    assert_eq!(
        s.prepare(&order("j:fail#1", 5, FeePayer::Operator))
            .await
            .unwrap(),
        plan
    );
    let first = s.run("j:fail#1").await;
    assert_eq!(token_value(&first), 5);
    assert_eq!(
        s.run("j:fail#1").await,
        first,
        "running again returns the same token"
    );
    assert_eq!(mint.swaps(), 1);
    assert_eq!(store.unspent_total(), 8);
}

#[tokio::test]
async fn issue_10_2_an_answer_lost_after_the_mint_swapped_is_restored_not_lost() {
    let (mint, store) = setup(16, 0);
    let s = saga(&mint, &store);
    s.prepare(&order("j:fail#1", 5, FeePayer::Operator))
        .await
        .unwrap();
    mint.set_next_swap(SwapFault::LoseAnswer);
    assert!(matches!(s.run("j:fail#1").await, Outcome::Unknown(_)));
    // A restart: a new saga over the same store. The mint says our inputs are spent; restoring
    // our deterministic outputs gives the token back.
    let again = saga(&mint, &store).run("j:fail#1").await;
    assert_eq!(token_value(&again), 5);
    assert_eq!((mint.swaps(), mint.restores()), (1, 1));
    // The spent inputs left the wallet: the next refund never picks them.
    assert_eq!(store.unspent_total(), 11);
    s.prepare(&order("k:fail#1", 11, FeePayer::Operator))
        .await
        .unwrap();
    assert_eq!(token_value(&s.run("k:fail#1").await), 11);
    assert_eq!(store.total(), 0);
}

#[tokio::test]
async fn inputs_spent_by_someone_else_fail_the_attempt_and_are_never_reused() {
    let (mint, store) = setup(7, 0);
    store.add(mint.issue(8));
    let s = saga(&mint, &store);
    s.prepare(&order("j:fail#1", 8, FeePayer::Operator))
        .await
        .unwrap();
    let ys = store.record("j:fail#1").unwrap().input_ys().unwrap();
    mint.spend_elsewhere(&ys);
    assert!(matches!(s.run("j:fail#1").await, Outcome::Failed(_)));
    assert!(matches!(
        store.record("j:fail#1").unwrap().step,
        Step::Abandoned { .. }
    ));
    assert_eq!(store.total(), 7, "the spent proof is gone from the wallet");
    // The next attempt can only use what is really left.
    let err = s
        .prepare(&order("j:fail#2", 8, FeePayer::Operator))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("holds 7 sat"), "{err}");
}

#[tokio::test]
async fn a_refused_swap_gives_the_inputs_back() {
    let (mint, store) = setup(8, 0);
    let s = saga(&mint, &store);
    s.prepare(&order("j:fail#1", 8, FeePayer::Operator))
        .await
        .unwrap();
    assert_eq!(store.unspent_total(), 0, "reserved while prepared");
    mint.set_next_swap(SwapFault::Refuse);
    assert!(matches!(s.run("j:fail#1").await, Outcome::Failed(_)));
    assert_eq!(store.unspent_total(), 8);
}

#[tokio::test]
async fn a_mint_that_is_down_leaves_the_attempt_unknown_until_it_answers() {
    let (mint, store) = setup(8, 0);
    let s = saga(&mint, &store);
    s.prepare(&order("j:fail#1", 3, FeePayer::Operator))
        .await
        .unwrap();
    mint.set_unreachable(true);
    assert!(matches!(s.run("j:fail#1").await, Outcome::Unknown(_)));
    mint.set_unreachable(false);
    assert_eq!(token_value(&s.run("j:fail#1").await), 3);
}

#[tokio::test]
async fn dying_between_recording_the_token_and_moving_the_wallet_is_finished_later() {
    let (mint, store) = setup(8, 0);
    let s = saga(&mint, &store);
    s.prepare(&order("j:fail#1", 3, FeePayer::Operator))
        .await
        .unwrap();
    // The swapped record is written; the wallet update and its mark are not.
    store.fail_saves_after(Some(1));
    let first = s.run("j:fail#1").await;
    store.fail_saves_after(None);
    assert!(matches!(first, Outcome::Unknown(_)) || matches!(first, Outcome::Token { .. }));
    assert_eq!(token_value(&s.run("j:fail#1").await), 3);
    assert_eq!(mint.swaps(), 1);
    assert_eq!(store.unspent_total(), 5);
}

#[tokio::test]
async fn fees_are_the_operators_or_come_out_of_the_refund() {
    let (mint, store) = setup(16, 400);
    let s = saga(&mint, &store);
    let plan = s
        .prepare(&order("a#1", 10, FeePayer::Operator))
        .await
        .unwrap();
    assert_eq!((plan.token_value, plan.fee), (10, 1));
    assert_eq!(token_value(&s.run("a#1").await), 10);
    assert_eq!(store.unspent_total(), 5);
    let plan = s
        .prepare(&order("b#1", 5, FeePayer::Customer))
        .await
        .unwrap();
    assert_eq!((plan.token_value, plan.fee), (4, 1));
    assert_eq!(token_value(&s.run("b#1").await), 4);
}

#[tokio::test]
async fn two_attempts_never_pick_the_same_proofs() {
    let (mint, store) = setup(3, 0);
    let s = saga(&mint, &store);
    s.prepare(&order("a#1", 2, FeePayer::Operator))
        .await
        .unwrap();
    let err = s
        .prepare(&order("b#1", 2, FeePayer::Operator))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("holds 1 sat"), "{err}");
}

#[tokio::test]
async fn an_attempt_never_run_is_abandoned_and_its_inputs_released() {
    let (mint, store) = setup(4, 0);
    let s = saga(&mint, &store);
    s.prepare(&order("a#1", 4, FeePayer::Operator))
        .await
        .unwrap();
    assert_eq!(s.abandon("a#1", "never started").await, Ok(true));
    assert_eq!(store.unspent_total(), 4);
    assert!(matches!(s.run("a#1").await, Outcome::Failed(_)));
    assert!(
        s.prepare(&order("a#1", 4, FeePayer::Operator))
            .await
            .is_err(),
        "a tag is used once"
    );
}

#[tokio::test]
async fn a_claimed_token_is_seen_at_the_mint() {
    let (mint, store) = setup(4, 0);
    let s = saga(&mint, &store);
    s.prepare(&order("a#1", 4, FeePayer::Operator))
        .await
        .unwrap();
    let Outcome::Token { proofs, .. } = s.run("a#1").await else {
        panic!()
    };
    assert_eq!(s.claimed("a#1").await, Ok(Some(false)));
    let ys: Vec<_> = proofs.iter().map(|p| p.y().unwrap()).collect();
    mint.spend_elsewhere(&ys);
    assert_eq!(s.claimed("a#1").await, Ok(Some(true)));
}
