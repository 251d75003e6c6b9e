//! What `GET /v2/apps/{id}` returns for the definition part of an app.
//!
//! Marathon 1.10's form with defaults filled in, as clients expect it (see
//! MARATHON-WIRE.md): `env`, `labels`, `constraints`, `uris`, `fetch`,
//! `healthChecks`, `dependencies`, `portDefinitions` and `ports` are always
//! present (empty when unset); `cmd`, `args`, `user`, `container`,
//! `readinessChecks`, `secrets`, `acceptedResourceRoles`, `residency`,
//! `taskKillGracePeriodSeconds`, `storeUrls` and the newer optional fields
//! (`role`, `tty`, `resourceLimits`, `check`, `executorResources`) only when
//! set. The API layer adds the run-time fields (`tasksRunning`, `tasks`, …).

use serde::Serialize;
use serde_json::{Map, Value};

use super::app::AppDefinition;
use super::timestamp::marathon_timestamp;

fn to_value<T: Serialize>(v: &T) -> Value {
    // Serializing our own plain data types into a Value cannot fail: no
    // non-string map keys, no custom serializer that errors.
    serde_json::to_value(v).expect("model types serialize to JSON")
}

/// The app as a JSON object, every default filled in. Deterministic: the
/// same definition always renders the same object; parsing it back with
/// [`crate::model::parse_app_definition`] yields an equal rendering.
pub fn render_app(app: &AppDefinition) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    put("id", Value::String(app.id.to_string()));
    if let Some(cmd) = &app.cmd {
        put("cmd", Value::String(cmd.clone()));
    }
    if !app.args.is_empty() {
        put("args", to_value(&app.args));
    }
    if let Some(user) = &app.user {
        put("user", Value::String(user.clone()));
    }
    put("env", to_value(&app.env));
    put("instances", to_value(&app.instances));
    put("cpus", to_value(&app.cpus));
    put("mem", to_value(&app.mem));
    put("disk", to_value(&app.disk));
    put("gpus", to_value(&app.gpus));
    put("executor", Value::String(app.executor.clone()));
    put("constraints", to_value(&app.constraints));
    put(
        "uris",
        Value::Array(
            app.fetch
                .iter()
                .map(|f| Value::String(f.uri.clone()))
                .collect(),
        ),
    );
    put("fetch", to_value(&app.fetch));
    if !app.store_urls.is_empty() {
        put("storeUrls", to_value(&app.store_urls));
    }
    put("backoffSeconds", to_value(&app.backoff_seconds));
    put("backoffFactor", to_value(&app.backoff_factor));
    put(
        "maxLaunchDelaySeconds",
        to_value(&app.max_launch_delay_seconds),
    );
    if let Some(c) = &app.container {
        put("container", to_value(c));
    }
    put("healthChecks", to_value(&app.health_checks));
    if !app.readiness_checks.is_empty() {
        put("readinessChecks", to_value(&app.readiness_checks));
    }
    put(
        "dependencies",
        Value::Array(
            app.dependencies
                .iter()
                .map(|d| Value::String(d.to_string()))
                .collect(),
        ),
    );
    put("upgradeStrategy", to_value(&app.upgrade_strategy));
    put("labels", to_value(&app.labels));
    if !app.accepted_resource_roles.is_empty() {
        put(
            "acceptedResourceRoles",
            to_value(&app.accepted_resource_roles),
        );
    }
    put("networks", to_value(&app.networks));
    put("portDefinitions", to_value(&app.port_definitions));
    put("ports", to_value(&app.service_ports()));
    put("requirePorts", Value::Bool(app.require_ports));
    if let Some(r) = &app.residency {
        put("residency", r.clone());
    }
    if !app.secrets.is_empty() {
        put("secrets", to_value(&app.secrets));
    }
    if let Some(t) = app.task_kill_grace_period_seconds {
        put("taskKillGracePeriodSeconds", to_value(&t));
    }
    put("unreachableStrategy", to_value(&app.unreachable_strategy));
    put("killSelection", to_value(&app.kill_selection));
    if let Some(v) = app.version {
        put("version", Value::String(marathon_timestamp(v)));
    }
    if let Some(vi) = &app.version_info {
        put("versionInfo", to_value(vi));
    }
    if let Some(r) = &app.role {
        put("role", Value::String(r.clone()));
    }
    if let Some(t) = app.tty {
        put("tty", Value::Bool(t));
    }
    if let Some(x) = &app.resource_limits {
        put("resourceLimits", x.clone());
    }
    if let Some(x) = &app.check {
        put("check", x.clone());
    }
    if let Some(x) = &app.executor_resources {
        put("executorResources", x.clone());
    }
    m
}
