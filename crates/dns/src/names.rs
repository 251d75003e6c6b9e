//! mesos-dns' naming rules: how a task, a framework and an agent become
//! DNS labels.
//!
//! - A label keeps `a-z`, `0-9` and `-`; upper case is lowered; `.`, `_`
//!   and `-` become `-`; anything else is dropped; leading and trailing
//!   `-` are trimmed and it is cut to 63 characters (RFC 1123, mesos-dns'
//!   default; its `EnforceRFC952` option is not offered).
//! - A task's label is its `TaskInfo.name` as one label. Marathon names a
//!   task after its app id reversed and joined with dots (`/prod/web` ->
//!   `web.prod`), so the label is `web-prod`.
//! - A framework's name keeps its dots: each dot-separated part becomes a
//!   label (`marathon.prod` -> `marathon.prod`).
//! - A task's canonical name is `{task}-{hash}-{agent}`: five characters
//!   of the z-base-32 SHA-1 of the task id, and the last `-`-separated
//!   part of the agent id, lower case. SRV targets use it, so each target
//!   names exactly one task.

use sha1::{Digest, Sha1};

/// The longest label RFC 1123 allows.
const MAX_LABEL: usize = 63;

/// `name` as one DNS label (see the module doc); may be empty when nothing
/// of it is usable.
pub fn label(name: &str) -> String {
    let mapped: String = name
        .chars()
        .filter_map(|c| match c {
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            'a'..='z' | '0'..='9' => Some(c),
            '-' | '.' | '_' => Some('-'),
            _ => None,
        })
        .collect();
    let trimmed = mapped.trim_start_matches('-');
    let cut: String = trimmed.chars().take(MAX_LABEL).collect();
    cut.trim_end_matches('-').to_string()
}

/// A framework's name as a domain fragment: its dot-separated parts, each
/// made a label, empty ones dropped.
pub fn framework_fragment(name: &str) -> String {
    name.split('.')
        .map(label)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// The label a Marathon app's tasks are found under: the app id's segments
/// reversed, joined with `-` (`/prod/web` -> `web-prod`). The same as
/// `label` of the task name Marathon gives the app's tasks.
pub fn app_label(app_id: &str) -> String {
    let reversed: Vec<&str> = app_id.split('/').filter(|s| !s.is_empty()).rev().collect();
    label(&reversed.join("."))
}

/// z-base-32, the human-oriented base 32 mesos-dns hashes task ids with.
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Five z-base-32 characters of the SHA-1 of `task_id`.
pub fn task_hash(task_id: &str) -> String {
    let digest = Sha1::digest(task_id.as_bytes());
    let mut bits: u64 = 0;
    for b in &digest[..4] {
        bits = (bits << 8) | u64::from(*b);
    }
    // The first 25 of those 32 bits, 5 at a time, most significant first.
    (0..5)
        .map(|i| {
            let shift = 32 - 5 * (i + 1);
            ZBASE32[((bits >> shift) & 0x1f) as usize] as char
        })
        .collect()
}

/// The last `-`-separated part of an agent id, lower case (`…-S4` -> `s4`).
pub fn agent_tail(agent_id: &str) -> String {
    agent_id
        .rsplit('-')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// A task's canonical label: `{task}-{hash}-{agent}`.
pub fn canonical_label(task_label: &str, task_id: &str, agent_id: &str) -> String {
    format!(
        "{task_label}-{}-{}",
        task_hash(task_id),
        agent_tail(agent_id)
    )
}

/// A name as the store keys it: lower case, with the root's trailing dot.
pub fn normalize(name: &str) -> String {
    let mut n = name.trim().to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_app_ids_are_reversed_with_dashes() {
        assert_eq!(app_label("/prod/web"), "web-prod");
        assert_eq!(app_label("/redis"), "redis");
        assert_eq!(app_label("/a/b/c"), "c-b-a");
        assert_eq!(label("web.prod"), "web-prod");
    }

    #[test]
    fn labels_follow_rfc1123() {
        assert_eq!(label("My_App"), "my-app");
        assert_eq!(label("apiserver.myservice"), "apiserver-myservice");
        assert_eq!(label("--x!y@z--"), "xyz");
        assert_eq!(label("ünïcode"), "ncode");
        assert_eq!(label(""), "");
        let long = "a".repeat(80);
        assert_eq!(label(&long).len(), 63);
        // A cut that ends on a dash drops the dash.
        let dashed = format!("{}-{}", "a".repeat(62), "b".repeat(5));
        assert_eq!(label(&dashed), "a".repeat(62));
    }

    #[test]
    fn framework_names_keep_their_dots() {
        assert_eq!(framework_fragment("marathon"), "marathon");
        assert_eq!(framework_fragment("marathon.prod"), "marathon.prod");
        assert_eq!(framework_fragment("Marathon-0.7.5"), "marathon-0.7.5");
        assert_eq!(framework_fragment("a..b"), "a.b");
    }

    #[test]
    fn canonical_names_hash_the_task_id() {
        let h = task_hash("nginx.48dccce7-90bc-11e6-ae70-70b3d5800001");
        assert_eq!(h.len(), 5);
        assert!(h.bytes().all(|b| ZBASE32.contains(&b)));
        assert_ne!(h, task_hash("nginx.other"));
        assert_eq!(h, task_hash("nginx.48dccce7-90bc-11e6-ae70-70b3d5800001"));
        assert_eq!(agent_tail("20160107-001256-134875658-5050-27524-S4"), "s4");
        assert_eq!(
            canonical_label("nginx", "t1", "x-S1"),
            format!("nginx-{}-s1", task_hash("t1"))
        );
    }

    #[test]
    fn zbase32_matches_the_specification() {
        // SHA-1("") starts da39a3ee: 11011 01000 11100 11010 00111, i.e.
        // z-base-32 symbols 27, 8, 28, 26 and 7.
        assert_eq!(task_hash(""), "5eh48");
    }

    #[test]
    fn names_are_normalized_to_lower_case_fqdns() {
        assert_eq!(normalize("Redis.Marathon.mesos"), "redis.marathon.mesos.");
        assert_eq!(normalize("leader.mesos."), "leader.mesos.");
    }
}
