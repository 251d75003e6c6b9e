//! `/ui/tasks`: active tasks, then completed ones, filtered by text, agent
//! or framework, in pages; each links to its sandbox.

use axum::response::Response;
use maud::html;
use meseta_webui::widgets::{ago_secs, amount, badge, pager, query_prefix};

use super::{
    file_href, param, polling, s, sandbox_href, scalar, task_time, MasterState, Nav, Params, View,
};

/// Rows per page.
const PAGE_SIZE: usize = 100;

pub(super) async fn page(
    axum::extract::State(master): MasterState,
    axum::extract::Query(params): Params,
) -> Response {
    let view = View::of(&master);
    let q = param(&params, "q").to_lowercase();
    let agent = param(&params, "agent");
    let framework = param(&params, "framework");
    let mut tasks: Vec<_> = view
        .tasks()
        .into_iter()
        .filter(|(_, t)| agent.is_empty() || s(t, "slave_id") == agent)
        .filter(|(fw, _)| framework.is_empty() || s(fw, "id") == framework)
        .filter(|(_, t)| {
            q.is_empty()
                || s(t, "id").to_lowercase().contains(&q)
                || s(t, "name").to_lowercase().contains(&q)
                || s(t, "state").to_lowercase().contains(&q)
        })
        .collect();
    let active = |st: &str| {
        matches!(
            st,
            "TASK_RUNNING" | "TASK_STAGING" | "TASK_STARTING" | "TASK_KILLING"
        )
    };
    tasks.sort_by(|(_, a), (_, b)| {
        active(s(b, "state"))
            .cmp(&active(s(a, "state")))
            .then(task_time(b).total_cmp(&task_time(a)))
    });
    let pages = tasks.len().div_ceil(PAGE_SIZE).max(1);
    let page = param(&params, "page").parse().unwrap_or(1).clamp(1, pages);
    let base = query_prefix(&[
        ("q", param(&params, "q")),
        ("agent", agent),
        ("framework", framework),
    ]);
    let body = html! {
        h1 { "Tasks" }
        form.toolbar method="get" action="/ui/tasks" data-autosubmit {
            input type="search" name="q" value=(param(&params, "q")) placeholder="Filter by id, name or state" aria-label="Filter";
            @if !agent.is_empty() { input type="hidden" name="agent" value=(agent); span.chip { "agent " (agent) } }
            @if !framework.is_empty() { input type="hidden" name="framework" value=(framework); span.chip { "framework " (framework) } }
            @if !agent.is_empty() || !framework.is_empty() { a href="/ui/tasks" { "all tasks" } }
        }
        div #r-tasks data-region {
            div.table-wrap {
                @if tasks.is_empty() {
                    div.empty { "No task." }
                } @else {
                    table.tasks {
                        thead { tr {
                            th { "Task" } th { "State" } th.opt { "Framework" } th { "Agent" } th.num.opt { "CPUs" } th.num.opt { "Memory" }
                            th { "Since" } th { "Sandbox" }
                        } }
                        tbody {
                            @for (fw, t) in tasks.iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE) {
                                @let agent = view.agent(s(t, "slave_id"));
                                tr data-task=(s(t, "id")) {
                                    td { div { (s(t, "name")) } div.mono.muted { (s(t, "id")) } }
                                    td { (badge(s(t, "state"), s(t, "state"))) }
                                    td.opt { (s(fw, "name")) }
                                    td { @match agent { Some(a) => span.mono { (s(a, "hostname")) } , None => span.muted { (s(t, "slave_id")) } } }
                                    td.num.opt { (amount(scalar(t.get("resources"), "cpus"), "")) }
                                    td.num.opt { (amount(scalar(t.get("resources"), "mem"), "mem")) }
                                    td.nowrap { (ago_secs(task_time(t))) }
                                    td.nowrap {
                                        a href=(sandbox_href(s(t, "id"), "")) { "browse" } " · "
                                        a href=(file_href(s(t, "id"), "stdout")) { "stdout" } " · "
                                        a href=(file_href(s(t, "id"), "stderr")) { "stderr" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (pager(&base, page, pages))
        }
    };
    view.page("Tasks", Nav::Tasks, polling(), body)
}
