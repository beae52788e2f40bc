//! A deterministic xorshift64 generator: the same workload on every run, no extra crate.

use std::fmt::Write;

pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// 64 hex characters, like a Nostr event id or a payment hash. `unique` goes in the last
    /// quarter so ids never collide however the generator behaves.
    pub(crate) fn id(&mut self, unique: u64) -> String {
        let mut s = String::with_capacity(64);
        for _ in 0..3 {
            let _ = write!(s, "{:016x}", self.next_u64());
        }
        let _ = write!(s, "{unique:016x}");
        s
    }

    /// A bech32-looking payload of `len` characters (bolt11 invoices are mostly this).
    pub(crate) fn bech32(&mut self, len: usize) -> String {
        const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        let mut s = String::with_capacity(len);
        let mut bits = 0u64;
        for i in 0..len {
            if i % 12 == 0 {
                bits = self.next_u64();
            }
            s.push(CHARSET[(bits & 31) as usize] as char);
            bits >>= 5;
        }
        s
    }
}
