//! Cashu mints whose ecash the operator accepts, and in which units.

use crate::check::Check;
use crate::error::PolicyError;
use crate::raw::RawTrustedMint;

/// A validated `[[mints.trusted]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrustedMint {
    /// Normalised: no trailing slash.
    pub url: String,
    /// Lowercase unit names such as "sat", non-empty, no duplicates.
    pub units: Vec<String>,
}

impl TrustedMint {
    pub fn accepts_unit(&self, unit: &str) -> bool {
        self.units.iter().any(|u| u == unit)
    }
}

/// The form mint URLs are compared in: trailing slashes removed.
pub fn normalise_mint_url(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Plain http is allowed only to the local machine, for tests.
fn has_allowed_scheme_and_host(url: &str) -> bool {
    if let Some(rest) = url.strip_prefix("https://") {
        let host_end = rest.find(['/', ':']).unwrap_or(rest.len());
        return host_end > 0;
    }
    ["http://127.0.0.1", "http://localhost"]
        .iter()
        .any(|local| {
            url.strip_prefix(local)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        })
}

pub(crate) fn trusted_mints_from_raw(
    raw: Vec<RawTrustedMint>,
    check: Check<'_>,
) -> Result<Vec<TrustedMint>, PolicyError> {
    let mut mints: Vec<TrustedMint> = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let path = format!("mints.trusted[{i}]");
        let url_field = format!("{path}.url");
        let url = normalise_mint_url(&entry.url).to_owned();
        if url.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
            return Err(check.invalid(
                &url_field,
                format!(
                    "{:?} must not contain spaces, a query or a fragment",
                    entry.url
                ),
            ));
        }
        if !has_allowed_scheme_and_host(&url) {
            return Err(check.invalid(
                &url_field,
                format!(
                    "{:?} must start with https:// (http:// only for 127.0.0.1 or localhost)",
                    entry.url
                ),
            ));
        }
        if let Some(first) = mints.iter().position(|m| m.url == url) {
            return Err(check.invalid(
                &url_field,
                format!("mint {url} is listed twice (also at mints.trusted[{first}])"),
            ));
        }
        let mut units: Vec<String> = Vec::with_capacity(entry.units.len());
        for (j, unit) in entry.units.into_iter().enumerate() {
            let unit_field = format!("{path}.units[{j}]");
            let well_formed = !unit.is_empty()
                && unit
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !well_formed {
                return Err(check.invalid(
                    &unit_field,
                    format!("unit {unit:?} must be lowercase letters or digits, e.g. \"sat\""),
                ));
            }
            if units.contains(&unit) {
                return Err(check.invalid(&unit_field, format!("unit {unit:?} is listed twice")));
            }
            units.push(unit);
        }
        if units.is_empty() {
            return Err(check.invalid(
                &format!("{path}.units"),
                "must list at least one unit, e.g. [\"sat\"]",
            ));
        }
        mints.push(TrustedMint { url, units });
    }
    Ok(mints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_trailing_slashes() {
        assert_eq!(
            normalise_mint_url("https://mint.example/"),
            "https://mint.example"
        );
        assert_eq!(
            normalise_mint_url("https://mint.example//"),
            "https://mint.example"
        );
        assert_eq!(
            normalise_mint_url("https://mint.example/v1"),
            "https://mint.example/v1"
        );
    }

    #[test]
    fn only_https_or_local_http() {
        assert!(has_allowed_scheme_and_host("https://mint.example"));
        assert!(has_allowed_scheme_and_host(
            "https://mint.example:3338/path"
        ));
        assert!(has_allowed_scheme_and_host("http://127.0.0.1:3338"));
        assert!(has_allowed_scheme_and_host("http://localhost"));
        assert!(!has_allowed_scheme_and_host("http://mint.example"));
        assert!(!has_allowed_scheme_and_host(
            "http://localhost.evil.example"
        ));
        assert!(!has_allowed_scheme_and_host("http://127.0.0.10"));
        assert!(!has_allowed_scheme_and_host("https://"));
        assert!(!has_allowed_scheme_and_host("ftp://mint.example"));
    }
}
