//! `/ui/`: the apps, as Marathon's UI lists them: a status and a health bar
//! each, filters by text, status, label and group, groups as folders, and
//! pages of [`PAGE_SIZE`] rows.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use meseta_webui::widgets::{badge, mebibytes, pager, query_prefix, trim_number, url_encode};
use serde_json::Value;

use super::{
    app_href, error_page, f, health_bar, health_legend, live_events, queue_by_app, s, Api,
    AppStatus, Nav, TaskCounts,
};

/// Rows per page of the list.
pub(super) const PAGE_SIZE: usize = 100;

/// The filters of the list, from the query.
#[derive(Debug, Clone, Default)]
pub(super) struct Filters {
    pub q: String,
    pub status: Option<AppStatus>,
    pub label: String,
    /// `/` or `/a/b` (no trailing slash).
    pub group: String,
    pub page: usize,
}

impl Filters {
    pub fn from(params: &[(String, String)]) -> Filters {
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let group = get("group");
        let group = format!("/{}", group.trim_matches('/'));
        Filters {
            q: get("q"),
            status: AppStatus::parse(&get("status")),
            label: get("label"),
            group,
            page: get("page").parse().unwrap_or(1).max(1),
        }
    }

    /// Whether any filter narrows the list (then it is flat, not folders).
    fn narrowing(&self) -> bool {
        !self.q.is_empty() || self.status.is_some() || !self.label.is_empty()
    }

    /// A link to the list with these filters and `change` applied.
    fn href(&self, change: impl FnOnce(&mut Filters)) -> String {
        let mut f = self.clone();
        f.page = 1;
        change(&mut f);
        let group = if f.group == "/" {
            String::new()
        } else {
            f.group.clone()
        };
        let status = f.status.map(AppStatus::key).unwrap_or("");
        let mut q = query_prefix(&[
            ("q", &f.q),
            ("status", status),
            ("label", &f.label),
            ("group", &group),
        ]);
        if f.page > 1 {
            q.push_str(&format!("page={}", f.page));
        }
        let q = q.trim_end_matches(['&', '?']);
        format!("/ui/{q}")
    }

    fn in_group(&self, id: &str) -> bool {
        self.group == "/" || id.starts_with(&format!("{}/", self.group))
    }
}

/// One app of the list.
struct Row<'a> {
    app: &'a Value,
    id: &'a str,
    status: AppStatus,
    counts: TaskCounts,
}

/// A folder: the apps of a subgroup, added up.
#[derive(Default)]
struct Folder {
    apps: usize,
    cpus: f64,
    mem: f64,
    counts: TaskCounts,
    statuses: BTreeMap<AppStatus, usize>,
}

enum Entry<'a> {
    Folder(String, Folder),
    App(Row<'a>),
}

