//! Which of our proofs pay a refund, and what the mint's input fee (NUT-02) makes of it. Pure:
//! the saga reads the wallet, this decides.

/// Who bears the mint's input fee on the refund swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeePayer {
    /// The customer gets what is owed; the fee is ours (`expense:fees`).
    Operator,
    /// The token is worth what is owed minus the fee to make it.
    Customer,
}

/// One unspent proof of ours, as selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    /// The proof's Y (hex): unique, and the tie-breaker that keeps selection deterministic.
    pub y: String,
    pub amount: u64,
    /// Its keyset's `input_fee_ppk`.
    pub fee_ppk: u64,
}

/// What a refund swap spends and makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Indices into the coins given.
    pub inputs: Vec<usize>,
    pub fee: u64,
    /// What the customer's token is worth.
    pub token: u64,
    /// What comes back to us.
    pub change: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("the wallet holds {have} sat free at this mint; the refund needs {need} sat (what is owed plus the mint's input fee)")]
    Insufficient { have: u64, need: u64 },
    #[error("the mint's input fee ({fee} sat) leaves nothing of the {owed} sat refund")]
    FeeEatsRefund { owed: u64, fee: u64 },
    #[error("paying {owed} sat would take more than {max} proofs; the wallet needs consolidating")]
    TooManyInputs { owed: u64, max: usize },
    #[error("a refund of 0 sat")]
    Zero,
}

/// NUT-02: the sum of the inputs' `input_fee_ppk`, rounded up to a whole unit.
pub fn input_fee(ppks: impl IntoIterator<Item = u64>) -> u64 {
    ppks.into_iter()
        .fold(0u64, |sum, ppk| sum.saturating_add(ppk))
        .div_ceil(1000)
}

/// Largest proofs first (fewest inputs, so the smallest fee), until they cover what is owed plus
/// the fee the inputs chosen so far cost.
pub fn select(
    coins: &[Coin],
    owed: u64,
    payer: FeePayer,
    max_inputs: usize,
) -> Result<Selection, SelectError> {
    if owed == 0 {
        return Err(SelectError::Zero);
    }
    let mut order: Vec<usize> = (0..coins.len()).collect();
    order.sort_by(|&a, &b| {
        coins[b]
            .amount
            .cmp(&coins[a].amount)
            .then_with(|| coins[a].y.cmp(&coins[b].y))
    });
    let (mut total, mut inputs) = (0u64, Vec::new());
    for index in order {
        if inputs.len() == max_inputs {
            return Err(SelectError::TooManyInputs {
                owed,
                max: max_inputs,
            });
        }
        inputs.push(index);
        total = total.saturating_add(coins[index].amount);
        let fee = input_fee(inputs.iter().map(|&i| coins[i].fee_ppk));
        let (spend, token) = match payer {
            FeePayer::Operator => (owed.saturating_add(fee), owed),
            FeePayer::Customer if fee >= owed => {
                return Err(SelectError::FeeEatsRefund { owed, fee })
            }
            FeePayer::Customer => (owed, owed - fee),
        };
        if total >= spend {
            return Ok(Selection {
                inputs,
                fee,
                token,
                change: total - spend,
            });
        }
    }
    // Every proof was taken and still falls short: say what the whole wallet would need.
    let fee = input_fee(inputs.iter().map(|&i| coins[i].fee_ppk));
    Err(SelectError::Insufficient {
        have: total,
        need: match payer {
            FeePayer::Operator => owed.saturating_add(fee),
            FeePayer::Customer => owed,
        },
    })
}

/// `amount` as the keyset's denominations, largest first (powers of two on every mint we know).
/// `None` when the denominations cannot express it.
pub fn split(amount: u64, denominations: &[u64]) -> Option<Vec<u64>> {
    let mut sorted: Vec<u64> = denominations.iter().copied().filter(|d| *d > 0).collect();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut left = amount;
    let mut parts = Vec::new();
    for d in sorted {
        while left >= d {
            parts.push(d);
            left -= d;
        }
    }
    (left == 0).then_some(parts)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn coins(amounts: &[u64], ppk: u64) -> Vec<Coin> {
        amounts
            .iter()
            .enumerate()
            .map(|(i, &amount)| Coin {
                y: format!("{i:02}"),
                amount,
                fee_ppk: ppk,
            })
            .collect()
    }

    #[test]
    fn the_operator_pays_the_fee_on_top_and_the_customer_gets_what_is_owed() {
        let s = select(&coins(&[8, 2], 100), 9, FeePayer::Operator, 64).unwrap();
        assert_eq!((s.inputs, s.fee, s.token, s.change), (vec![0, 1], 1, 9, 0));
    }

    #[test]
    fn the_customer_bears_the_fee_out_of_the_refund() {
        let s = select(&coins(&[8, 2], 100), 9, FeePayer::Customer, 64).unwrap();
        assert_eq!((s.fee, s.token, s.change), (1, 8, 1));
    }

    #[test]
    fn issue_5_nine_sat_cannot_pay_ten_plus_a_fee() {
        // A 10-sat NutZap swapped at 100 ppk left 9 sat: the operator-paid refund of 10 is refused
        // up front with the numbers, instead of failing at the mint five times.
        let e = select(&coins(&[8, 1], 100), 10, FeePayer::Operator, 64).unwrap_err();
        assert!(
            matches!(e, SelectError::Insufficient { have: 9, .. }),
            "{e}"
        );
        let s = select(&coins(&[8, 1], 100), 9, FeePayer::Customer, 64).unwrap();
        assert_eq!((s.fee, s.token, s.change), (1, 8, 0));
    }

    #[test]
    fn a_fee_as_large_as_the_refund_is_refused() {
        let e = select(&coins(&[1], 1000), 1, FeePayer::Customer, 64).unwrap_err();
        assert_eq!(e, SelectError::FeeEatsRefund { owed: 1, fee: 1 });
    }

    #[test]
    fn splits_into_denominations() {
        let pow2: Vec<u64> = (0..10).map(|i| 1 << i).collect();
        assert_eq!(split(13, &pow2), Some(vec![8, 4, 1]));
        assert_eq!(split(0, &pow2), Some(vec![]));
        assert_eq!(split(3, &[2]), None);
    }

    proptest! {
        /// Whatever the wallet holds, a selection spends exactly inputs = token + fee + change,
        /// never pays less than owed (operator) and never takes a proof twice.
        #[test]
        fn selections_balance(amounts in prop::collection::vec(1u64..64, 0..20), owed in 1u64..200,
                              ppk in 0u64..1500, customer in any::<bool>()) {
            let payer = if customer { FeePayer::Customer } else { FeePayer::Operator };
            let c = coins(&amounts, ppk);
            match select(&c, owed, payer, 64) {
                Ok(s) => {
                    let total: u64 = s.inputs.iter().map(|&i| c[i].amount).sum();
                    prop_assert_eq!(total, s.token + s.fee + s.change);
                    prop_assert_eq!(s.fee, input_fee(s.inputs.iter().map(|&i| c[i].fee_ppk)));
                    let mut seen = s.inputs.clone();
                    seen.sort_unstable();
                    seen.dedup();
                    prop_assert_eq!(seen.len(), s.inputs.len());
                    match payer {
                        FeePayer::Operator => prop_assert_eq!(s.token, owed),
                        FeePayer::Customer => prop_assert_eq!(s.token + s.fee, owed),
                    }
                }
                Err(SelectError::Insufficient { have, .. }) => {
                    prop_assert!(have <= amounts.iter().sum::<u64>());
                }
                Err(_) => {}
            }
        }
    }
}
