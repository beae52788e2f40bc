//! The maps and sets the state keeps by id. aHash with a random key per process (ahash's
//! `RandomState`) instead of std's SipHash: `perf` of `verify` at 1 M events put SipHash at a
//! tenth of the samples (ids are 64-hex strings). Still keyed per process, so someone who picks
//! the ids (event ids, payment hashes) cannot aim at collisions.

pub type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
pub type HashSet<T> = std::collections::HashSet<T, ahash::RandomState>;
