//! The app editor (`/ui/new`, `/ui/edit/{id}`): a form for the common
//! fields and a JSON editor for all of them, kept in step by the page's
//! script. Creating POSTs the JSON to `/v2/apps`; editing sends what
//! changed to [`save`]. The API validates; its 422 `details` are shown next
//! to the fields they name (the rest under the JSON).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use meseta_webui::widgets::url_encode;
use meseta_webui::Live;
use serde_json::{json, Value};

use super::secrets::restore;
use super::view::{app_id, definition};
use super::{app_href, error_page, Api, Nav};

/// One field of the form: the JSON key it edits, how, and its label.
struct Field {
    key: &'static str,
    kind: &'static str,
    label: &'static str,
    hint: &'static str,
    wide: bool,
}

const FIELDS: [Field; 10] = [
    Field {
        key: "id",
        kind: "text",
        label: "ID",
        hint: "e.g. /shop/web: lower-case letters, digits, dashes; / separates groups",
        wide: false,
    },
    Field {
        key: "cmd",
        kind: "text",
        label: "Command",
        hint: "run by sh -c; $PORT0 is the first port",
        wide: true,
    },
    Field {
        key: "cpus",
        kind: "number",
        label: "CPUs",
        hint: "",
        wide: false,
    },
    Field {
        key: "mem",
        kind: "number",
        label: "Memory (MiB)",
        hint: "",
        wide: false,
    },
    Field {
        key: "disk",
        kind: "number",
        label: "Disk (MiB)",
        hint: "",
        wide: false,
    },
    Field {
        key: "instances",
        kind: "number",
        label: "Instances",
        hint: "",
        wide: false,
    },
    Field {
        key: "container",
        kind: "docker",
        label: "Docker image",
        hint: "empty: the command runs in the agent's own containerizer",
        wide: false,
    },
    Field {
        key: "portDefinitions",
        kind: "ports",
        label: "Ports",
        hint: "comma-separated; 0 picks a free port",
        wide: false,
    },
    Field {
        key: "labels",
        kind: "lines",
        label: "Labels",
        hint: "one KEY=value a line",
        wide: false,
    },
    Field {
        key: "env",
        kind: "lines",
        label: "Environment",
        hint: "one NAME=value a line; secret-looking values stay hidden",
        wide: false,
    },
];

/// The constraints field comes last (it is wide).
const CONSTRAINTS: Field = Field {
    key: "constraints",
    kind: "constraints",
    label: "Constraints",
    hint: "one a line: field:OPERATOR[:value], e.g. hostname:UNIQUE",
    wide: true,
};

fn field(f: &Field) -> Markup {
    let id = format!("field-{}", f.key);
    let classes = if f.wide { "field wide" } else { "field" };
    html! {
        div class=(classes) {
            label for=(id) { (f.label) }
            @match f.kind {
                "lines" | "constraints" => textarea #(id) data-field=(f.key) data-kind=(f.kind) {},
                "number" => input #(id) type="number" step="any" min="0" data-field=(f.key) data-kind=(f.kind);,
                _ => input #(id) type="text" data-field=(f.key) data-kind=(f.kind) autocomplete="off";,
            }
            @if !f.hint.is_empty() { span.hint { (f.hint) } }
            span.field-error {}
        }
    }
}

/// The form; `doc` is the JSON it starts from.
fn editor(
    method: &str,
    url: &str,
    doc: &Value,
    original: Option<&Value>,
    submit: &str,
    go: Option<&str>,
) -> Markup {
    let pretty = serde_json::to_string_pretty(doc).unwrap_or_else(|_| "{}".into());
    html! {
        // The API validates (and says why, next to the fields): the
        // browser's own checks would stop a submit silently.
        form #app-editor novalidate data-method=(method) data-url=(url) data-done="Saved"
            data-original=[original.map(Value::to_string)] data-go=[go] {
            div.panel {
                div.form-grid {
                    @for f in &FIELDS { (field(f)) }
                    (field(&CONSTRAINTS))
                }
            }
            div.panel {
                div.field.wide {
                    label for="app-json" { "JSON (every field of a Marathon app definition)" }
                    textarea #app-json .json name="json" spellcheck="false" { (pretty) }
                    span #json-status .field-error {}
                    pre #json-errors .field-error {}
                }
            }
            div.toolbar {
                button.primary type="submit" { (submit) }
                a.button href="/ui/" { "Cancel" }
            }
        }
    }
}

pub(super) async fn create_page(api: &Api, params: &[(String, String)]) -> Response {
    let chrome = api.chrome().await;
    let group = params
        .iter()
        .find(|(k, _)| k == "group")
        .map(|(_, v)| v.trim_matches('/').to_string())
        .unwrap_or_default();
    let id = if group.is_empty() {
        "/".to_string()
    } else {
        format!("/{group}/")
    };
    let doc = json!({"id": id, "cmd": "", "cpus": 0.1, "mem": 128, "disk": 0, "instances": 1});
    let body = html! {
        div.crumbs { a href="/ui/" { "Applications" } " / new" }
        h1 { "Create application" }
        (editor("POST", "/v2/apps", &doc, None, "Create application", None))
    };
    chrome.page(
        StatusCode::OK,
        "Create application",
        Nav::Apps,
        Live::Off,
        body,
    )
}

pub(super) async fn edit_page(api: &Api, raw_id: &str) -> Response {
    let id = app_id(raw_id);
    let enc = url_encode(&id);
    let path = format!("/v2/apps{enc}");
    let (chrome, app) = futures::join!(api.chrome(), api.get(&path));
    let app = match app {
        Ok(v) => v.get("app").cloned().unwrap_or(Value::Null),
        Err(e) => return error_page(&chrome, &id, &e),
    };
    let doc = definition(&app);
    let go = app_href(&id);
    let body = html! {
        div.crumbs { a href="/ui/" { "Applications" } " / " a href=(go) { (id) } " / edit" }
        h1 { "Edit " (id) }
        p.muted { "Only what you change is sent (a partial update); a change of the command, resources or environment restarts the tasks." }
        (editor("PUT", &format!("/ui/api/apps{enc}"), &doc, Some(&doc), "Save and deploy", Some(&go)))
    };
    chrome.page(
        StatusCode::OK,
        &format!("Edit {id}"),
        Nav::Apps,
        Live::Off,
        body,
    )
}

/// `PUT /ui/api/apps/{id}`: an edit from the editor. Values the user left
/// hidden ([`super::secrets::MASK`]) are put back from the current
/// definition, then the update goes to `PUT /v2/apps/{id}` and its answer
/// comes back unchanged.
pub(super) async fn save(api: &Api, raw_id: &str, query: &str, req: Request) -> Response {
    let id = app_id(raw_id);
    let enc = url_encode(&id);
    let body = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
        Ok(b) => b,
        Err(e) => return super::super::api::message(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut update: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [e.to_string()]}]})),
            )
                .into_response()
        }
    };
    if update.get("env").is_some() || update.get("secrets").is_some() {
        match api.get(&format!("/v2/apps{enc}")).await {
            Ok(current) => restore(&mut update, current.get("app").unwrap_or(&Value::Null)),
            Err(e) => return super::super::api::message(e.status, e.message),
        }
    }
    let uri = if query.is_empty() {
        format!("/v2/apps{enc}")
    } else {
        format!("/v2/apps{enc}?{query}")
    };
    let forward = Request::builder()
        .method(Method::PUT)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(update.to_string()));
    let forward = match forward {
        Ok(r) => r,
        Err(e) => return super::super::api::message(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (status, body) = api.send(forward).await;
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
