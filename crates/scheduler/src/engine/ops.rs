//! Lifecycle operations: every change to apps and groups. Each either
//! applies whole (new definitions and versions stored, one deployment
//! planned, actions returned) or fails and leaves the engine as it was.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::deployment::{self, Change, Deployment};
use super::groups::{GroupMeta, GroupUpdate};
use super::{Action, Engine, EngineError, MarathonTask};
use crate::model::{
    assign_service_ports, marathon_timestamp, now_millis, parse_timestamp, render_app, AppChange,
    AppDefinition, AppUpdate, PathId, ServicePortAllocator, ValidationError,
};

/// What a successful operation did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The deployment that carries the change out.
    pub deployment_id: String,
    /// The version the change was stored as.
    pub version: DateTime<Utc>,
    /// Apps the change created.
    pub created: Vec<PathId>,
    /// What to send to the master.
    pub actions: Vec<Action>,
}

/// What a task kill did.
#[derive(Debug, Clone)]
pub struct KillOutcome {
    pub killed: Vec<MarathonTask>,
    /// With `scale`: the deployment that lowered the instances.
    pub scaled: Option<Outcome>,
    pub actions: Vec<Action>,
}

/// One app target of a change: its new definition, or None to remove it.
type Target = (PathId, Option<AppDefinition>);

/// How the definitions of a change are stored.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// A new version at the change's time (Marathon's API changes).
    New,
    /// As given, versions included (a deployment's rollback).
    AsIs,
}

