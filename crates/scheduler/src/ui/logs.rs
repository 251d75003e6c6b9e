//! `/ui/task/{id}/stdout` and `…/stderr`: the tail of a task's output,
//! read by the scheduler through the agent's files API (a proxy: the
//! browser talks only to the scheduler, so the agent needs no CORS).

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use maud::html;
use meseta_webui::widgets::{bytes, url_encode};
use meseta_webui::Live;

use meseta_webui::widgets::percent_decode;

use super::{app_href, Api, Nav};

/// How much of the end of a file the page shows.
const TAIL_BYTES: u64 = 64 * 1024;

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default()
    })
}

pub(super) async fn page(api: &Api, rest: &str, _query: &str) -> Response {
    let chrome = api.chrome().await;
    let (task, file) = match rest.rsplit_once('/') {
        Some((t, f @ ("stdout" | "stderr"))) => (percent_decode(t), f),
        _ => {
            let body = html! { h1 { "Not found" } p { "Ask for a task's stdout or stderr." } };
            return chrome.page(
                StatusCode::NOT_FOUND,
                "Not found",
                Nav::None,
                Live::Off,
                body,
            );
        }
    };
    let master = chrome
        .mesos
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let result = async {
        let sandbox = meseta_sdk::sandbox::locate(client(), &master, &task).await?;
        sandbox.tail(client(), file, TAIL_BYTES).await
    }
    .await;
    let other = if file == "stdout" { "stderr" } else { "stdout" };
    // Marathon's task ids are `<app id with / as _>.<uuid>`.
    let app_id = task
        .split_once('.')
        .map(|(a, _)| format!("/{}", a.replace('_', "/")));
    let body = html! {
        div.crumbs {
            a href="/ui/" { "Applications" }
            @if let Some(app) = &app_id {
                " / " a href=(app_href(app)) { (app) }
            }
            " / " (task)
        }
        h1 { (file) " of " span.mono { (task) } }
        div.toolbar {
            a.button href=(format!("/ui/task/{}/{other}", url_encode(&task))) { "Show " (other) }
        }
        div #r-log data-region {
            @match &result {
                Ok((chunk, size)) => {
                    p.muted {
                        (bytes(*size))
                        @if chunk.offset > 0 { ", the last " (bytes(size - chunk.offset)) " shown" }
                        " · read through the agent's files API"
                    }
                    @if chunk.data.is_empty() {
                        pre.log { span.muted { "(empty)" } }
                    } @else {
                        pre.log { (chunk.data) }
                    }
                }
                Err(e) => div.notice { "The output cannot be read: " (e.to_string()) },
            }
        }
    };
    chrome.page(
        StatusCode::OK,
        &format!("{file} of {task}"),
        Nav::None,
        Live::Poll(2000),
        body,
    )
}
