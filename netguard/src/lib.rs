//! Which hosts paydvm may contact on a customer's say-so (a refund address, an LNURL callback,
//! a lightning address): never the node's own machine or network, unless the operator says so.
//!
//! - [`ip_class`]: the IP ranges never connected to, as a table.
//! - [`allow_list`]: the operator's exceptions (`[node] lnurl_allow_hosts`).
//! - [`policy`]: the checks on a URL before a request and on the addresses a name resolves to.
//! - [`lud16`]: lightning addresses and the LNURL-pay URL they stand for.
//!
//! Everything here is pure (no network, no clock): the node's HTTP client calls
//! [`HostPolicy::filter_resolved`] from its DNS resolver, and the fuzz targets call it all.

pub mod allow_list;
pub mod ip_class;
pub mod lud16;
pub mod policy;

pub use allow_list::{AllowEntry, AllowList, BadAllowEntry};
pub use ip_class::{forbidden, is_public, Forbidden, Rule};
pub use lud16::{BadLud16, Lud16};
pub use policy::{HostPolicy, Refusal, Route};
