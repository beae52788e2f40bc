//! A small reader that turns fuzzer bytes into the choices the parser targets make: picks from
//! pools of meaningful values, short strings, numbers near the edges. Running out of bytes reads
//! as zeros, so every input decodes to something.

use arbitrary::Unstructured;

pub struct Input<'a> {
    u: Unstructured<'a>,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input {
            u: Unstructured::new(data),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.u.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn u64(&mut self) -> u64 {
        self.u.arbitrary().unwrap_or(0)
    }

    pub fn coin(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            self.byte() as usize % n
        } else {
            self.u16() as usize % n
        }
    }

    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }

    /// Up to `max` raw bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        let n = n.min(self.u.len());
        self.u.bytes(n).map(<[u8]>::to_vec).unwrap_or_default()
    }

    /// Up to `max` bytes of text (lossy UTF-8, so any byte sequence becomes some string).
    pub fn text(&mut self, max: usize) -> String {
        String::from_utf8_lossy(&self.bytes(max)).into_owned()
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let n = self.u.len();
        self.u.bytes(n).unwrap_or(&[])
    }

    /// A number near one of `hints` (the hint itself, ±1, ±small), or an edge value.
    pub fn number(&mut self, hints: &[u64]) -> u64 {
        let h = if hints.is_empty() {
            0
        } else {
            self.pick(hints)
        };
        match self.byte() % 10 {
            0..=3 => h,
            4 => h.saturating_add(1),
            5 => h.saturating_sub(1),
            6 => h.saturating_add(u64::from(self.u16())),
            7 => self.pick(&[0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX]),
            _ => self.u64(),
        }
    }
}
