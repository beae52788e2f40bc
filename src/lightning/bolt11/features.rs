//! An invoice's feature bits (the `9` field) tell its *payer* what the payee's node needs from
//! the payment. BOLT 11: a reader MUST fail the payment when an unknown even ("required") bit is
//! set, and ignores unknown odd ("optional") bits. BOLT 9 lists what an invoice may carry
//! (context `9`): `var_onion_optin` 8/9, `payment_secret` 14/15, `basic_mpp` 16/17,
//! `option_payment_metadata` 48/49. `var_onion_optin` and `payment_secret` are ASSUMED of
//! every node today, so an invoice with no `9` field at all is valid (LNbits' FakeWallet
//! writes none); the `s` field itself stays compulsory (checked with the other fields).
//!
//! What the check is for depends on who reads:
//! - **Payer** (a refund invoice we pay, an invoice handed to a wallet to pay): a required bit
//!   nobody here knows is a demand we cannot promise our backend meets, so the invoice is
//!   refused with the bits named, before anything is sent.
//! - **Payee** (an invoice our own backend just made for a quote, a zap invoice made for us):
//!   the bits are our backend's demands on *its* payers. Nothing in them concerns us, and
//!   refusing our own invoice would only leave the quote with none. Not checked.

use super::Bolt11Error;

/// Who reads the invoice, which decides what its feature bits mean to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We (or a wallet we hand it to) pay it.
    Payer,
    /// It was made for us: we are paid by it.
    Payee,
}

/// Required (even) bits of BOLT 9's invoice context that a payer of ours handles.
const KNOWN_REQUIRED: [u64; 4] = [
    8,  // var_onion_optin
    14, // payment_secret
    16, // basic_mpp
    48, // option_payment_metadata
];

/// The invoice's feature field (its bits as little-endian bytes, if it has one) judged for
/// `role`.
pub fn check(le_flags: Option<&[u8]>, role: Role) -> Result<(), Bolt11Error> {
    let (Role::Payer, Some(le_flags)) = (role, le_flags) else {
        return Ok(());
    };
    let unknown = unknown_required(le_flags);
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Bolt11Error::UnknownRequiredFeatures(unknown))
    }
}

/// The even bits set in `le_flags` (little-endian bytes) that are not [`KNOWN_REQUIRED`].
fn unknown_required(le_flags: &[u8]) -> Vec<u64> {
    let mut bits = Vec::new();
    for (index, byte) in le_flags.iter().enumerate() {
        for offset in (0..8).step_by(2) {
            let bit = index as u64 * 8 + offset;
            if (byte >> offset) & 1 == 1 && !KNOWN_REQUIRED.contains(&bit) {
                bits.push(bit);
            }
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unknown_even_bits_count() {
        // Byte 1 bits 8 and 14 (var_onion_optin, payment_secret required), byte 2 bit 17
        // (basic_mpp optional): nothing unknown.
        assert!(unknown_required(&[0, 0b0100_0001, 0b0000_0010]).is_empty());
        // Odd bits are never required: bit 99 (byte 12, offset 3) is ignored.
        let mut flags = vec![0u8; 13];
        flags[12] = 0b0000_1000;
        assert!(unknown_required(&flags).is_empty());
        // Bit 100 (byte 12, offset 4) and bit 2 (byte 0) are required and unknown.
        flags[12] |= 0b0001_0000;
        flags[0] = 0b0000_0100;
        assert_eq!(unknown_required(&flags), [2, 100]);
    }
}
