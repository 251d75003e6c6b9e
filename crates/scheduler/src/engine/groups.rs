//! Groups: the tree of app ids (`/prod/db`, `/prod/web` are in `/prod`),
//! groups created explicitly (with `dependencies`), versions of the root
//! group, and Marathon's group update body.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Engine;
use crate::model::{AppDefinition, AppUpdate, PathId};

/// What a group has of its own beyond its apps and subgroups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMeta {
    pub dependencies: Vec<PathId>,
    pub version: DateTime<Utc>,
}

/// One version of the root group: which version of each app it held, and
/// the explicit groups. Apps' definitions come from their own versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub version: DateTime<Utc>,
    pub apps: BTreeMap<String, DateTime<Utc>>,
    pub groups: BTreeMap<String, GroupMeta>,
}

/// A group body (`POST /v2/groups`, `PUT /v2/groups/{id}`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GroupUpdate {
    pub id: Option<String>,
    pub apps: Option<Vec<AppUpdate>>,
    pub groups: Option<Vec<GroupUpdate>>,
    pub dependencies: Option<Vec<String>>,
    pub scale_by: Option<f64>,
    pub version: Option<String>,
    pub enforce_role: Option<bool>,
}

impl Engine {
    /// Every group id: the root, explicit groups, and every ancestor of an
    /// app or explicit group.
    pub fn group_ids(&self) -> BTreeSet<PathId> {
        let mut out = BTreeSet::new();
        out.insert(PathId::root());
        let add_ancestors = |id: &PathId, out: &mut BTreeSet<PathId>| {
            let mut p = id.parent();
            while !p.is_root() {
                out.insert(p.clone());
                p = p.parent();
            }
        };
        for app in self.state.apps.values() {
            add_ancestors(&app.id, &mut out);
        }
        for g in self.state.groups.keys() {
            out.insert(g.clone());
            add_ancestors(g, &mut out);
        }
        out
    }

    pub fn group_exists(&self, id: &PathId) -> bool {
        id.is_root() || self.group_ids().contains(id)
    }

    /// The explicit part of a group, if it was created explicitly.
    pub fn group_meta(&self, id: &PathId) -> Option<&GroupMeta> {
        self.state.groups.get(id)
    }

    /// Apps directly in group `id`.
    pub fn group_apps(&self, id: &PathId) -> Vec<&AppDefinition> {
        self.state
            .apps
            .values()
            .filter(|a| a.id.parent() == *id)
            .collect()
    }

    /// Direct subgroups of group `id`.
    pub fn subgroups(&self, id: &PathId) -> Vec<PathId> {
        self.group_ids()
            .into_iter()
            .filter(|g| !g.is_root() && g.parent() == *id)
            .collect()
    }

    /// Apps anywhere under `id`.
    pub fn apps_under(&self, id: &PathId) -> Vec<&AppDefinition> {
        self.state
            .apps
            .values()
            .filter(|a| id.includes(&a.id))
            .collect()
    }

    /// The version of group `id`: its own, or the newest of what is in it.
    pub fn group_version(&self, id: &PathId) -> Option<DateTime<Utc>> {
        let own = self.state.groups.get(id).map(|m| m.version);
        let apps = self
            .apps_under(id)
            .into_iter()
            .filter_map(|a| a.version)
            .max();
        let root = id
            .is_root()
            .then(|| self.state.group_history.back().map(|s| s.version))
            .flatten();
        [own, apps, root].into_iter().flatten().max()
    }

    /// Versions of the root group in which group `id` existed, newest first.
    pub fn group_versions(&self, id: &PathId) -> Vec<DateTime<Utc>> {
        self.state
            .group_history
            .iter()
            .rev()
            .filter(|s| {
                id.is_root()
                    || s.groups.keys().any(|g| id.includes(&PathId::new(g)))
                    || s.apps.keys().any(|a| id.includes(&PathId::new(a)))
            })
            .map(|s| s.version)
            .collect()
    }

    /// The dependencies of app `id` in the current state: its own and those
    /// of every group it is in.
    pub(super) fn dependencies_of(&self, id: &PathId) -> Vec<PathId> {
        let mut deps: Vec<PathId> = self
            .state
            .apps
            .get(&id.to_string())
            .map(|a| a.dependencies.clone())
            .unwrap_or_default();
        let mut g = id.parent();
        loop {
            if let Some(m) = self.state.groups.get(&g) {
                deps.extend(m.dependencies.iter().cloned());
            }
            if g.is_root() {
                break;
            }
            g = g.parent();
        }
        deps
    }

    /// Record the root group as it is now (bounded by `max_versions`).
    pub(super) fn record_group_snapshot(&mut self, version: DateTime<Utc>) {
        let snapshot = GroupSnapshot {
            version,
            apps: self
                .state
                .apps
                .iter()
                .filter_map(|(id, a)| a.version.map(|v| (id.clone(), v)))
                .collect(),
            groups: self
                .state
                .groups
                .iter()
                .map(|(id, m)| (id.to_string(), m.clone()))
                .collect(),
        };
        if self.state.group_history.back().map(|s| s.version) == Some(version) {
            self.state.group_history.pop_back();
        }
        self.state.group_history.push_back(snapshot);
        while self.state.group_history.len() > self.max_versions {
            self.state.group_history.pop_front();
        }
    }

    pub(super) fn group_snapshot(&self, version: DateTime<Utc>) -> Option<&GroupSnapshot> {
        self.state
            .group_history
            .iter()
            .find(|s| s.version == version)
    }
}
