//! Small pieces of markup the pages share: stacked bars (SVG, so no inline
//! style is needed under the CSP), usage bars, badges, a pager, times and
//! sizes.

use maud::{html, Markup};

/// One part of a stacked bar: a CSS class (its colour), a count and what it
/// means.
#[derive(Debug, Clone)]
pub struct Segment {
    pub class: &'static str,
    pub count: f64,
    pub label: String,
}

impl Segment {
    pub fn new(class: &'static str, count: f64, label: impl Into<String>) -> Segment {
        Segment {
            class,
            count,
            label: label.into(),
        }
    }
}

/// A horizontal bar of `segments` out of `total` (the rest stays empty).
/// Its tooltip (`<title>`) lists every non-empty segment.
pub fn stacked_bar(segments: &[Segment], total: f64) -> Markup {
    let sum: f64 = segments.iter().map(|s| s.count.max(0.0)).sum();
    let total = total.max(sum);
    let mut x = 0.0;
    let parts: Vec<(&Segment, f64, f64)> = segments
        .iter()
        .filter(|s| s.count > 0.0 && total > 0.0)
        .map(|s| {
            let w = s.count / total * 100.0;
            let at = x;
            x += w;
            (s, at, w)
        })
        .collect();
    let tooltip: Vec<String> = segments
        .iter()
        .filter(|s| s.count > 0.0)
        .map(|s| format!("{} {}", trim_number(s.count), s.label))
        .collect();
    let tooltip = if tooltip.is_empty() {
        "nothing".to_string()
    } else {
        tooltip.join(", ")
    };
    html! {
        svg.bar viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label=(tooltip) {
            title { (tooltip) }
            rect.track x="0" y="0" width="100" height="10" {}
            @for (s, at, w) in &parts {
                rect class=(s.class) x=(format!("{at:.3}")) y="0" width=(format!("{w:.3}")) height="10" {}
            }
        }
    }
}

/// `used` of `total` as a bar with the figures beside it (`1.5 / 4 cpus`),
/// optionally with a second, lighter part (`offered`).
pub fn usage_bar(used: f64, offered: f64, total: f64, unit: &str) -> Markup {
    let mut segments = vec![Segment::new("seg-used", used, "used")];
    if offered > 0.0 {
        segments.push(Segment::new("seg-offered", offered, "offered"));
    }
    html! {
        div.usage {
            (stacked_bar(&segments, total))
            span.figures { (amount(used, unit)) " / " (amount(total, unit)) }
        }
    }
}

/// A figure with its unit: memory and disk (MiB) in MiB/GiB, the rest as is.
pub fn amount(value: f64, unit: &str) -> String {
    match unit {
        "mem" | "disk" | "MiB" => mebibytes(value),
        "" => trim_number(value),
        u => format!("{} {u}", trim_number(value)),
    }
}

/// MiB as `512 MiB` or `1.5 GiB`.
pub fn mebibytes(mib: f64) -> String {
    if mib >= 1024.0 {
        format!("{} GiB", trim_number((mib / 1024.0 * 10.0).round() / 10.0))
    } else {
        format!("{} MiB", trim_number(mib))
    }
}

/// Bytes as `B`, `KiB`, `MiB`, `GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{:.1} {}", v, UNITS[u])
    }
}

/// A number without a trailing `.0` and at most two decimals.
pub fn trim_number(v: f64) -> String {
    let s = format!("{:.2}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

/// A coloured label.
pub fn badge(class: &str, text: &str) -> Markup {
    html! { span class=(format!("badge {class}")) { (text) } }
}

/// A `<time>` showing how long ago `at` was, with the exact time as its
/// tooltip. `at` is RFC 3339 (Marathon's timestamps); anything else is shown
/// as given.
pub fn ago(at: &str) -> Markup {
    match chrono::DateTime::parse_from_rfc3339(at) {
        Ok(t) => {
            let t = t.with_timezone(&chrono::Utc);
            html! { time datetime=(at) title=(at) { (relative(t, chrono::Utc::now())) } }
        }
        Err(_) => html! { (at) },
    }
}

/// [`ago`] of seconds since the epoch (Mesos' timestamps).
pub fn ago_secs(secs: f64) -> Markup {
    match chrono::DateTime::from_timestamp(secs as i64, 0) {
        Some(t) if secs > 0.0 => {
            let exact = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            html! { time datetime=(exact) title=(exact) { (relative(t, chrono::Utc::now())) } }
        }
        _ => html! { "—" },
    }
}

/// `12 s ago`, `3 min ago`, `2 h ago`, `4 d ago`.
pub fn relative(t: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let s = (now - t).num_seconds();
    if s < 0 {
        return "just now".into();
    }
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

/// Links to the pages of a list: `base` is the current query without
/// `page` (`?q=x&`), pages count from 1.
pub fn pager(base: &str, page: usize, pages: usize) -> Markup {
    html! {
        @if pages > 1 {
            nav.pager aria-label="pages" {
                @if page > 1 {
                    a href=(format!("{base}page={}", page - 1)) { "‹ previous" }
                }
                span { "page " (page) " of " (pages) }
                @if page < pages {
                    a href=(format!("{base}page={}", page + 1)) { "next ›" }
                }
            }
        }
    }
}

/// Builds a query string prefix (`?a=1&b=2&`) from pairs, empty values
/// left out, values URL-encoded.
pub fn query_prefix(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("?");
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        out.push_str(k);
        out.push('=');
        out.push_str(&url_encode(v));
        out.push('&');
    }
    out
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `%XX` sequences decoded (malformed ones kept as they are), as lossy
/// UTF-8.
pub fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_segments_to_the_total() {
        let html = stacked_bar(
            &[
                Segment::new("seg-healthy", 1.0, "healthy"),
                Segment::new("seg-unhealthy", 1.0, "unhealthy"),
            ],
            4.0,
        )
        .into_string();
        assert!(html.contains(r#"class="seg-healthy" x="0.000" y="0" width="25.000""#));
        assert!(html.contains(r#"class="seg-unhealthy" x="25.000" y="0" width="25.000""#));
        assert!(html.contains("1 healthy, 1 unhealthy"));
    }

    #[test]
    fn figures_read_as_a_person_writes_them() {
        assert_eq!(trim_number(1.5), "1.5");
        assert_eq!(trim_number(4.0), "4");
        assert_eq!(mebibytes(2048.0), "2 GiB");
        assert_eq!(mebibytes(128.0), "128 MiB");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(url_encode("/a b&c"), "/a%20b%26c");
        assert_eq!(percent_decode("/a%20b%26c"), "/a b&c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(query_prefix(&[("q", "x y"), ("status", "")]), "?q=x%20y&");
    }
}
