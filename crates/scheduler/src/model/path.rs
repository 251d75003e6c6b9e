//! Marathon path identifiers (`/group/sub/app`).
//!
//! A [`PathId`] is always absolute and canonical: relative input (`web`) is
//! resolved against the root (`/web`), empty segments (`/a//b`) are dropped and
//! `.` / `..` segments are resolved, as Marathon's `canonicalPath` does.
//! Construction with [`PathId::new`] is lenient (it never fails) so that an
//! app definition with a bad id can still be parsed and then reported with
//! Marathon's error shape; [`PathId::parse`] is the strict form.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Marathon's segment rule, quoted in its error message so that clients see
/// the same text as from Marathon 1.10.
pub const SEGMENT_PATTERN: &str = r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$";

/// Last segments Marathon refuses because they collide with API routes.
pub const RESERVED_SEGMENTS: [&str; 5] = ["restart", "tasks", "versions", ".", ".."];

/// Why a string is not a valid app id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathIdError {
    /// The path has no segment (`""` or `"/"`).
    #[error("path must contain at least one path element")]
    Empty,
    /// A segment does not match [`SEGMENT_PATTERN`].
    #[error("invalid path segment {segment:?} in {path:?}")]
    InvalidSegment { path: String, segment: String },
    /// The last segment is one of [`RESERVED_SEGMENTS`].
    #[error("path {path:?} ends with reserved keyword {segment:?}")]
    Reserved { path: String, segment: String },
}

/// An absolute, canonical Marathon path such as `/prod/web`.
///
/// The root (`/`) has no segments. Ordering is by segments, so a group sorts
/// before its children.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PathId {
    segments: Vec<String>,
}

impl PathId {
    /// The root group `/`.
    pub fn root() -> Self {
        Self::default()
    }

    /// Resolves `input` against the root without validating segment
    /// characters: `webserver` → `/webserver`, `/a//b/` → `/a/b`,
    /// `/a/../b` → `/b`. Never fails; use [`PathId::errors`] or
    /// [`PathId::parse`] to check the characters.
    pub fn new(input: &str) -> Self {
        Self::root().resolve(input)
    }

