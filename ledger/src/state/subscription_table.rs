//! The subscriptions, with an index by subscriber: a job request asks "does this customer hold a
//! subscription covering the kind?" and must not scan every subscription ever sold to answer.
//! A subscription's subscriber never changes after its quote, so the index changes only when a
//! subscription appears or (by a rollback) disappears.

use std::collections::BTreeSet;

use crate::keyed::HashMap;

use crate::ids::{Pubkey, SubscriptionId};
use crate::subscription::SubscriptionRecord;

#[derive(Debug, Clone, Default)]
pub struct SubscriptionTable {
    subscriptions: HashMap<SubscriptionId, SubscriptionRecord>,
    by_subscriber: HashMap<Pubkey, BTreeSet<SubscriptionId>>,
}

impl PartialEq for SubscriptionTable {
    fn eq(&self, other: &Self) -> bool {
        self.subscriptions == other.subscriptions
    }
}

impl Eq for SubscriptionTable {}

impl SubscriptionTable {
    pub fn get(&self, id: &SubscriptionId) -> Option<&SubscriptionRecord> {
        self.subscriptions.get(id)
    }

    pub fn contains_key(&self, id: &SubscriptionId) -> bool {
        self.subscriptions.contains_key(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &SubscriptionRecord> {
        self.subscriptions.values()
    }

    /// Inserts or replaces `record`; returns the record it replaced.
    pub fn insert(
        &mut self,
        id: SubscriptionId,
        record: SubscriptionRecord,
    ) -> Option<SubscriptionRecord> {
        debug_assert_eq!(id, record.subscription);
        let old = self.remove(&id);
        self.by_subscriber
            .entry(record.subscriber.clone())
            .or_default()
            .insert(id.clone());
        self.subscriptions.insert(id, record);
        old
    }

    pub fn remove(&mut self, id: &SubscriptionId) -> Option<SubscriptionRecord> {
        let old = self.subscriptions.remove(id)?;
        if let Some(set) = self.by_subscriber.get_mut(&old.subscriber) {
            set.remove(id);
            if set.is_empty() {
                self.by_subscriber.remove(&old.subscriber);
            }
        }
        Some(old)
    }

    /// `subscriber`'s subscriptions, in id order.
    pub fn of(&self, subscriber: &Pubkey) -> impl Iterator<Item = &SubscriptionRecord> {
        self.by_subscriber
            .get(subscriber)
            .into_iter()
            .flatten()
            .filter_map(|id| self.subscriptions.get(id))
    }

    /// The index holds exactly what a scan would find (for the invariant checks).
    pub fn index_agrees(&self) -> bool {
        let fresh: SubscriptionTable = self
            .subscriptions
            .values()
            .map(|s| (s.subscription.clone(), s.clone()))
            .collect();
        fresh.by_subscriber == self.by_subscriber
    }
}

impl FromIterator<(SubscriptionId, SubscriptionRecord)> for SubscriptionTable {
    fn from_iter<I: IntoIterator<Item = (SubscriptionId, SubscriptionRecord)>>(iter: I) -> Self {
        let mut table = SubscriptionTable::default();
        for (id, record) in iter {
            table.insert(id, record);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UnixMs;
    use crate::subscription::EntitlementState;

    fn record(id: &str, subscriber: &str, used: u32) -> SubscriptionRecord {
        SubscriptionRecord {
            subscription: SubscriptionId::new(id).unwrap(),
            subscriber: Pubkey::new(subscriber).unwrap(),
            tier: "gold".into(),
            period_start: UnixMs(0),
            period_end: UnixMs(1),
            quota: 2,
            used,
            state: EntitlementState::Active,
            price: crate::money::Msat::ZERO,
            period_ms: 0,
            cancelled_at: None,
            paid_in: None,
            unused_refunded: false,
            renewal_quoted: None,
        }
    }

    fn ids_of(table: &SubscriptionTable, subscriber: &str) -> Vec<(String, u32)> {
        table
            .of(&Pubkey::new(subscriber).unwrap())
            .map(|s| (s.subscription.to_string(), s.used))
            .collect()
    }

    #[test]
    fn the_index_follows_inserts_replacements_and_removals() {
        let mut table: SubscriptionTable = [record("b", "alice", 0), record("c", "bob", 0)]
            .into_iter()
            .map(|s| (s.subscription.clone(), s))
            .collect();
        table.insert(SubscriptionId::new("a").unwrap(), record("a", "alice", 0));
        table.insert(SubscriptionId::new("a").unwrap(), record("a", "alice", 1));
        assert_eq!(ids_of(&table, "alice"), [("a".into(), 1), ("b".into(), 0)]);
        table.remove(&SubscriptionId::new("b").unwrap());
        table.remove(&SubscriptionId::new("c").unwrap());
        assert_eq!(ids_of(&table, "alice"), [("a".into(), 1)]);
        assert!(ids_of(&table, "bob").is_empty());
        assert!(table.index_agrees());
        assert!(!table
            .by_subscriber
            .contains_key(&Pubkey::new("bob").unwrap()));
    }
}