impl Engine {
    /// Run `op`; on error undo everything it did.
    fn atomic<T>(
        &mut self,
        op: impl FnOnce(&mut Engine) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let cp = self.checkpoint();
        match op(self) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.undo(cp);
                Err(e)
            }
        }
    }

    /// `POST /v2/apps`: a new app.
    pub fn create_app(&mut self, app: AppDefinition, force: bool) -> Result<Outcome, EngineError> {
        if self.state.apps.contains_key(&app.id.to_string()) {
            return Err(EngineError::AppExists(app.id.clone()));
        }
        if self.group_ids().contains(&app.id) {
            return Err(EngineError::Invalid(ValidationError::single(
                "/id",
                format!(
                    "An app with id [{}] conflicts with a group of that id",
                    app.id
                ),
            )));
        }
        let id = app.id.clone();
        self.atomic(|e| {
            e.deploy(
                vec![(id, Some(app))],
                BTreeMap::new(),
                None,
                force,
                Stamp::New,
            )
        })
    }

    /// `PUT`/`PATCH /v2/apps[/{id}]`: update (or create) every app of the
    /// list in one deployment. `partial`: fields absent keep their values.
    /// A body with `version` rolls its app back to that version. One bad
    /// entry refuses the whole list; its errors are under `(index)` when
    /// `list` is true.
    pub fn update_apps(
        &mut self,
        updates: &[(PathId, AppUpdate)],
        partial: bool,
        force: bool,
        list: bool,
    ) -> Result<Outcome, EngineError> {
        let mut targets = Vec::new();
        for (i, (id, u)) in updates.iter().enumerate() {
            let prefix = if list {
                format!("({i})")
            } else {
                String::new()
            };
            let next =
                self.updated(id, u, partial)
                    .map_err(|e| if list { e.under(&prefix) } else { e })?;
            targets.push((id.clone(), Some(next)));
        }
        self.atomic(|e| e.deploy(targets, BTreeMap::new(), None, force, Stamp::New))
    }

    /// The definition `u` makes of app `id`.
    fn updated(
        &self,
        id: &PathId,
        u: &AppUpdate,
        partial: bool,
    ) -> Result<AppDefinition, EngineError> {
        let existing = self.state.apps.get(&id.to_string());
        if let Some(v) = u.version.filter(|_| u.is_version_rollback()) {
            let probe = AppUpdate {
                id: u.id.clone(),
                version: u.version,
                ..AppUpdate::default()
            };
            if *u != probe {
                return Err(EngineError::Invalid(ValidationError::single(
                    "/",
                    "The 'version' field may only be combined with the 'id' field.",
                )));
            }
            let old = self.app_version(&id.to_string(), v).ok_or_else(|| {
                EngineError::AppVersionNotFound {
                    app: id.clone(),
                    version: marathon_timestamp(v),
                }
            })?;
            return Ok(old.clone());
        }
        Ok(match existing {
            Some(cur) if partial => u.apply_to(cur)?,
            _ => u.to_app(Some(id))?,
        })
    }

    /// `POST /v2/apps/{id}/restart`: new tasks for the same definition.
    pub fn restart_app(&mut self, id: &PathId, force: bool) -> Result<Outcome, EngineError> {
        let Some(app) = self.state.apps.get(&id.to_string()).cloned() else {
            return Err(EngineError::AppNotFound(id.clone()));
        };
        let id = id.clone();
        self.atomic(|e| e.deploy_restart(id, app, force))
    }

    fn deploy_restart(
        &mut self,
        id: PathId,
        app: AppDefinition,
        force: bool,
    ) -> Result<Outcome, EngineError> {
        // A restart is a configuration change with nothing changed.
        let now = self.next_version();
        let mut app = app;
        app.stamp_version(now, AppChange::Config);
        self.state.backoff.remove(&id.to_string());
        self.deploy(
            vec![(id, Some(app))],
            BTreeMap::new(),
            None,
            force,
            Stamp::AsIs,
        )
    }

    /// `DELETE /v2/apps/{id}`.
    pub fn delete_app(&mut self, id: &PathId, force: bool) -> Result<Outcome, EngineError> {
        if !self.state.apps.contains_key(&id.to_string()) {
            return Err(EngineError::AppNotFound(id.clone()));
        }
        let id = id.clone();
        self.atomic(|e| e.deploy(vec![(id, None)], BTreeMap::new(), None, force, Stamp::New))
    }

    /// Kill tasks (`DELETE /v2/apps/{id}/tasks…`, `POST /v2/tasks/delete`);
    /// with `scale`, each app's instances go down by as many. Unknown ids
    /// are skipped.
    pub fn kill_tasks(
        &mut self,
        ids: &[String],
        scale: bool,
        force: bool,
    ) -> Result<KillOutcome, EngineError> {
        let ids: Vec<String> = ids.to_vec();
        self.atomic(|e| {
            let mut killed = Vec::new();
            let mut actions = Vec::new();
            let mut per_app: BTreeMap<String, u32> = BTreeMap::new();
            for id in &ids {
                let Some(t) = e.tasks.get(id) else { continue };
                killed.push(t.clone());
                if t.active() {
                    *per_app.entry(t.app_id.clone()).or_default() += 1;
                }
                actions.extend(e.kill_task(id));
            }
            let mut scaled = None;
            if scale {
                let mut targets = Vec::new();
                for (app_id, n) in per_app {
                    let Some(mut app) = e.state.apps.get(&app_id).cloned() else {
                        continue;
                    };
                    app.instances = app.instances.saturating_sub(n);
                    targets.push((app.id.clone(), Some(app)));
                }
                if !targets.is_empty() {
                    let o = e.deploy(targets, BTreeMap::new(), None, force, Stamp::New)?;
                    actions.extend(o.actions.iter().cloned());
                    scaled = Some(o);
                }
            } else {
                actions.extend(e.converge());
            }
            Ok(KillOutcome {
                killed,
                scaled,
                actions,
            })
        })
    }

    /// `DELETE /v2/deployments/{id}`: roll the deployment back (a new
    /// deployment restores every affected app as it was), or with `force`
    /// just stop it (the apps keep their new definitions).
    pub fn delete_deployment(&mut self, id: &str, force: bool) -> Result<Outcome, EngineError> {
        let Some(d) = self.state.deployments.iter().find(|d| d.id == id).cloned() else {
            return Err(EngineError::DeploymentNotFound(id.to_string()));
        };
        self.atomic(|e| {
            e.state.deployments.retain(|x| x.id != d.id);
            let now = now_millis();
            e.emit(json!({"eventType": "deployment_failed", "timestamp": marathon_timestamp(now), "id": d.id}));
            if let Some(g) = &d.group {
                e.emit(json!({"eventType": "group_change_failed", "timestamp": marathon_timestamp(now),
                    "groupId": g.to_string(), "version": marathon_timestamp(d.version),
                    "reason": if force { "stopped" } else { "rolled back" }}));
            }
            if force {
                tracing::info!(deployment = %d.id, "deployment stopped");
                let actions = e.converge();
                return Ok(Outcome {
                    deployment_id: d.id.clone(),
                    version: now,
                    created: Vec::new(),
                    actions,
                });
            }
            tracing::info!(deployment = %d.id, "deployment rolled back");
            let targets: Vec<Target> = d.original.clone();
            e.deploy(targets, BTreeMap::new(), d.group.clone(), true, Stamp::AsIs)
        })
    }

    /// `DELETE /v2/queue/{app}/delay`: launch again without waiting.
    pub fn reset_delay(&mut self, id: &PathId) -> Result<Vec<Action>, EngineError> {
        if !self.state.apps.contains_key(&id.to_string()) {
            return Err(EngineError::AppNotFound(id.clone()));
        }
        self.state.backoff.remove(&id.to_string());
        Ok(self.converge())
    }

    // -- groups --------------------------------------------------------------

    /// `POST /v2/groups[/{base}]` (`create`: the group must not exist) and
    /// `PUT /v2/groups/{base}`: apply a group body. `scaleBy` scales every
    /// app under the group, `version` rolls the group back to that version;
    /// otherwise listed `apps` / `groups` become the group's content
    /// (unlisted ones are removed) and `dependencies` replace the group's.
    pub fn update_group(
        &mut self,
        base: &PathId,
        update: &GroupUpdate,
        create: bool,
        force: bool,
    ) -> Result<Outcome, EngineError> {
        // POST: the body's id is relative to the path; PUT: the path names it.
        let gid = match (&update.id, create) {
            (Some(id), true) => base.resolve(id),
            _ => base.clone(),
        };
        if create && gid.is_root() {
            return Err(EngineError::Invalid(ValidationError::single(
                "/id",
                "a group id is required",
            )));
        }
        if create && self.group_exists(&gid) {
            return Err(EngineError::GroupExists(gid));
        }
        if let Some(factor) = update.scale_by {
            if !factor.is_finite() || factor < 0.0 {
                return Err(EngineError::Invalid(ValidationError::single(
                    "/scaleBy",
                    "must be a number greater than or equal to 0",
                )));
            }
            if !self.group_exists(&gid) {
                return Err(EngineError::GroupNotFound(gid));
            }
            let targets: Vec<Target> = self
                .apps_under(&gid)
                .into_iter()
                .map(|a| {
                    let mut a = a.clone();
                    a.instances = (f64::from(a.instances) * factor).ceil() as u32;
                    (a.id.clone(), Some(a))
                })
                .collect();
            return self
                .atomic(|e| e.deploy(targets, BTreeMap::new(), Some(gid), force, Stamp::New));
        }
        if let Some(v) = &update.version {
            return self.rollback_group(&gid, v, force);
        }
        let mut targets = Vec::new();
        let mut metas = BTreeMap::new();
        self.group_targets(&gid, update, "", &mut targets, &mut metas)?;
        self.atomic(|e| e.deploy(targets, metas, Some(gid), force, Stamp::New))
    }

    /// The app targets and group metadata a group body makes of group `gid`.
    fn group_targets(
        &self,
        gid: &PathId,
        u: &GroupUpdate,
        prefix: &str,
        targets: &mut Vec<Target>,
        metas: &mut BTreeMap<PathId, Option<GroupMeta>>,
    ) -> Result<(), EngineError> {
        let now = now_millis();
        let deps = match &u.dependencies {
            Some(d) => d.iter().map(|x| gid.parent().resolve(x)).collect(),
            None => self
                .state
                .groups
                .get(gid)
                .map(|m| m.dependencies.clone())
                .unwrap_or_default(),
        };
        if !gid.is_root() {
            metas.insert(
                gid.clone(),
                Some(GroupMeta {
                    dependencies: deps,
                    version: now,
                }),
            );
        }
        if let Some(apps) = &u.apps {
            let mut listed = BTreeSet::new();
            for (i, a) in apps.iter().enumerate() {
                let path = format!("{prefix}/apps({i})");
                let Some(raw) = a.id.as_deref() else {
                    return Err(EngineError::Invalid(ValidationError::single(
                        format!("{path}/id"),
                        "is required",
                    )));
                };
                let id = gid.resolve(raw);
                let existing = self.state.apps.get(&id.to_string());
                let def = match existing {
                    Some(cur) => a.apply_to(cur),
                    None => a.to_app(Some(&id)),
                }
                .map_err(|e| EngineError::Invalid(e).under(&path))?;
                listed.insert(id.clone());
                targets.push((id, Some(def)));
            }
            for app in self.group_apps(gid) {
                if !listed.contains(&app.id) {
                    targets.push((app.id.clone(), None));
                }
            }
        }
        if let Some(groups) = &u.groups {
            let mut listed = BTreeSet::new();
            for (i, g) in groups.iter().enumerate() {
                let path = format!("{prefix}/groups({i})");
                let Some(raw) = g.id.as_deref() else {
                    return Err(EngineError::Invalid(ValidationError::single(
                        format!("{path}/id"),
                        "is required",
                    )));
                };
                let sub = gid.resolve(raw);
                listed.insert(sub.clone());
                self.group_targets(&sub, g, &path, targets, metas)?;
            }
            for sub in self.subgroups(gid) {
                if !listed.contains(&sub) {
                    self.removal_targets(&sub, targets, metas);
                }
            }
        }
        Ok(())
    }

    fn removal_targets(
        &self,
        gid: &PathId,
        targets: &mut Vec<Target>,
        metas: &mut BTreeMap<PathId, Option<GroupMeta>>,
    ) {
        for app in self.apps_under(gid) {
            targets.push((app.id.clone(), None));
        }
        for g in self.state.groups.keys().filter(|g| gid.includes(g)) {
            metas.insert(g.clone(), None);
        }
    }

    /// `DELETE /v2/groups/{id}`: remove the group and everything in it.
    pub fn delete_group(&mut self, gid: &PathId, force: bool) -> Result<Outcome, EngineError> {
        if !self.group_exists(gid) {
            return Err(EngineError::GroupNotFound(gid.clone()));
        }
        let mut targets = Vec::new();
        let mut metas = BTreeMap::new();
        self.removal_targets(gid, &mut targets, &mut metas);
        let g = gid.clone();
        self.atomic(|e| e.deploy(targets, metas, Some(g), force, Stamp::New))
    }

    fn rollback_group(
        &mut self,
        gid: &PathId,
        version: &str,
        force: bool,
    ) -> Result<Outcome, EngineError> {
        let not_found = || EngineError::GroupVersionNotFound {
            group: gid.clone(),
            version: version.to_string(),
        };
        let v = parse_timestamp(version).map_err(|_| not_found())?;
        let snapshot = self.group_snapshot(v).cloned().ok_or_else(not_found)?;
        let mut targets = Vec::new();
        let mut wanted = BTreeSet::new();
        for (id, av) in &snapshot.apps {
            let pid = PathId::new(id);
            if !gid.includes(&pid) {
                continue;
            }
            let def = self.app_version(id, *av).cloned().ok_or_else(not_found)?;
            wanted.insert(pid.clone());
            targets.push((pid, Some(def)));
        }
        for app in self.apps_under(gid) {
            if !wanted.contains(&app.id) {
                targets.push((app.id.clone(), None));
            }
        }
        let mut metas: BTreeMap<PathId, Option<GroupMeta>> = self
            .state
            .groups
            .keys()
            .filter(|g| gid.includes(g))
            .map(|g| (g.clone(), None))
            .collect();
        for (g, m) in &snapshot.groups {
            let pg = PathId::new(g);
            if gid.includes(&pg) {
                metas.insert(pg, Some(m.clone()));
            }
        }
        let g = gid.clone();
        self.atomic(|e| e.deploy(targets, metas, Some(g), force, Stamp::New))
    }

    // -- the one way a change is made ----------------------------------------

    /// A version newer than every stored one (two changes in one
    /// millisecond still get distinct versions).
    fn next_version(&self) -> DateTime<Utc> {
        let now = now_millis();
        let newest = self
            .state
            .apps
            .values()
            .filter_map(|a| a.version)
            .chain(self.state.group_history.back().map(|s| s.version))
            .max();
        match newest {
            Some(n) if n >= now => n + chrono::Duration::milliseconds(1),
            _ => now,
        }
    }

    /// Store `targets` (and group metadata), plan one deployment for what
    /// changed, and converge. The caller undoes on error ([`Engine::atomic`]).
    fn deploy(
        &mut self,
        targets: Vec<Target>,
        metas: BTreeMap<PathId, Option<GroupMeta>>,
        group: Option<PathId>,
        force: bool,
        stamp: Stamp,
    ) -> Result<Outcome, EngineError> {
        let ids: Vec<PathId> = targets.iter().map(|(id, _)| id.clone()).collect();
        if force {
            self.cancel_deployments_of(&ids);
        } else {
            self.check_unlocked(ids.iter())?;
        }
        let now = self.next_version();
        let changing: BTreeSet<String> = ids.iter().map(|i| i.to_string()).collect();
        let mut used: Vec<u32> = self
            .state
            .apps
            .values()
            .filter(|a| !changing.contains(&a.id.to_string()))
            .flat_map(|a| a.service_ports())
            .filter(|p| *p != 0)
            .collect();
        let mut before: Vec<(PathId, Option<AppDefinition>)> = Vec::new();
        let mut created = Vec::new();
        for (id, target) in targets {
            let key = id.to_string();
            let current = self.state.apps.get(&key).cloned();
            if before.iter().any(|(b, _)| *b == id) {
                continue; // listed twice: the first entry wins
            }
            before.push((id.clone(), current.clone()));
            match target {
                None => {
                    if current.is_some() {
                        self.state.apps.remove(&key);
                        self.state.backoff.remove(&key);
                        self.state.failures.remove(&key);
                        tracing::info!(app = %key, "app deleted");
                    }
                }
                Some(mut app) => {
                    if stamp == Stamp::New {
                        let mut ports = ServicePortAllocator::new(used.iter().copied());
                        assign_service_ports(&mut app, &mut ports)?;
                        let change = match &current {
                            Some(cur) => cur.change_to(&app),
                            None => AppChange::Config,
                        };
                        match &current {
                            Some(cur) if change == AppChange::None => {
                                app.version = cur.version;
                                app.version_info = cur.version_info;
                            }
                            _ => app.stamp_version(now, change),
                        }
                        if change == AppChange::Config {
                            self.state.backoff.remove(&key);
                        }
                    }
                    used.extend(app.service_ports().into_iter().filter(|p| *p != 0));
                    if current.is_none() {
                        created.push(id.clone());
                    }
                    self.record_version(&app);
                    self.emit(json!({
                        "eventType": "api_post_event",
                        "timestamp": marathon_timestamp(now),
                        "clientIp": "127.0.0.1",
                        "uri": format!("/v2/apps{key}"),
                        "appDefinition": serde_json::Value::Object(render_app(&app)),
                    }));
                    tracing::info!(app = %key, instances = app.instances, "app stored");
                    self.state.apps.insert(key, app);
                }
            }
        }
        for (g, m) in metas {
            match m {
                Some(m) => {
                    self.state.groups.insert(g, m);
                }
                None => {
                    self.state.groups.remove(&g);
                }
            }
        }
        let after: Vec<Option<AppDefinition>> = before
            .iter()
            .map(|(id, _)| self.state.apps.get(&id.to_string()).cloned())
            .collect();
        let changes: Vec<Change<'_>> = before
            .iter()
            .zip(&after)
            .map(|((id, b), a)| Change {
                id: id.clone(),
                before: b.as_ref(),
                after: a.as_ref(),
            })
            .collect();
        let all: BTreeSet<PathId> = self.state.apps.values().map(|a| a.id.clone()).collect();
        let steps = deployment::plan(&changes, &all, |id| self.dependencies_of(id));
        drop(changes);
        let d = Deployment {
            id: uuid::Uuid::new_v4().to_string(),
            version: now,
            steps,
            current_step: 0,
            original: before,
            group,
            started_at: now_millis(),
        };
        let plan = self.plan_json(&d);
        self.emit(json!({
            "eventType": "deployment_info",
            "timestamp": marathon_timestamp(now),
            "plan": plan,
            "currentStep": d.current_step_json(),
        }));
        tracing::info!(deployment = %d.id, steps = d.steps.len(), apps = d.original.len(), "deployment started");
        let outcome_id = d.id.clone();
        self.state.deployments.push(d);
        self.record_group_snapshot(now);
        let actions = self.converge();
        Ok(Outcome {
            deployment_id: outcome_id,
            version: now,
            created,
            actions,
        })
    }

    /// `force`: deployments in the way of a change are cancelled.
    fn cancel_deployments_of(&mut self, ids: &[PathId]) {
        let cancelled: Vec<Deployment> = self
            .state
            .deployments
            .iter()
            .filter(|d| ids.iter().any(|i| d.affects(i)))
            .cloned()
            .collect();
        for d in cancelled {
            self.state.deployments.retain(|x| x.id != d.id);
            tracing::info!(deployment = %d.id, "deployment cancelled by a forced change");
            self.emit(json!({"eventType": "deployment_failed", "timestamp": marathon_timestamp(now_millis()), "id": d.id}));
        }
    }

    fn record_version(&mut self, app: &AppDefinition) {
        let list = self.state.versions.entry(app.id.to_string()).or_default();
        if let Some(same) = list.iter_mut().find(|a| a.version == app.version) {
            // A rollback to a stored version, or a change in the same
            // millisecond: one entry per version.
            *same = app.clone();
            return;
        }
        list.push_back(app.clone());
        while list.len() > self.max_versions {
            list.pop_front();
        }
    }

    pub(super) fn plan_json(&self, d: &Deployment) -> serde_json::Value {
        d.plan_json(|id| {
            self.state
                .apps
                .get(&id.to_string())
                .map(|a| serde_json::Value::Object(render_app(a)))
        })
    }
}
