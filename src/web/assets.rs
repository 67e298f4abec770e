//! The control room's stylesheet and script, compiled into `vine` and served under
//! `/assets/` at names that carry a hash of their content (`app-<hash>.css`), so a browser may
//! keep them for a year: a new `vine` serves new names. An `ETag` answers revalidations too.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One compiled-in file.
pub(crate) struct Asset {
    /// The name it is served at, with its content hash: `app-0123abcd4567ef89.css`.
    pub(crate) name: String,
    content_type: &'static str,
    body: &'static str,
    etag: String,
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, body: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Asset {
            name: format!("{stem}-{hash}.{ext}"),
            content_type,
            body,
            etag: format!("\"{hash}\""),
        }
    }

    /// The path a page links to: `/assets/<name>`.
    pub(crate) fn url(&self) -> String {
        format!("/assets/{}", self.name)
    }
}

/// The stylesheet.
pub(crate) static CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    )
});

/// The script: live updates (Server-Sent Events, polling when they fail).
pub(crate) static JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "app",
        "js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
});

/// `GET /assets/{name}`.
pub(crate) async fn serve(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = [&*CSS, &*JS].into_iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let cache = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&asset.etag).unwrap_or(HeaderValue::from_static("\"\"")),
        ),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        StatusCode::OK,
        cache,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_content_hash() {
        assert!(CSS.name.starts_with("app-") && CSS.name.ends_with(".css"));
        assert!(JS.name.starts_with("app-") && JS.name.ends_with(".js"));
        assert_eq!(CSS.name.len(), "app-.css".len() + 16);
        assert_ne!(CSS.etag, JS.etag);
        assert_eq!(JS.url(), format!("/assets/{}", JS.name));
    }
}
