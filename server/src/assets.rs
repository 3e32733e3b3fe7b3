//! The browser bundle (JS, WASM, CSS) served under `/pkg/`.
//!
//! `cargo xtask build` writes the bundle to `target/site/pkg` before compiling the
//! server. Release builds embed those files in the binary, so one file is all an
//! operator copies; debug builds read them from disk, so the bundle can be rebuilt
//! without recompiling the server.

use axum::extract::Path;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(rust_embed::Embed)]
#[folder = "../target/site/pkg"]
#[allow_missing = true]
struct Bundle;

/// `GET /pkg/{*path}`: a bundle file, with an ETag for revalidation.
pub async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(file) = Bundle::get(&path) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let etag =
        format!("\"{}\"", file.metadata.sha256_hash().iter().take(16).map(|b| format!("{b:02x}")).collect::<String>());
    if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, file.metadata.mimetype().to_string()),
            // File names are not content-hashed, so browsers must revalidate; the ETag
            // makes that a cheap 304.
            (header::CACHE_CONTROL, "no-cache".to_string()),
            (header::ETAG, etag),
        ],
        file.data,
    )
        .into_response()
}

/// Whether the bundle is present (the server still serves pages without it, unhydrated).
pub fn bundle_present() -> bool {
    Bundle::get(&format!("{}_bg.wasm", app::BUNDLE_NAME)).is_some()
}
