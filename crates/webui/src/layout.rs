//! The page every UI view is rendered into: a header with the product's
//! navigation, a flash area for the answers to actions, and the view.
//!
//! Elements with `data-region` and an `id` are what live updates replace:
//! the script fetches the page again and swaps each region for its fresh
//! rendering (see `assets/meseta.js`).

use maud::{html, Markup, DOCTYPE};

use crate::assets;

/// How a page stays current.
#[derive(Debug, Clone)]
pub enum Live {
    /// Not at all (forms being edited).
    Off,
    /// Refreshed after each server-sent event from this URL (and every
    /// `fallback_ms`, for changes no event announces).
    Events { url: String, fallback_ms: u32 },
    /// Refreshed every so many milliseconds.
    Poll(u32),
}

/// One entry of the header's navigation.
#[derive(Debug, Clone)]
pub struct NavItem {
    pub label: String,
    pub href: String,
    pub active: bool,
    /// A count shown beside the label (e.g. deployments under way).
    pub badge: Option<usize>,
}

impl NavItem {
    pub fn new(label: &str, href: &str, active: bool) -> NavItem {
        NavItem {
            label: label.to_string(),
            href: href.to_string(),
            active,
            badge: None,
        }
    }

    pub fn with_badge(mut self, n: usize) -> NavItem {
        self.badge = (n > 0).then_some(n);
        self
    }
}

/// A whole page.
pub struct Page {
    /// The `<title>` (the product is appended).
    pub title: String,
    /// "Marathon" or "Mesos".
    pub product: &'static str,
    /// Where the brand links to.
    pub home: String,
    pub nav: Vec<NavItem>,
    /// Right side of the header (leader, links to the other UI).
    pub aside: Markup,
    pub live: Live,
    pub body: Markup,
}

impl Page {
    pub fn render(self) -> Markup {
        let (mode, events, interval) = match &self.live {
            Live::Off => ("off", String::new(), 0),
            Live::Events { url, fallback_ms } => ("events", url.clone(), *fallback_ms),
            Live::Poll(ms) => ("poll", String::new(), *ms),
        };
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · " (self.product) }
                    link rel="stylesheet" href=(assets::CSS_PATH);
                    script src=(assets::JS_PATH) defer {}
                }
                body data-live=(mode) data-events=(events) data-interval=(interval) {
                    header.top {
                        a.brand href=(self.home) {
                            span.logo { "meseta" }
                            span.product { (self.product) }
                        }
                        nav #r-nav data-region {
                            @for item in &self.nav {
                                a href=(item.href) class=[item.active.then_some("active")] {
                                    (item.label)
                                    @if let Some(n) = item.badge {
                                        span.count { (n) }
                                    }
                                }
                            }
                        }
                        div.aside {
                            (self.aside)
                            @if mode != "off" {
                                span #live-status .live-status title="Updates arrive without reloading" { "live" }
                            }
                        }
                    }
                    div #flash .flash hidden {}
                    main { (self.body) }
                }
            }
        }
    }
}
