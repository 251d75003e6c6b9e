//! `/ui/agents`: every agent with its attributes and its used (and
//! offered) against total resources.

use axum::response::Response;
use maud::html;
use meseta_webui::widgets::{ago_secs, badge, usage_bar};
use serde_json::Value;

use super::{f, polling, s, scalar, MasterState, Nav, View};

pub(super) async fn page(axum::extract::State(master): MasterState) -> Response {
    let view = View::of(&master);
    let mut agents = view.list("slaves");
    agents.sort_by_key(|a| s(a, "hostname").to_string());
    let body = html! {
        h1 { "Agents" }
        div #r-agents data-region {
            div.legend { span { i.used {} "used" } span { i.offered {} "offered" } }
            div.table-wrap {
                @if agents.is_empty() {
                    div.empty { "No agent is registered." }
                } @else {
                    table.agents {
                        thead { tr {
                            th { "Agent" } th { "Attributes" } th { "CPUs" } th { "Memory" } th.opt { "Disk" }
                            th.num { "Tasks" } th { "State" } th.opt { "Registered" }
                        } }
                        tbody {
                            @for a in &agents {
                                @let (total, used, offered) = (a.get("resources"), a.get("used_resources"), a.get("offered_resources"));
                                tr data-agent=(s(a, "id")) {
                                    td {
                                        div { strong { (s(a, "hostname")) } " " span.mono.muted { (s(a, "address")) } }
                                        div.mono.muted { (s(a, "id")) }
                                    }
                                    td {
                                        @for (k, v) in a.get("attributes").and_then(Value::as_object).into_iter().flatten() {
                                            span.chip { (k) ": " (match v { Value::String(x) => x.clone(), other => other.to_string() }) }
                                        }
                                    }
                                    @for name in ["cpus", "mem"] {
                                        td { (usage_bar(scalar(used, name), scalar(offered, name), scalar(total, name), name)) }
                                    }
                                    td.opt { (usage_bar(scalar(used, "disk"), scalar(offered, "disk"), scalar(total, "disk"), "disk")) }
                                    td.num { a href=(format!("/ui/tasks?agent={}", s(a, "id"))) { (a.get("task_count").and_then(Value::as_u64).unwrap_or(0)) } }
                                    td { @if a.get("active") == Some(&Value::Bool(true)) { (badge("running", "active")) } @else { (badge("inactive", "inactive")) } }
                                    td.opt { (ago_secs(f(a, "registered_time"))) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    view.page("Agents", Nav::Agents, polling(), body)
}
