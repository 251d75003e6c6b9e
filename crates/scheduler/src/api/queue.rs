//! `/v2/queue`: what each app still waits to launch, and why.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{embeds, engine_error, message, persisted};
use crate::model::{marathon_timestamp, now_millis, render_app, PathId};
use crate::Shared;

/// `GET /v2/queue[?embed=lastUnusedOffers]`.
pub(super) async fn list(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Json<Value> {
    let with_offers = embeds(&params).contains("lastUnusedOffers");
    let engine = shared.engine();
    let now = Instant::now();
    let queue: Vec<Value> = engine
        .apps()
        .filter_map(|app| {
            let id = app.id.to_string();
            let needs = engine.needs(&id);
            if needs.launch == 0 {
                return None;
            }
            let left = engine
                .backoff(&id)
                .and_then(|b| b.not_before)
                .map(|t| t.saturating_duration_since(now).as_secs())
                .unwrap_or(0);
            let stats = engine.launch_stats(&id);
            let mut entry = json!({
                "count": needs.launch,
                "delay": {"overdue": left == 0, "timeLeftSeconds": left},
                "app": Value::Object(render_app(app)),
                "since": marathon_timestamp(stats.map(|s| s.since).or(app.version).unwrap_or_else(now_millis)),
                "processedOffersSummary": stats.map(|s| s.summary_json()).unwrap_or_else(|| json!({
                    "processedOffersCount": 0, "unusedOffersCount": 0,
                    "rejectSummaryLastOffers": [], "rejectSummaryLaunchAttempt": [],
                })),
            });
            if with_offers {
                entry["lastUnusedOffers"] =
                    stats.map(|s| s.last_unused_json()).unwrap_or_else(|| json!([]));
            }
            Some(entry)
        })
        .collect();
    Json(json!({"queue": queue}))
}

/// `DELETE /v2/queue/{app}/delay`: the app's launch backoff is reset.
pub(super) async fn reset_delay(
    State(shared): State<Arc<Shared>>,
    Path(rest): Path<String>,
) -> Response {
    let Some(app) = rest.trim_end_matches('/').strip_suffix("/delay") else {
        return message(
            StatusCode::NOT_FOUND,
            format!("/v2/queue/{rest} does not exist"),
        );
    };
    let id = PathId::new(app);
    persisted(&shared, |engine| match engine.reset_delay(&id) {
        Ok(actions) => (StatusCode::NO_CONTENT.into_response(), actions),
        Err(e) => (engine_error(e), Vec::new()),
    })
    .await
}
