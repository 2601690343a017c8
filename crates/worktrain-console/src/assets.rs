//! The console's stylesheet and script, embedded in the binary. Each is served under a
//! name carrying a hash of its content (`console.3f2a9c1b.css`), so it can be cached for
//! a year: a new build has new names. Compression is applied by the router.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::BASE;

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// The hashed file name.
    pub name: String,
    /// MIME type.
    pub content_type: &'static str,
    /// The file's bytes, embedded in the binary at build time.
    pub bytes: &'static [u8],
}

impl Asset {
    fn new(stem: &str, ext: &str, content_type: &'static str, bytes: &'static [u8]) -> Self {
        let hash = hex::encode(&Sha256::digest(bytes)[..6]);
        Self {
            name: format!("{stem}.{hash}.{ext}"),
            content_type,
            bytes,
        }
    }

    /// The URL of the asset.
    pub fn url(&self) -> String {
        format!("{BASE}/assets/{}", self.name)
    }
}

/// The console's stylesheet, served under a content-hashed name (cacheable forever).
pub static CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/console.css"),
    )
});

/// The script (live updates, nothing else).
pub static JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "console",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/console.js"),
    )
});

/// `GET /console/assets/{name}`.
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some(a) = [&*CSS, &*JS].into_iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut resp = a.bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    resp
}
