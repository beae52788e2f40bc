//! Protocol adapters: the only code that knows Nostr tags. The core sees typed jobs.

pub mod nip90;
