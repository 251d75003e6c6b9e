//! `/ui/frameworks`: frameworks with their allocation and dominant share,
//! and roles with their weights, quota and shares.

use axum::response::Response;
use maud::html;
use meseta_webui::widgets::{ago_secs, amount, badge, trim_number};
use serde_json::Value;

use super::{f, polling, s, scalar, MasterState, Nav, View};

fn percent(share: f64) -> String {
    format!("{}%", trim_number(share * 100.0))
}

pub(super) async fn page(axum::extract::State(master): MasterState) -> Response {
    let view = View::of(&master);
    let frameworks = view.list("frameworks");
    let roles = view.list("roles");
    let body = html! {
        h1 { "Frameworks & roles" }
        div #r-frameworks data-region {
            h2 { "Frameworks" }
            div.table-wrap {
                @if frameworks.is_empty() {
                    div.empty { "No framework is subscribed." }
                } @else {
                    table.frameworks {
                        thead { tr {
                            th { "Framework" } th { "Role" } th.opt { "User" } th { "State" } th.num { "Tasks" }
                            th.num { "CPUs" } th.num { "Memory" } th.num { "Dominant share" } th.opt { "Registered" }
                        } }
                        tbody {
                            @for fw in &frameworks {
                                @let alloc = fw.get("allocated_resources");
                                tr data-framework=(s(fw, "id")) {
                                    td {
                                        div {
                                            @if s(fw, "webui_url").is_empty() { strong { (s(fw, "name")) } }
                                            @else { a href=(s(fw, "webui_url")) { strong { (s(fw, "name")) } } }
                                        }
                                        div.mono.muted { (s(fw, "id")) }
                                    }
                                    td { (s(fw, "role")) }
                                    td.opt { (s(fw, "user")) }
                                    td {
                                        @if fw.get("active") == Some(&Value::Bool(true)) { (badge("running", "active")) } @else { (badge("inactive", "inactive")) }
                                        @if fw.get("suppressed") == Some(&Value::Bool(true)) { " " (badge("suspended", "suppressed")) }
                                    }
                                    td.num { a href=(format!("/ui/tasks?framework={}", s(fw, "id"))) { (fw.get("tasks").and_then(Value::as_array).map_or(0, Vec::len)) } }
                                    td.num { (amount(scalar(alloc, "cpus"), "")) }
                                    td.num { (amount(scalar(alloc, "mem"), "mem")) }
                                    td.num { (percent(f(fw, "dominant_share"))) }
                                    td.opt { (ago_secs(f(fw, "registered_time"))) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Roles" }
            div.table-wrap {
                @if roles.is_empty() {
                    div.empty { "No role has frameworks, weights or quota." }
                } @else {
                    table.roles {
                        thead { tr {
                            th { "Role" } th.num { "Weight" } th.num { "Frameworks" } th.num { "CPUs" } th.num { "Memory" }
                            th.num { "Dominant share" } th.num { "Weighted share" } th { "Quota (guarantee)" }
                        } }
                        tbody {
                            @for r in &roles {
                                @let alloc = r.get("allocated");
                                tr data-role=(s(r, "name")) {
                                    td { strong { (s(r, "name")) } }
                                    td.num { (trim_number(f(r, "weight"))) }
                                    td.num { (r.get("frameworks").and_then(Value::as_array).map_or(0, Vec::len)) }
                                    td.num { (amount(scalar(alloc, "cpus"), "")) }
                                    td.num { (amount(scalar(alloc, "mem"), "mem")) }
                                    td.num { (percent(f(r, "dominant_share"))) }
                                    td.num { (percent(f(r, "weighted_share"))) }
                                    td {
                                        @match r.pointer("/quota/guarantee") {
                                            Some(g) if g.is_object() => {
                                                @for (k, v) in g.as_object().into_iter().flatten() {
                                                    @if v.as_f64().unwrap_or(0.0) > 0.0 {
                                                        span.chip { (k) ": " (amount(v.as_f64().unwrap_or(0.0), k)) }
                                                    }
                                                }
                                            }
                                            _ => span.muted { "none" },
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    view.page("Frameworks & roles", Nav::Frameworks, polling(), body)
}
