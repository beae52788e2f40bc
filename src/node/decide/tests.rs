//! Unit tests of the decision core: every input kind, on a ledger in memory, with a fixed clock.
