//! Operator requests (see [`crate::operator`]): one event with the operator as its cause, or a
//! refusal saying why. A refund the request touches is looked at afresh (routed again at once
//! after a retry or a re-route).

use super::memory::Memory;
use super::{Ctx, Decided, Decision, Group};
use crate::operator::OperatorRequest;

pub(super) fn asked(ctx: &Ctx, m: &mut Memory, request: &OperatorRequest) -> Decided {
    match request.event(ctx.ledger, ctx.now) {
        Ok(event) => {
            if let Some(refund) = request.action.refund() {
                if let Ok(id) = paydvm_ledger::RefundId::new(refund) {
                    m.refund_tasks.remove(&id);
                }
            }
            Ok(Decision::group(Group::new(vec![event])))
        }
        Err(why) => Ok(Decision {
            refused: Some(why),
            ..Decision::default()
        }),
    }
}
