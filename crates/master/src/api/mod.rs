//! The master's HTTP faces, on the same port as its gRPC services:
//!
//! - [`scheduler`]: Mesos' v1 scheduler API, `POST /api/v1/scheduler`
//!   (JSON or protobuf bodies, RecordIO event stream);
//! - [`operator`]: Mesos' v1 operator API, `POST /api/v1` (GET_* calls and
//!   the SUBSCRIBE event stream);
//! - [`endpoints`]: the JSON endpoints tools read (`/master/state`,
//!   `/state.json`, `/master/state-summary`, `/master/slaves`,
//!   `/master/frameworks`, `/master/tasks`, `/master/roles`, `/version`,
//!   `/metrics/snapshot`, `/health`, `/master/redirect`), weights, quota
//!   and Raft membership.
//!
//! Every face only translates ([`mesos`] holds the message mapping) and
//! calls the call handler (`crate::handler`). A path nobody serves answers
//! 404, except a gRPC request (`content-type: application/grpc…`), which
//! gets gRPC's UNIMPLEMENTED as before.

pub(crate) mod endpoints;
pub(crate) mod mesos;
pub(crate) mod operator;
pub(crate) mod prometheus;
pub(crate) mod scheduler;

use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::error::CallError;
use crate::Master;

pub(crate) use endpoints::restore_allocator;

/// The Mesos release whose v1 HTTP APIs the master speaks, reported by
/// `/version`, `GET_VERSION` and `MasterInfo.version` (client libraries
/// compare it to decide which calls they may use).
pub(crate) const MESOS_VERSION: &str = "1.11.0";

/// Every HTTP route of the master, with the 404 fallback.
pub(crate) fn router(master: Arc<Master>) -> Router {
    Router::new()
        .merge(endpoints::router())
        .merge(scheduler::router())
        .merge(operator::router())
        .merge(crate::ui::router())
        .with_state(master)
}

/// The answer to a path nobody serves: 404, or gRPC's UNIMPLEMENTED for a
/// gRPC request (so gRPC clients still see a gRPC status).
pub(crate) async fn not_found(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/grpc"),
                (
                    header::HeaderName::from_static("grpc-status"),
                    "12", // UNIMPLEMENTED
                ),
            ],
        )
            .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("no such endpoint: {}\n", uri.path()),
    )
        .into_response()
}

/// The HTTP status that renders a refused call.
pub(crate) fn status_of(e: &CallError) -> StatusCode {
    match e {
        CallError::NotLeader { leader: Some(_) } => StatusCode::TEMPORARY_REDIRECT,
        CallError::NotLeader { leader: None } => StatusCode::SERVICE_UNAVAILABLE,
        CallError::Invalid(_) | CallError::WrongStream { .. } | CallError::Unsupported(_) => {
            StatusCode::BAD_REQUEST
        }
        CallError::NotSubscribed(_) | CallError::StaleEpoch { .. } => StatusCode::FORBIDDEN,
        CallError::LeaseLapsed => StatusCode::SERVICE_UNAVAILABLE,
        CallError::NotFound(_) => StatusCode::NOT_FOUND,
        CallError::Replication(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A refused call in Mesos' v1 API shape: the status and the message as a
/// plain-text body; a follower's 307 names the leader's `path` in
/// `Location`.
pub(crate) fn mesos_error(e: &CallError, path: &str) -> Response {
    if let CallError::NotLeader {
        leader: Some(leader),
    } = e
    {
        return redirect_to(leader, path);
    }
    (
        status_of(e),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        e.to_string(),
    )
        .into_response()
}

/// 307 to `path` on the leader.
pub(crate) fn redirect_to(leader: &str, path: &str) -> Response {
    (
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, format!("http://{leader}{path}"))],
    )
        .into_response()
}

/// A 4xx/5xx with a plain-text message (Mesos' v1 APIs answer errors so).
pub(crate) fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// The request and response encodings of a Mesos v1 API call: the body's
/// `Content-Type`, and `Accept` for the answer (default: the same).
pub(crate) fn encodings(
    headers: &HeaderMap,
) -> Result<(meseta_proto::mesos::Encoding, meseta_proto::mesos::Encoding), (StatusCode, String)> {
    use meseta_proto::mesos::Encoding;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(request) = Encoding::from_media_type(content_type) else {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expecting a Content-Type of application/json or application/x-protobuf, not {content_type:?}"),
        ));
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.is_empty() {
        return Ok((request, request));
    }
    let offered: Vec<&str> = accept.split(',').map(|s| s.trim()).collect();
    let response = offered.iter().find_map(|media| {
        let bare = media.split(';').next().unwrap_or("").trim();
        if bare == "*/*" || bare == "application/*" {
            Some(request)
        } else {
            Encoding::from_media_type(bare)
        }
    });
    match response {
        Some(r) => Ok((request, r)),
        None => Err((
            StatusCode::NOT_ACCEPTABLE,
            format!("can answer application/json or application/x-protobuf, not {accept:?}"),
        )),
    }
}
