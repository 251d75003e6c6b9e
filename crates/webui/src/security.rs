//! Same-origin writes and the headers every UI response carries.
//!
//! A browser sends `Origin` (and, in current browsers, `Sec-Fetch-Site`)
//! with every cross-origin request and with every POST, PUT, PATCH and
//! DELETE; a cross-site form or `fetch` cannot remove them. API clients
//! (curl, Marathon client libraries, other meseta processes) send neither.
//! So a state-changing request is refused when its `Sec-Fetch-Site` says it
//! comes from another site, or its `Origin` names another host than the one
//! it was sent to; requests without either header are API clients and keep
//! working unchanged.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

/// The Content-Security-Policy of UI pages: only this origin's script and
/// style (no inline script, no inline style), no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'";

/// Why a request must be refused as a cross-site write, or `None` when it
/// is a read, a same-origin write, or a write by a non-browser client.
/// `authority` is where the request was sent (`Host`, else the URI's).
pub fn cross_site(method: &Method, headers: &HeaderMap, authority: Option<&str>) -> Option<String> {
    if matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return None;
    }
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Some(format!("a {site} request may not change state"));
        }
    }
    let origin = text("origin")?;
    let host = text("host").or(authority).unwrap_or("");
    let origin_authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
        .unwrap_or("");
    if origin_authority.is_empty() || !same_authority(origin_authority, host, origin) {
        return Some(format!(
            "a request from origin {origin} may not change state on {host}"
        ));
    }
    None
}

/// `a` and `b` name the same host and port (default ports of the origin's
/// scheme filled in).
fn same_authority(origin_authority: &str, host: &str, origin: &str) -> bool {
    let default = if origin.starts_with("https://") {
        "443"
    } else {
        "80"
    };
    let norm = |s: &str| -> String {
        let s = s.to_ascii_lowercase();
        let has_port = match s.rfind(':') {
            Some(i) => !s[i..].contains(']'),
            None => false,
        };
        if has_port {
            s
        } else {
            format!("{s}:{default}")
        }
    };
    !host.is_empty() && norm(origin_authority) == norm(host)
}

/// Axum middleware: answers 403 `{"message"}` to a cross-site write (see
/// [`cross_site`]) and passes everything else on.
pub async fn refuse_cross_site(req: Request, next: Next) -> Response {
    let authority = req.uri().authority().map(|a| a.as_str().to_string());
    if let Some(why) = cross_site(req.method(), req.headers(), authority.as_deref()) {
        return forbidden(&why);
    }
    next.run(req).await
}

/// The 403 answer to a refused cross-site write.
pub fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "message": format!("cross-site request refused: {why}")
        })),
    )
        .into_response()
}

/// The headers of every UI response: the CSP, no MIME sniffing, no
/// framing, no referrer to other sites.
pub fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// A rendered page as a `text/html` response with [`secure_headers`],
/// never cached (pages show live state).
pub fn html_response(status: StatusCode, markup: maud::Markup) -> Response {
    let mut resp = Response::new(Body::from(markup.into_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure_headers(h);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn api_clients_without_origin_may_write() {
        let h = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(cross_site(&Method::POST, &h, None), None);
        assert_eq!(cross_site(&Method::DELETE, &HeaderMap::new(), None), None);
    }

    #[test]
    fn same_origin_writes_pass() {
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(cross_site(&Method::PUT, &h, None), None);
        let h = headers(&[
            ("host", "Marathon.local"),
            ("origin", "http://marathon.local"),
        ]);
        assert_eq!(cross_site(&Method::POST, &h, None), None);
    }

    #[test]
    fn cross_site_writes_are_refused() {
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(cross_site(&Method::POST, &h, None).is_some());
        let h = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(cross_site(&Method::POST, &h, None).is_some());
        let h = headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]);
        assert!(cross_site(&Method::DELETE, &h, None).is_some());
        // Another port of the same host is another origin.
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:5050"),
        ]);
        assert!(cross_site(&Method::PATCH, &h, None).is_some());
    }

    #[test]
    fn reads_are_never_refused() {
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(cross_site(&Method::GET, &h, None), None);
    }
}
