//! Operator requests in the running node (see [`crate::operator`]): decided on the current
//! state, written, and answered only once on disk. A refund the request touches is looked at
//! afresh at once (routed now after a retry or re-route).

use tracing::info;

use super::Core;
use crate::operator::{OperatorReply, OperatorRequest};

impl Core {
    pub(super) fn on_operator(&mut self, request: OperatorRequest) -> OperatorReply {
        let event = match request.event(self.store.state(), self.now()) {
            Ok(event) => event,
            Err(why) => return OperatorReply::refused(why),
        };
        let what = event.body.type_name();
        match self.commit(vec![event], Vec::new()) {
            Ok(true) => {}
            Ok(false) => {
                return OperatorReply::ok(format!("already done (request {})", request.id))
            }
            Err(e) => return OperatorReply::refused(format!("the ledger refused it: {e:#}")),
        }
        if let Some(refund) = request.action.refund() {
            self.refund_tasks.remove(refund);
        }
        if !self.flush() {
            return OperatorReply::refused("writing the ledger failed; nothing changed");
        }
        info!(id = %request.id, what, "operator request recorded");
        OperatorReply::ok(format!("recorded {what} (request {})", request.id))
    }
}
