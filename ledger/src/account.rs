//! Double-entry accounts and postings.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::Asset;
use crate::ids::{JobId, Pubkey, RefundId, SubscriptionId};
use crate::money::{MoneyError, Msat};

/// A ledger account. Assets are debit-normal; everything else is credit-normal.
///
/// Stored by its name (`Display`), read back with `FromStr`; snapshots use the serde form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Account {
    Asset(Asset),
    /// Held for the customer until the result is delivered.
    Job(JobId),
    /// A customer's prepaid credit.
    Credit(Pubkey),
    /// Owed back to a customer.
    Refund(RefundId),
    /// Paid toward a subscription, not yet turned into an entitlement.
    Subscription(SubscriptionId),
    /// Verified money that matched nothing.
    Unmatched,
    Revenue,
    Fees,
    /// The operator's own money put into a wallet (`float_added`).
    Float,
    /// Refunds the operator wrote off as income (`refund_written_off` to income).
    WrittenOff,
}

impl Account {
    /// Liability accounts are money we hold for someone: their balance may never go negative.
    pub fn is_held(&self) -> bool {
        matches!(
            self,
            Account::Job(_)
                | Account::Credit(_)
                | Account::Refund(_)
                | Account::Subscription(_)
                | Account::Unmatched
        )
    }

    pub fn is_debit_normal(&self) -> bool {
        matches!(self, Account::Asset(_) | Account::Fees)
    }

    /// Asset accounts are wallets: their debits may never fall below their credits (we cannot
    /// pay out money the ledger never saw come in; the operator's own money is `float_added`).
    pub fn is_asset(&self) -> bool {
        matches!(self, Account::Asset(_))
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Asset(Asset::Lightning) => f.write_str("asset:lightning"),
            Account::Asset(Asset::Mint { url }) => write!(f, "asset:mint:{url}"),
            Account::Job(j) => write!(f, "liability:job:{j}"),
            Account::Credit(p) => write!(f, "liability:credit:{p}"),
            Account::Refund(r) => write!(f, "liability:refund:{r}"),
            Account::Subscription(s) => write!(f, "liability:subscription:{s}"),
            Account::Unmatched => f.write_str("liability:unmatched"),
            Account::Revenue => f.write_str("income:revenue"),
            Account::Fees => f.write_str("expense:fees"),
            Account::Float => f.write_str("equity:float"),
            Account::WrittenOff => f.write_str("income:written_off"),
        }
    }
}

/// An account name that is not one `Account` writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an account name: {0:?}")]
pub struct BadAccountName(pub String);

impl std::str::FromStr for Account {
    type Err = BadAccountName;

    /// The inverse of `Display`.
    fn from_str(s: &str) -> Result<Account, BadAccountName> {
        let bad = || BadAccountName(s.to_string());
        let id = |rest: &str| rest.to_string();
        Ok(match s {
            "asset:lightning" => Account::Asset(Asset::Lightning),
            "liability:unmatched" => Account::Unmatched,
            "income:revenue" => Account::Revenue,
            "expense:fees" => Account::Fees,
            "equity:float" => Account::Float,
            "income:written_off" => Account::WrittenOff,
            _ => {
                if let Some(url) = s.strip_prefix("asset:mint:") {
                    Account::Asset(Asset::Mint { url: id(url) })
                } else if let Some(j) = s.strip_prefix("liability:job:") {
                    Account::Job(JobId::new(j).map_err(|_| bad())?)
                } else if let Some(p) = s.strip_prefix("liability:credit:") {
                    Account::Credit(Pubkey::new(p).map_err(|_| bad())?)
                } else if let Some(r) = s.strip_prefix("liability:refund:") {
                    Account::Refund(RefundId::new(r).map_err(|_| bad())?)
                } else if let Some(x) = s.strip_prefix("liability:subscription:") {
                    Account::Subscription(SubscriptionId::new(x).map_err(|_| bad())?)
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

/// One balanced entry pair: `debit`'s debits and `credit`'s credits each grow by `amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub debit: Account,
    pub credit: Account,
    pub amount: Msat,
}

/// Running totals of one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub debits: Msat,
    pub credits: Msat,
}

impl Balance {
    /// What a held (credit-normal) account holds; `None` when debits exceed credits.
    pub fn held(&self) -> Option<Msat> {
        self.credits.checked_sub(self.debits).ok()
    }

    /// What an asset (debit-normal) account holds; `None` when credits exceed debits.
    pub fn owned(&self) -> Option<Msat> {
        self.debits.checked_sub(self.credits).ok()
    }

    /// Signed balance in the account's normal direction.
    pub fn signed(&self, debit_normal: bool) -> i128 {
        let (d, c) = (
            i128::from(self.debits.as_msat()),
            i128::from(self.credits.as_msat()),
        );
        if debit_normal {
            d - c
        } else {
            c - d
        }
    }

    pub fn with_debit(self, amount: Msat) -> Result<Balance, MoneyError> {
        Ok(Balance {
            debits: self.debits.checked_add(amount)?,
            credits: self.credits,
        })
    }

    pub fn with_credit(self, amount: Msat) -> Result<Balance, MoneyError> {
        Ok(Balance {
            debits: self.debits,
            credits: self.credits.checked_add(amount)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_account_name_reads_back_as_the_same_account() {
        let accounts = [
            Account::Asset(Asset::Lightning),
            Account::Asset(Asset::Mint {
                url: "https://mint.example:3338/a:b".into(),
            }),
            Account::Job(JobId::new("j1").unwrap()),
            Account::Credit(Pubkey::new("p1").unwrap()),
            Account::Refund(RefundId::new("j1:fail").unwrap()),
            Account::Subscription(SubscriptionId::new("s1").unwrap()),
            Account::Unmatched,
            Account::Revenue,
            Account::Fees,
            Account::Float,
            Account::WrittenOff,
        ];
        for a in accounts {
            assert_eq!(a.to_string().parse::<Account>(), Ok(a.clone()), "{a}");
        }
        for bad in [
            "",
            "asset:",
            "liability:job:",
            "liability:job:a b",
            "income:other",
        ] {
            assert!(bad.parse::<Account>().is_err(), "{bad:?}");
        }
    }
}
