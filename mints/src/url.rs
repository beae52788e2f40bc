//! Mint URLs as they are compared: NIP-65 style normalisation.

/// Lowercase scheme and host, no trailing slash; the path keeps its case. Two spellings of the
/// same mint (`HTTPS://Mint.example/`, `https://mint.example`) compare equal after this.
pub fn normalise_mint_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            let (host, path) = rest.split_at(host_end);
            format!(
                "{}://{}{}",
                scheme.to_ascii_lowercase(),
                host.to_ascii_lowercase(),
                path
            )
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::normalise_mint_url;

    #[test]
    fn scheme_and_host_are_lowercased_and_trailing_slashes_dropped() {
        assert_eq!(
            normalise_mint_url("HTTPS://Mint.Example/"),
            "https://mint.example"
        );
        assert_eq!(
            normalise_mint_url("https://mint.example//"),
            "https://mint.example"
        );
        assert_eq!(
            normalise_mint_url("http://127.0.0.1:3338/Cashu/"),
            "http://127.0.0.1:3338/Cashu"
        );
        assert_eq!(
            normalise_mint_url(" https://m.example "),
            "https://m.example"
        );
    }
}
