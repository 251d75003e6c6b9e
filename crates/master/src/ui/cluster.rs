//! `/`: the cluster at a glance.

use axum::response::Response;
use maud::html;
use meseta_webui::widgets::{ago_secs, amount, badge, usage_bar};
use serde_json::Value;

use super::{polling, s, scalar, MasterState, Nav, View};

pub(super) async fn page(axum::extract::State(master): MasterState) -> Response {
    let view = View::of(&master);
    let agents = view.list("slaves");
    let frameworks = view.list("frameworks");
    let tasks = view.tasks();
    let active_tasks = tasks
        .iter()
        .filter(|(_, t)| {
            matches!(
                s(t, "state"),
                "TASK_RUNNING" | "TASK_STAGING" | "TASK_STARTING" | "TASK_KILLING"
            )
        })
        .count();
    let sum =
        |key: &str, name: &str| -> f64 { agents.iter().map(|a| scalar(a.get(key), name)).sum() };
    let m = &view.membership;
    let leader = view.leader().to_string();
    let learners: Vec<u64> = m
        .get("learners")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let me = m.get("id").and_then(Value::as_u64).unwrap_or(0);
    let mut peers: Vec<(u64, String)> = m
        .get("peers")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    peers.sort();
    let body = html! {
        h1 { "Cluster" }
        div #r-cluster data-region {
            div.grid {
                div.stat { div.label { "Leader" } div.value.mono { @if leader.is_empty() { "none" } @else { (leader) } } }
                div.stat { div.label { "Agents" } div.value { (agents.iter().filter(|a| a.get("active") == Some(&Value::Bool(true))).count()) " active" span.muted { " of " (agents.len()) } } }
                div.stat { div.label { "Frameworks" } div.value { (frameworks.len()) } }
                div.stat { div.label { "Tasks" } div.value { (active_tasks) " active" span.muted { " · " (tasks.len() - active_tasks) " completed" } } }
            }
            div.panel {
                h2 { "Resources" }
                div.legend { span { i.used {} "used" } span { i.offered {} "offered" } }
                div.table-wrap { table {
                    thead { tr { th { "" } th { "Allocated (used + offered) of total" } th.num { "Total" } th.num { "Used" } th.num { "Offered" } th.num { "Idle" } } }
                    tbody {
                        @for (name, label) in [("cpus", "CPUs"), ("mem", "Memory"), ("disk", "Disk"), ("gpus", "GPUs")] {
                            @let (total, used, offered) = (sum("resources", name), sum("used_resources", name), sum("offered_resources", name));
                            @if total > 0.0 || name != "gpus" {
                                tr data-resource=(name) {
                                    td { (label) }
                                    td { (usage_bar(used, offered, total, name)) }
                                    td.num { (amount(total, name)) }
                                    td.num { (amount(used, name)) }
                                    td.num { (amount(offered, name)) }
                                    td.num { (amount((total - used - offered).max(0.0), name)) }
                                }
                            }
                        }
                    }
                } }
            }
            div.panel {
                h2 { "Masters" }
                div.table-wrap { table.masters {
                    thead { tr { th { "Raft id" } th { "Address" } th { "Role" } th { "" } } }
                    tbody {
                        @for (id, addr) in &peers {
                            @let role = if *addr == leader { "leader" } else if learners.contains(id) { "learner" } else { "follower" };
                            tr {
                                td { (id) }
                                td.mono { a href=(format!("http://{addr}/")) { (addr) } }
                                td { (badge(role, role)) }
                                td.muted { @if *id == me { "this master" } }
                            }
                        }
                    }
                } }
                p.muted { "This master started " (ago_secs(view.state.get("start_time").and_then(Value::as_f64).unwrap_or(0.0))) ", version " (s(&view.state, "version")) "." }
            }
        }
    };
    view.page("Cluster", Nav::Cluster, polling(), body)
}
