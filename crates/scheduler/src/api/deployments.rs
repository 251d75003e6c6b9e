//! `/v2/deployments`: list, roll back, stop.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use super::{deployment_response, engine_error, flag, persisted};
use crate::Shared;

pub(super) async fn list(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let engine = shared.engine();
    Json(Value::Array(
        engine
            .deployments()
            .iter()
            .map(|d| engine.deployment_json(d))
            .collect(),
    ))
}

/// `DELETE /v2/deployments/{id}`: roll back (200 with the rollback's
/// deployment), or with `?force=true` stop it (202).
pub(super) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let force = flag(&params, "force").unwrap_or(false);
    persisted(&shared, |engine| {
        match engine.delete_deployment(&id, force) {
            Ok(o) => {
                let status = if force {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                };
                (
                    deployment_response(status, &o.deployment_id, o.version),
                    o.actions,
                )
            }
            Err(e) => (engine_error(e), Vec::new()),
        }
    })
    .await
}
