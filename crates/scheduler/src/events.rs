//! Marathon's event bus and its `/v2/events` server-sent-events face.

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::model::{marathon_timestamp, now_millis};
use crate::Shared;

/// Fan-out of Marathon events (JSON objects with `eventType` and
/// `timestamp`) to every `/v2/events` subscriber. Slow subscribers lose the
/// oldest events rather than slowing the scheduler.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Value>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl EventBus {
    pub fn publish(&self, event: Value) {
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.tx.subscribe()
    }
}

/// `GET /v2/events?event_type=a&event_type=b`: `event: <type>` /
/// `data: <json>` frames, starting with `event_stream_attached`.
pub(crate) async fn stream(
    State(shared): State<std::sync::Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let filter: Vec<String> = params
        .into_iter()
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v)
        .collect();
    let mut rx = shared.events.subscribe();
    let remote = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let attached = json!({
        "eventType": "event_stream_attached",
        "timestamp": marathon_timestamp(now_millis()),
        "remoteAddress": remote,
    });
    let stream = async_stream::stream! {
        let wanted = |v: &Value| {
            filter.is_empty()
                || v.get("eventType").and_then(Value::as_str).is_some_and(|t| filter.iter().any(|f| f == t))
        };
        if wanted(&attached) {
            yield Ok(frame(&attached));
        }
        loop {
            match rx.recv().await {
                Ok(v) => {
                    if wanted(&v) {
                        yield Ok(frame(&v));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "an event stream subscriber fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    };
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn frame(v: &Value) -> Event {
    let kind = v
        .get("eventType")
        .and_then(Value::as_str)
        .unwrap_or("event");
    Event::default().event(kind).data(v.to_string())
}