fn labels_of(app: &Value) -> Vec<(String, String)> {
    app.get("labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn matches_text(app: &Value, q: &str) -> bool {
    if q.is_empty() {
        return true;
    }
    let q = q.to_lowercase();
    s(app, "id").to_lowercase().contains(&q) || s(app, "cmd").to_lowercase().contains(&q)
}

fn matches_label(app: &Value, label: &str) -> bool {
    if label.is_empty() {
        return true;
    }
    let (k, v) = match label.split_once(':') {
        Some((k, v)) => (k, Some(v)),
        None => (label, None),
    };
    labels_of(app)
        .iter()
        .any(|(lk, lv)| lk == k && v.is_none_or(|v| v == lv))
}

pub(super) async fn page(api: &Api, params: &[(String, String)]) -> Response {
    let filters = Filters::from(params);
    let (chrome, apps, queue) =
        futures::join!(api.chrome(), api.get("/v2/apps"), api.get("/v2/queue"));
    let apps = match apps {
        Ok(v) => v,
        Err(e) => return error_page(&chrome, "Applications", &e),
    };
    let queue = queue_by_app(&queue.unwrap_or(Value::Null));
    let all: Vec<Row> = apps
        .get("apps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|app| {
            let id = s(app, "id");
            Row {
                app,
                id,
                status: AppStatus::of(app, queue.get(id)),
                counts: TaskCounts::of(app),
            }
        })
        .collect();
    let scoped: Vec<&Row> = all.iter().filter(|r| filters.in_group(r.id)).collect();
    // Counts per status under the text and label filters (not the status one).
    let mut per_status: BTreeMap<AppStatus, usize> = BTreeMap::new();
    let mut labels: BTreeSet<(String, String)> = BTreeSet::new();
    for r in &scoped {
        labels.extend(labels_of(r.app));
        if matches_text(r.app, &filters.q) && matches_label(r.app, &filters.label) {
            *per_status.entry(r.status).or_default() += 1;
        }
    }
    let matching: Vec<&Row> = scoped
        .iter()
        .copied()
        .filter(|r| matches_text(r.app, &filters.q))
        .filter(|r| matches_label(r.app, &filters.label))
        .filter(|r| filters.status.is_none_or(|st| r.status == st))
        .collect();
    let entries = entries(&filters, &matching);
    let pages = entries.len().div_ceil(PAGE_SIZE).max(1);
    let page = filters.page.min(pages);
    let shown: Vec<&Entry> = entries
        .iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    let total_scoped: usize = per_status.values().sum();
    let title = if filters.group == "/" {
        "Applications".to_string()
    } else {
        filters.group.clone()
    };
    let body = html! {
        div.layout {
            aside.sidebar #r-sidebar data-region {
                h3 { "Status" }
                a href=(filters.href(|f| f.status = None)) class=[filters.status.is_none().then_some("active")] {
                    "All" span { (total_scoped) }
                }
                @for st in AppStatus::ALL {
                    a href=(filters.href(|f| f.status = Some(st))) class=[(filters.status == Some(st)).then_some("active")] {
                        (st.name()) span { (per_status.get(&st).copied().unwrap_or(0)) }
                    }
                }
                @if !labels.is_empty() {
                    h3 { "Labels" }
                    @if !filters.label.is_empty() {
                        a href=(filters.href(|f| f.label.clear())) { "any label" }
                    }
                    @for (k, v) in labels.iter().take(40) {
                        @let key = if v.is_empty() { k.clone() } else { format!("{k}:{v}") };
                        a href=(filters.href(|f| f.label = key.clone())) class=[(filters.label == key).then_some("active")] {
                            span.chip { (k) @if !v.is_empty() { ": " (v) } }
                        }
                    }
                }
            }
            section {
                (crumbs(&filters))
                h1 {
                    (title)
                    a.button.primary href=(format!("/ui/new?group={}", url_encode(&filters.group))) { "Create application" }
                }
                form.toolbar method="get" action="/ui/" data-autosubmit {
                    input type="search" name="q" value=(filters.q) placeholder="Filter by name or command" aria-label="Filter";
                    @if let Some(st) = filters.status { input type="hidden" name="status" value=(st.key()); }
                    @if !filters.label.is_empty() { input type="hidden" name="label" value=(filters.label); }
                    @if filters.group != "/" { input type="hidden" name="group" value=(filters.group); }
                    noscript { button type="submit" { "Filter" } }
                }
                div #r-apps data-region {
                    (table(&shown, &filters))
                    (health_legend())
                    (pager(&page_base(&filters), page, pages))
                }
            }
        }
    };
    chrome.page(StatusCode::OK, &title, Nav::Apps, live_events(), body)
}

fn page_base(filters: &Filters) -> String {
    let href = filters.href(|_| {});
    if href.contains('?') {
        format!("{href}&")
    } else {
        format!("{href}?")
    }
}

/// Folders (subgroups, when not narrowing) first, then apps, by id.
fn entries<'a>(filters: &Filters, matching: &[&Row<'a>]) -> Vec<Entry<'a>> {
    let mut out = Vec::new();
    if filters.narrowing() {
        let mut rows: Vec<&Row> = matching.to_vec();
        rows.sort_by_key(|r| r.id);
        out.extend(rows.into_iter().map(|r| Entry::App(clone_row(r))));
        return out;
    }
    let prefix = if filters.group == "/" {
        "/".to_string()
    } else {
        format!("{}/", filters.group)
    };
    let mut folders: BTreeMap<String, Folder> = BTreeMap::new();
    let mut apps: Vec<&Row> = Vec::new();
    for r in matching {
        let rel = r.id.strip_prefix(&prefix).unwrap_or(r.id);
        match rel.split_once('/') {
            Some((first, _)) => {
                let folder = folders.entry(format!("{prefix}{first}")).or_default();
                folder.apps += 1;
                folder.cpus += f(r.app, "cpus") * r.counts.instances as f64;
                folder.mem += f(r.app, "mem") * r.counts.instances as f64;
                folder.counts.add(&r.counts);
                *folder.statuses.entry(r.status).or_default() += 1;
            }
            None => apps.push(r),
        }
    }
    apps.sort_by_key(|r| r.id);
    out.extend(folders.into_iter().map(|(id, f)| Entry::Folder(id, f)));
    out.extend(apps.into_iter().map(|r| Entry::App(clone_row(r))));
    out
}

