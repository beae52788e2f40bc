//! A deterministic workload of realistic job lifecycles: the same seed gives the same events on
//! every run. The benchmark measures the ledger store with it and `paydvm ledger sample` fills a
//! demo ledger with it.

mod job_type;
mod jobs;
mod rng;

pub use job_type::JobType;
pub use jobs::{JobGroup, Workload};
pub use rng::XorShift;
