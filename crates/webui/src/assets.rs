//! The style sheet and the script, compiled into the binary and served by
//! every UI at [`CSS_PATH`] and [`JS_PATH`].

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};

/// Where pages load the style sheet from.
pub const CSS_PATH: &str = "/ui/assets/meseta.css";
/// Where pages load the script from.
pub const JS_PATH: &str = "/ui/assets/meseta.js";

const CSS: &str = include_str!("../assets/meseta.css");
const JS: &str = include_str!("../assets/meseta.js");

/// The asset at `path`, or `None` when `path` names none.
pub fn serve(path: &str) -> Option<Response> {
    let (body, kind) = match path {
        CSS_PATH => (CSS, "text/css; charset=utf-8"),
        JS_PATH => (JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    // Revalidated each time: the binary may have been replaced.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    crate::secure_headers(h);
    Some(resp)
}
