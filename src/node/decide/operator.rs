//! Operator requests (see [`crate::operator`]): one event with the operator as its cause, or a
//! refusal saying why. A refund the request touches is looked at afresh (routed again at once
//! after a retry or a re-route; every refund waiting out a back-off after float is added).

use super::memory::{Memory, RefundTask};
use super::{Ctx, Decided, Decision, Group};
use crate::operator::OperatorRequest;

pub(super) fn asked(ctx: &Ctx, m: &mut Memory, request: &OperatorRequest) -> Decided {
    match request.event(ctx.ledger, ctx.now) {
        Ok(event) => {
            match request.action.refund() {
                Some(refund) => {
                    if let Ok(id) = paydvm_ledger::RefundId::new(refund) {
                        m.refund_tasks.remove(&id);
                    }
                }
                // Float may be what refunds waited for: they are routed again now.
                None if request.action.adds_float() => m
                    .refund_tasks
                    .retain(|_, task| !matches!(task, RefundTask::RetryAt { .. })),
                None => {}
            }
            Ok(Decision::group(Group::new(vec![event])))
        }
        Err(why) => Ok(Decision {
            refused: Some(why),
            ..Decision::default()
        }),
    }
}
