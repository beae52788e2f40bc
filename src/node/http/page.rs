//! `GET /`: the status page. Its HTML, CSS and JS are compiled into the binary
//! (`assets/`), inlined into one document so that a `?token=` in the page's address is the only
//! credential it needs (its script sends it on with each `/api/status` poll). No CDN, no
//! network beyond the node itself. The charts are small SVG line charts drawn by `status.js`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const HTML: &str = include_str!("assets/status.html");
const CSS: &str = include_str!("assets/status.css");
const JS: &str = include_str!("assets/status.js");

/// The page's content security policy: nothing from elsewhere; only the node's own API.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

/// The document: the HTML with the CSS and the script in place.
pub fn document() -> String {
    HTML.replace("/*STYLE*/", CSS).replace("/*SCRIPT*/", JS)
}

pub async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        document(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_inlines_its_style_and_script_and_loads_nothing_else() {
        let doc = super::document();
        assert!(!doc.contains("/*STYLE*/") && !doc.contains("/*SCRIPT*/"));
        assert!(doc.contains("function drawChart"));
        // The SVG namespace is a name, not something loaded.
        let doc = doc.replace("http://www.w3.org/2000/svg", "");
        for outside in ["http://", "https://", "src=\"", "<link", "url(", "@import"] {
            assert!(
                !doc.contains(outside),
                "the page must load nothing: {outside}"
            );
        }
    }
}
