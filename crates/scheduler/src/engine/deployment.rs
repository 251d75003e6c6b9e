//! Deployments: the plan of a change (steps of actions, one step per
//! dependency layer), what each app looked like before (for rollback and
//! for apps whose step has not come yet), and their Marathon JSON.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{marathon_timestamp, AppChange, AppDefinition, PathId};

/// What a deployment does to one app (Marathon's action names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionKind {
    StartApplication,
    ScaleApplication,
    RestartApplication,
    StopApplication,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartApplication => "StartApplication",
            Self::ScaleApplication => "ScaleApplication",
            Self::RestartApplication => "RestartApplication",
            Self::StopApplication => "StopApplication",
        }
    }
}

/// One action of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentAction {
    pub kind: ActionKind,
    pub app: PathId,
}

/// A change the scheduler is carrying out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub version: DateTime<Utc>,
    /// Steps in order; each step's actions run together.
    pub steps: Vec<Vec<DeploymentAction>>,
    /// Index of the step under way.
    pub current_step: usize,
    /// Each affected app as it was before (None: it did not exist).
    pub original: Vec<(PathId, Option<AppDefinition>)>,
    /// The group whose change this is (group_change_* events).
    pub group: Option<PathId>,
    pub started_at: DateTime<Utc>,
}

impl Deployment {
    /// Ids of the apps this deployment touches.
    pub fn affected(&self) -> impl Iterator<Item = &PathId> {
        self.original.iter().map(|(id, _)| id)
    }

    pub fn affects(&self, app: &PathId) -> bool {
        self.original.iter().any(|(id, _)| id == app)
    }

    /// The step holding `app`'s action, if any.
    pub fn step_of(&self, app: &PathId) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.iter().any(|a| &a.app == app))
    }

    /// `app` as it was before this deployment.
    pub fn original_of(&self, app: &PathId) -> Option<&AppDefinition> {
        self.original
            .iter()
            .find(|(id, _)| id == app)
            .and_then(|(_, a)| a.as_ref())
    }

    /// The actions of the step under way.
    pub fn current_actions(&self) -> &[DeploymentAction] {
        self.steps
            .get(self.current_step)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn steps_json(&self) -> Value {
        Value::Array(
            self.steps
                .iter()
                .map(|s| {
                    json!({"actions": s.iter().map(|a| json!({"action": a.kind.as_str(), "app": a.app.to_string()})).collect::<Vec<_>>()})
                })
                .collect(),
        )
    }

    /// Marathon's deployment JSON. `readiness(app)` gives the
    /// `readinessCheckResults` of a current action's app; `stuck` is added
    /// only while the deployment cannot progress (see docs/architecture.md).
    pub fn to_json(
        &self,
        readiness: impl Fn(&PathId) -> Vec<Value>,
        stuck: Option<Value>,
    ) -> Value {
        let mut v = json!({
            "id": self.id,
            "version": marathon_timestamp(self.version),
            "affectedApps": self.affected().map(|a| a.to_string()).collect::<Vec<_>>(),
            "affectedPods": [],
            "steps": self.steps_json(),
            "currentActions": self.current_actions().iter().map(|a| json!({
                "action": a.kind.as_str(),
                "app": a.app.to_string(),
                "readinessCheckResults": readiness(&a.app),
            })).collect::<Vec<_>>(),
            "currentStep": (self.current_step + 1).min(self.steps.len().max(1)),
            "totalSteps": self.steps.len(),
        });
        if let Some(s) = stuck {
            v["stuck"] = s;
        }
        v
    }

    /// The `plan` of deployment events: id, version, steps, and the affected
    /// apps before (`original`) and after (`target`).
    pub fn plan_json(&self, target: impl Fn(&PathId) -> Option<Value>) -> Value {
        let original: Vec<Value> = self
            .original
            .iter()
            .filter_map(|(_, a)| a.as_ref())
            .map(|a| Value::Object(crate::model::render_app(a)))
            .collect();
        let targets: Vec<Value> = self.affected().filter_map(&target).collect();
        json!({
            "id": self.id,
            "version": marathon_timestamp(self.version),
            "original": {"id": "/", "apps": original, "groups": [], "pods": [], "dependencies": []},
            "target": {"id": "/", "apps": targets, "groups": [], "pods": [], "dependencies": []},
            "steps": self.steps_json(),
        })
    }

    /// `{"actions": [...]}` of the step under way (deployment events).
    pub fn current_step_json(&self) -> Value {
        json!({"actions": self.current_actions().iter().map(|a| json!({"action": a.kind.as_str(), "app": a.app.to_string()})).collect::<Vec<_>>()})
    }
}

/// One app of a change: before and after.
pub struct Change<'a> {
    pub id: PathId,
    pub before: Option<&'a AppDefinition>,
    pub after: Option<&'a AppDefinition>,
}

/// The action a change needs, if any.
pub fn action_of(change: &Change<'_>) -> Option<ActionKind> {
    match (change.before, change.after) {
        (None, None) => None,
        (Some(_), None) => Some(ActionKind::StopApplication),
        (None, Some(_)) => Some(ActionKind::StartApplication),
        (Some(b), Some(a)) if b == a => None,
        (Some(b), Some(a)) => match b.change_to(a) {
            // Only the version moved, or only the instances: a scale.
            AppChange::None | AppChange::ScaleOnly => Some(ActionKind::ScaleApplication),
            AppChange::Config => Some(ActionKind::RestartApplication),
        },
    }
}

/// Marathon's plan: apps to stop first, in one step; then the others by
/// dependency layer (an app comes one step after the last of what it
/// depends on; a dependency on a group is one on every app under it).
/// `dependencies(app)` lists an app's dependencies in the target state
/// (its own and its groups'); `all` is every app id of the target state.
pub fn plan(
    changes: &[Change<'_>],
    all: &BTreeSet<PathId>,
    dependencies: impl Fn(&PathId) -> Vec<PathId>,
) -> Vec<Vec<DeploymentAction>> {
    let mut stops = Vec::new();
    let mut by_layer: BTreeMap<usize, Vec<DeploymentAction>> = BTreeMap::new();
    let mut memo: BTreeMap<PathId, usize> = BTreeMap::new();
    for c in changes {
        let Some(kind) = action_of(c) else { continue };
        let action = DeploymentAction {
            kind,
            app: c.id.clone(),
        };
        if kind == ActionKind::StopApplication {
            stops.push(action);
        } else {
            let layer = layer_of(&c.id, all, &dependencies, &mut memo, &mut BTreeSet::new());
            by_layer.entry(layer).or_default().push(action);
        }
    }
    let mut steps = Vec::new();
    if !stops.is_empty() {
        steps.push(stops);
    }
    steps.extend(by_layer.into_values());
    steps
}

fn layer_of(
    app: &PathId,
    all: &BTreeSet<PathId>,
    dependencies: &impl Fn(&PathId) -> Vec<PathId>,
    memo: &mut BTreeMap<PathId, usize>,
    visiting: &mut BTreeSet<PathId>,
) -> usize {
    if let Some(l) = memo.get(app) {
        return *l;
    }
    if !visiting.insert(app.clone()) {
        return 0; // a cycle: validation refuses them; do not loop
    }
    let mut layer = 0;
    for dep in dependencies(app) {
        for target in all.iter().filter(|a| dep.includes(a) && *a != app) {
            layer = layer.max(1 + layer_of(target, all, dependencies, memo, visiting));
        }
    }
    visiting.remove(app);
    memo.insert(app.clone(), layer);
    layer
}
