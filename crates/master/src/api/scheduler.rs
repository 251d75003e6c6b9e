//! `POST /api/v1/scheduler`: Mesos' v1 scheduler HTTP API.
//!
//! - The body is a `mesos.v1.scheduler.Call` in JSON (`application/json`)
//!   or protobuf (`application/x-protobuf`); `Accept` picks the encoding
//!   of the answer (default: the request's).
//! - SUBSCRIBE answers `200` with a chunked stream of RecordIO-framed
//!   `mesos.v1.scheduler.Event`s and a `Mesos-Stream-Id` header; SUBSCRIBED
//!   comes first, HEARTBEAT every `heartbeat_interval_seconds`. Closing the
//!   connection disconnects the framework (its failover timeout starts).
//! - Every other call carries that `Mesos-Stream-Id` and answers `202
//!   Accepted` once applied, or `400` (malformed, unknown, unsupported),
//!   `403` (framework not subscribed) with the reason as plain text.
//! - A master that does not lead answers `307` with the leader's endpoint
//!   in `Location` (`503` while none is elected).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use meseta_proto::mesos::recordio;
use meseta_proto::mesos::v1 as m;
use tokio_stream::StreamExt as _;

use super::mesos::{call_in, event_out, framework_info_in};
use super::{encodings, mesos_error, plain};
use crate::error::CallError;
use crate::handler::SubscribeRequest;
use crate::Master;

/// The endpoint's path.
pub(crate) const PATH: &str = "/api/v1/scheduler";
/// The header naming a subscription.
pub(crate) const STREAM_ID: &str = "mesos-stream-id";

pub(crate) fn router() -> Router<Arc<Master>> {
    Router::new().route(PATH, post(scheduler))
}

async fn scheduler(State(master): State<Arc<Master>>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, response) = match encodings(&headers) {
        Ok(e) => e,
        Err((status, message)) => return plain(status, message),
    };
    if let Err(e) = master.leading() {
        return mesos_error(&e, PATH);
    }
    let call: m::scheduler::Call = match request.decode(&body) {
        Ok(c) => c,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!("failed to parse the call: {e}"),
            )
        }
    };
    let stream_id = headers.get(STREAM_ID).and_then(|v| v.to_str().ok());
    if call.r#type() == m::scheduler::call::Type::Subscribe {
        if stream_id.is_some() {
            return plain(
                StatusCode::BAD_REQUEST,
                "a SUBSCRIBE call must not carry a Mesos-Stream-Id header",
            );
        }
        return subscribe(master, call, response).await;
    }
    let Some(stream_id) = stream_id.map(str::to_string) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "every call but SUBSCRIBE must carry the Mesos-Stream-Id header of the framework's subscription",
        );
    };
    let Some(framework_id) = call.framework_id.as_ref().map(|f| f.value.clone()) else {
        return plain(StatusCode::BAD_REQUEST, "the call has no framework_id");
    };
    let kind = call.r#type();
    let translated = match call_in(call) {
        Ok(c) => c,
        Err(e) => return mesos_error(&e, PATH),
    };
    if let Some(call) = translated {
        if let Err(e) = master
            .framework_call(
                &framework_id,
                crate::handler::Caller::Stream(&stream_id),
                call,
            )
            .await
        {
            tracing::debug!(framework = %framework_id, call = kind.as_str_name(), error = %e, "scheduler call refused");
            return mesos_error(&e, PATH);
        }
    }
    StatusCode::ACCEPTED.into_response()
}

async fn subscribe(
    master: Arc<Master>,
    call: m::scheduler::Call,
    encoding: meseta_proto::mesos::Encoding,
) -> Response {
    let Some(subscribe) = call.subscribe else {
        return plain(
            StatusCode::BAD_REQUEST,
            "a SUBSCRIBE call must carry 'subscribe'",
        );
    };
    let info = match framework_info_in(&subscribe.framework_info) {
        Ok(i) => i,
        Err(e) => return mesos_error(&e, PATH),
    };
    let role = info.role.clone();
    let request = SubscribeRequest {
        framework_id: call.framework_id.map(|f| f.value).filter(|v| !v.is_empty()),
        info,
        suppressed_roles: subscribe.suppressed_roles,
        epoch: 0,
    };
    let subscription = match master.subscribe(request).await {
        Ok(s) => s,
        Err(e) => return mesos_error(&e, PATH),
    };
    let Ok(stream_header) = HeaderValue::from_str(&subscription.stream_id) else {
        return mesos_error(
            &CallError::Invalid("the stream id is not a header value".into()),
            PATH,
        );
    };
    let role = if role.is_empty() {
        "*".to_string()
    } else {
        role
    };
    let framework_id = subscription.framework_id.clone();
    let frames = subscription
        .events
        .map_while(|item| item.ok())
        .filter_map(move |event| {
            let out = event_out(&event, &role)?;
            match encoding.encode(&out) {
                Ok(bytes) => Some(Ok::<_, Infallible>(Bytes::from(recordio::frame(&bytes)))),
                Err(e) => {
                    tracing::error!(framework = %framework_id, error = %e, "an event could not be encoded; skipped");
                    None
                }
            }
        });
    let mut response = Response::new(Body::from_stream(frames));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    h.insert(STREAM_ID, stream_header);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
