//! The bearer token of a `[http]` endpoint with `token_file`: every request but `/healthz`
//! must carry it, as `Authorization: Bearer <token>` or `?token=<token>` (so a browser can
//! open the status page from a link). Compared in constant time; never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// The token every request must carry, if any.
pub type Token = Option<Arc<Secret<String>>>;

/// Paths open without the token: liveness says nothing but "the process answers".
const OPEN_PATHS: [&str; 1] = ["/healthz"];

/// Middleware: passes a request that carries the token (or when none is configured); answers
/// 401 otherwise.
pub async fn require_token(State(token): State<Token>, request: Request, next: Next) -> Response {
    let allowed = match &token {
        None => true,
        Some(token) => {
            OPEN_PATHS.contains(&request.uri().path())
                || authorized(request.headers(), request.uri(), token.expose())
        }
    };
    if allowed {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required: Authorization: Bearer <token>, or ?token=<token>\n",
    )
        .into_response()
}

/// Whether the request presents `token` in its `Authorization` header or `token` query pair.
pub fn authorized(headers: &HeaderMap, uri: &Uri, token: &str) -> bool {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|presented| same(presented.trim(), token));
    from_header || query_token(uri).is_some_and(|presented| same(&presented, token))
}

fn query_token(uri: &Uri) -> Option<String> {
    let query = uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
}

/// Equal in constant time: both sides are hashed first, so neither the position of the first
/// difference nor the token's length shows in the time taken.
fn same(presented: &str, token: &str) -> bool {
    let (a, b) = (
        Sha256::digest(presented.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn check(header: Option<&str>, uri: &str) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert(header::AUTHORIZATION, h.parse().unwrap());
        }
        authorized(&headers, &uri.parse().unwrap(), TOKEN)
    }

    #[test]
    fn the_token_is_taken_from_the_header_or_the_query_and_nothing_else() {
        assert!(check(Some(&format!("Bearer {TOKEN}")), "/metrics"));
        assert!(check(None, &format!("/?token={TOKEN}")));
        assert!(check(None, &format!("/api/status?a=1&token={TOKEN}")));
        assert!(!check(None, "/metrics"));
        assert!(!check(Some(TOKEN), "/metrics"), "no Bearer scheme");
        assert!(!check(Some("Bearer 0123456789abcdef012"), "/"), "a prefix");
        assert!(!check(Some(&format!("Bearer {TOKEN}x")), "/"), "longer");
        assert!(!check(None, &format!("/?tokenx={TOKEN}")));
        assert!(!check(Some("Bearer "), "/?token="));
    }
}