fn clone_row<'a>(r: &Row<'a>) -> Row<'a> {
    Row {
        app: r.app,
        id: r.id,
        status: r.status,
        counts: r.counts,
    }
}

fn crumbs(filters: &Filters) -> Markup {
    let parts: Vec<&str> = filters.group.split('/').filter(|p| !p.is_empty()).collect();
    html! {
        div.crumbs {
            a href=(filters.href(|f| f.group = "/".into())) { "Applications" }
            @for (i, p) in parts.iter().enumerate() {
                @let g = format!("/{}", parts[..=i].join("/"));
                " / " a href=(filters.href(|f| f.group = g.clone())) { (p) }
            }
        }
    }
}

fn table(entries: &[&Entry], filters: &Filters) -> Markup {
    html! {
        @if entries.is_empty() {
            div.table-wrap { div.empty {
                @if filters.narrowing() { "No application matches." }
                @else { "No applications yet. " a href="/ui/new" { "Create one" } "." }
            } }
        } @else {
            div.table-wrap {
                table.apps {
                    thead { tr {
                        th { "Name" }
                        th.num.opt { "CPU" }
                        th.num.opt { "Memory" }
                        th { "Status" }
                        th.num { "Running instances" }
                        th { "Health" }
                    } }
                    tbody {
                        @for e in entries {
                            @match e {
                                Entry::Folder(id, folder) => {
                                    tr.group {
                                        td { a.folder href=(filters.href(|f| f.group = id.clone())) { (last_segment(id)) } }
                                        td.num.opt { (trim_number(folder.cpus)) }
                                        td.num.opt { (mebibytes(folder.mem)) }
                                        td { span.muted { (folder.apps) (if folder.apps == 1 { " app" } else { " apps" }) } }
                                        td.num { (folder.counts.running) " of " (folder.counts.instances) }
                                        td { (health_bar(&folder.counts)) }
                                    }
                                }
                                Entry::App(r) => {
                                    tr.app data-app=(r.id) {
                                        td { a href=(app_href(r.id)) { (r.id) } }
                                        td.num.opt { (trim_number(f(r.app, "cpus"))) }
                                        td.num.opt { (mebibytes(f(r.app, "mem"))) }
                                        td { (badge(r.status.key(), r.status.name())) }
                                        td.num { (r.counts.running) " of " (r.counts.instances) }
                                        td { (health_bar(&r.counts)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn last_segment(id: &str) -> &str {
    id.rsplit('/').next().unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_follow_marathons_rules() {
        let app = json!({"instances": 2, "tasksRunning": 2, "deployments": []});
        assert_eq!(AppStatus::of(&app, None), AppStatus::Running);
        let app = json!({"instances": 0, "tasksRunning": 0, "deployments": []});
        assert_eq!(AppStatus::of(&app, None), AppStatus::Suspended);
        let app = json!({"instances": 1, "tasksRunning": 0, "deployments": [{"id": "d"}]});
        assert_eq!(AppStatus::of(&app, None), AppStatus::Deploying);
        let waiting = json!({"delay": {"overdue": true, "timeLeftSeconds": 0}});
        assert_eq!(AppStatus::of(&app, Some(&waiting)), AppStatus::Waiting);
        let delayed = json!({"delay": {"overdue": false, "timeLeftSeconds": 12}});
        assert_eq!(AppStatus::of(&app, Some(&delayed)), AppStatus::Delayed);
    }

    #[test]
    fn filters_read_their_query_and_link_back() {
        let params = vec![
            ("q".to_string(), "web".to_string()),
            ("status".to_string(), "running".to_string()),
            ("group".to_string(), "shop/".to_string()),
        ];
        let f = Filters::from(&params);
        assert_eq!(f.group, "/shop");
        assert_eq!(f.status, Some(AppStatus::Running));
        assert!(f.in_group("/shop/db"));
        assert!(!f.in_group("/shopping"));
        assert_eq!(
            f.href(|f| f.status = None),
            "/ui/?q=web&group=/shop".to_string()
        );
    }

    #[test]
    fn labels_filter_by_key_or_key_and_value() {
        let app = json!({"labels": {"tier": "web", "team": "a"}});
        assert!(matches_label(&app, "tier"));
        assert!(matches_label(&app, "tier:web"));
        assert!(!matches_label(&app, "tier:db"));
        assert!(matches_text(&json!({"id": "/Shop/web"}), "shop"));
    }
}
