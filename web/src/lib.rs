//! What the daemon's monitor and the hub's web app share: the front-end assets, embedded in the
//! binary so the pages work on a lab network with no internet, and the route that serves them.
//!
//! # Layout
//! - `assets/site.css`: the one stylesheet of both apps.
//! - `assets/vendor/uplot/`: uPlot, pinned from the npm registry, with its licence (see the
//!   README there for where it came from and how to update it).
//!
//! Pages link `/assets/site.css`, `/assets/uPlot.min.css` and `/assets/uPlot.iife.min.js`.
//! The file names carry no version: responses say `no-cache` with an `ETag`, so a new binary's
//! assets are picked up at once and an unchanged asset costs a 304.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The uPlot release embedded here.
pub const UPLOT_VERSION: &str = "1.6.32";

/// One embedded file: its name under `/assets/`, content type and bytes.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every embedded asset.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "site.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/site.css"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/uplot/uPlot.min.css"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/uplot/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/uplot/LICENSE"),
    },
];

/// The asset called `name`, if embedded.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// A router serving every asset at `/assets/{name}`; merge it into an app's router.
pub fn assets_router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/assets/{name}", get(serve_asset))
}

async fn serve_asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = asset(&name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let etag = format!("\"{:016x}\"", fnv1a(asset.bytes));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag = HeaderValue::from_str(&etag).expect("hex etag is a valid header");
    let cache = HeaderValue::from_static("no-cache");
    if fresh {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, etag),
            (header::CACHE_CONTROL, cache),
        ],
        asset.bytes,
    )
        .into_response()
}

/// A stable content hash for the ETag (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn uplot_is_served_with_its_content_type_and_a_revalidation_answers_304() {
        let app: Router = assets_router();
        let res = app
            .clone()
            .oneshot(
                Request::get("/assets/uPlot.iife.min.js")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        let etag = res.headers()[header::ETAG].clone();
        let again = app
            .oneshot(
                Request::get("/assets/uPlot.iife.min.js")
                    .header(header::IF_NONE_MATCH, etag)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }

    #[tokio::test]
    async fn an_unknown_asset_is_not_found() {
        let app: Router = assets_router();
        let res = app
            .oneshot(
                Request::get("/assets/../Cargo.toml")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn the_embedded_uplot_is_the_pinned_release() {
        let js = std::str::from_utf8(asset("uPlot.iife.min.js").unwrap().bytes).unwrap();
        assert!(js.contains("uPlot"), "not uPlot");
        assert!(
            std::str::from_utf8(asset("uPlot.LICENSE.txt").unwrap().bytes)
                .unwrap()
                .contains("MIT")
        );
    }
}
