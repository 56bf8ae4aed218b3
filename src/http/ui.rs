//! The web console's static files, embedded in the binary (one `cargo build` makes the
//! whole product; nothing is fetched at run time). Served without authentication: they
//! hold no data, and the data they fetch goes through the API's own routes.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::{ApiCode, ApiError};

/// (name under `/ui/`, content type, bytes)
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "list.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/list.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/charts.js"),
    ),
    (
        "create.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/create.js"),
    ),
    (
        "files.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/files.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "vendor/xterm.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/xterm.js"),
    ),
    (
        "vendor/xterm.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/vendor/xterm.css"),
    ),
    (
        "vendor/addon-fit.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/addon-fit.js"),
    ),
    (
        "vendor/xterm.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../web/vendor/xterm.LICENSE"),
    ),
    (
        "vendor/addon-fit.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../web/vendor/addon-fit.LICENSE"),
    ),
];

/// Scripts only from this server, no inline script, no framing: even if data ever reached
/// the page as markup, it could not run.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'self'";

/// `GET /`: a browser lands on the console.
pub async fn root() -> Redirect {
    Redirect::to("/ui/")
}

/// `GET /ui` → `/ui/` (relative asset paths need the slash).
pub async fn ui_slash() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/` (the page) and `GET /ui/{*file}` (its assets).
pub async fn index() -> Response {
    asset("index.html")
}

pub async fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}

fn asset(name: &str) -> Response {
    let Some((_, content_type, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found(ApiCode::NotFound, format!("no console file {name}"))
            .into_response();
    };
    let mut response = (StatusCode::OK, *bytes).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidated each time: a new binary's console is picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
