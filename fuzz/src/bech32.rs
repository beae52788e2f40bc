//! Just enough bech32 (BIP-173, no length limit as BOLT 11 uses it) to give mutated invoices a
//! valid checksum, so the fuzzer reaches lightning-invoice's field parsing instead of stopping
//! at the checksum. Written here rather than taken from the `bech32` crate so the targets do not
//! test a decoder against itself.

pub const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    const GEN: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    let mut chk: u32 = 1;
    for v in values {
        let b = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (b >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &str) -> Vec<u8> {
    let bytes = hrp.as_bytes();
    let mut out: Vec<u8> = bytes.iter().map(|c| c >> 5).collect();
    out.push(0);
    out.extend(bytes.iter().map(|c| c & 31));
    out
}

/// `hrp` + `1` + the 5-bit `words` + a valid checksum (lower case; `hrp` must be ASCII).
pub fn encode(hrp: &str, words: &[u8]) -> String {
    let words: Vec<u8> = words.iter().map(|w| w & 31).collect();
    let values = hrp_expand(hrp)
        .into_iter()
        .chain(words.iter().copied())
        .chain([0u8; 6]);
    let pm = polymod(values) ^ 1;
    let mut out = String::with_capacity(hrp.len() + 1 + words.len() + 6);
    out.push_str(hrp);
    out.push('1');
    for w in &words {
        out.push(CHARSET[usize::from(*w)] as char);
    }
    for i in 0..6 {
        out.push(CHARSET[((pm >> (5 * (5 - i))) & 31) as usize] as char);
    }
    out
}

/// The human-readable part and the 5-bit data words (checksum dropped) of a lower-case bech32
/// string, without checking the checksum.
pub fn split(text: &str) -> Option<(String, Vec<u8>)> {
    let at = text.rfind('1')?;
    let (hrp, rest) = (&text[..at], &text[at + 1..]);
    let mut words = rest
        .bytes()
        .map(|c| CHARSET.iter().position(|x| *x == c).map(|p| p as u8))
        .collect::<Option<Vec<u8>>>()?;
    words.truncate(words.len().checked_sub(6)?);
    Some((hrp.to_owned(), words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_encoding_a_vector_gives_it_back() {
        for invoice in crate::vectors::bolt11_invoices().iter().take(15) {
            let lower = invoice.to_ascii_lowercase();
            let (hrp, words) = split(&lower).unwrap();
            assert_eq!(encode(&hrp, &words), lower);
        }
    }
}