    /// Resolves `input` relative to `self` (if `input` is absolute, `self`
    /// is ignored), dropping empty segments and resolving `.` and `..`
    /// (`..` above the root stays at the root).
    pub fn resolve(&self, input: &str) -> Self {
        let mut segments = if input.starts_with('/') {
            Vec::new()
        } else {
            self.segments.clone()
        };
        for part in input.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                other => segments.push(other.to_string()),
            }
        }
        Self { segments }
    }

    /// Strict parse: [`PathId::new`] followed by Marathon's id rules (at least
    /// one segment, every segment matching [`SEGMENT_PATTERN`], last segment
    /// not reserved).
    pub fn parse(input: &str) -> Result<Self, PathIdError> {
        let id = Self::new(input);
        match id.errors().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(id),
        }
    }

    /// Every rule of Marathon's id validation this path breaks; empty when
    /// the path is a valid app id.
    pub fn errors(&self) -> Vec<PathIdError> {
        let mut out = Vec::new();
        if self.segments.is_empty() {
            out.push(PathIdError::Empty);
            return out;
        }
        for s in &self.segments {
            if !segment_is_valid(s) {
                out.push(PathIdError::InvalidSegment {
                    path: self.to_string(),
                    segment: s.clone(),
                });
            }
        }
        if let Some(last) = self.segments.last() {
            if RESERVED_SEGMENTS.contains(&last.as_str()) {
                out.push(PathIdError::Reserved {
                    path: self.to_string(),
                    segment: last.clone(),
                });
            }
        }
        out
    }

    /// The path's segments, root first.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    /// The enclosing group (`/a/b` → `/a`, `/a` → `/`, `/` → `/`).
    pub fn parent(&self) -> PathId {
        let mut segments = self.segments.clone();
        segments.pop();
        Self { segments }
    }

    /// The last segment, `None` for the root.
    pub fn name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// `self` followed by `child`'s segments.
    pub fn join(&self, child: &str) -> PathId {
        let mut segments = self.segments.clone();
        segments.extend(child.split('/').filter(|s| !s.is_empty()).map(String::from));
        Self { segments }
    }

    /// True if `self` equals `other` or is one of its ancestors.
    pub fn includes(&self, other: &PathId) -> bool {
        other.segments.starts_with(&self.segments)
    }

    /// Marathon's task id prefix ("safe path"): the segments joined by `_`,
    /// `/a/b` → `a_b`. Task ids are `<prefix>.<uuid>`; Mesos forbids `/` in them.
    pub fn safe_task_prefix(&self) -> String {
        self.segments.join("_")
    }

    /// The name Marathon gives the app's tasks (`TaskInfo.name`): the
    /// segments reversed and joined with dots (`/prod/web` → `web.prod`).
    /// mesos-dns turns it into the app's DNS label (`web-prod`).
    pub fn to_hostname(&self) -> String {
        let mut segments = self.segments.clone();
        segments.reverse();
        segments.join(".")
    }

    /// Inverse of [`PathId::safe_task_prefix`]: `a_b` → `/a/b`.
    pub fn from_safe_task_prefix(prefix: &str) -> PathId {
        Self {
            segments: prefix
                .split('_')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

/// Checks one segment against [`SEGMENT_PATTERN`] without a regex engine:
/// dot-separated labels of `[a-z0-9-]` that neither start nor end with `-`,
/// or exactly `.` / `..`.
pub fn segment_is_valid(segment: &str) -> bool {
    if segment == "." || segment == ".." {
        return true;
    }
    !segment.is_empty()
        && segment.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PathId {
    type Err = PathIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PathId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Lenient: any string is accepted and canonicalized; validation reports bad
/// characters later with Marathon's error shape.
impl<'de> Deserialize<'de> for PathId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(PathId::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(PathId::new("webserver").to_string(), "/webserver");
        assert_eq!(PathId::new("a/b").to_string(), "/a/b");
        assert_eq!(PathId::new("/a//b/").to_string(), "/a/b");
        assert_eq!(PathId::new("/a/./c/../b").to_string(), "/a/b");
        assert_eq!(PathId::new("/").to_string(), "/");
        assert_eq!(PathId::new("../../x").to_string(), "/x");
    }

    #[test]
    fn segments_rules() {
        for ok in ["a", "a1", "a-b", "a.b", "1", "my-app.v2", "..", "."] {
            assert!(segment_is_valid(ok), "{ok}");
        }
        for bad in ["A", "-a", "a-", "a_b", "a..b", ".a", "a.", "", "ü", "a b"] {
            assert!(!segment_is_valid(bad), "{bad}");
        }
        assert!(PathId::parse("/a/tasks").is_err());
        assert_eq!(PathId::parse("/"), Err(PathIdError::Empty));
        assert!(PathId::parse("/Web").is_err());
    }

    #[test]
    fn task_names_are_the_id_reversed_as_marathon_writes_them() {
        assert_eq!(PathId::new("/prod/web").to_hostname(), "web.prod");
        assert_eq!(PathId::new("/redis").to_hostname(), "redis");
    }

    #[test]
    fn prefix_and_parent() {
        let id = PathId::new("/a/b");
        assert_eq!(id.safe_task_prefix(), "a_b");
        assert_eq!(PathId::from_safe_task_prefix("a_b"), id);
        assert_eq!(id.parent().to_string(), "/a");
        assert_eq!(id.parent().parent(), PathId::root());
        assert!(PathId::new("/a").includes(&id));
        assert!(!PathId::new("/b").includes(&id));
        assert_eq!(PathId::new("/a").join("b/c").to_string(), "/a/b/c");
    }
}
