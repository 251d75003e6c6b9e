//! The hierarchical DRF allocator, as Mesos' `HierarchicalDRFAllocator`.
//!
//! Roles are ordered by weighted dominant share (allocation / cluster total,
//! max over scalar resources, divided by the role's weight); frameworks
//! inside a role by their own dominant share. Each agent's available
//! resources (total − allocated, where allocated = used + offered) go to
//! the first framework in that order that is active, not suppressed, has not
//! filtered them, and may use them: reserved resources only to their role,
//! unreserved ones to anyone. Roles with an unsatisfied quota are served
//! first, and the fair stage leaves enough unallocated headroom for them.
//!
//! The allocator is plain data with no IO and no clock of its own (callers
//! pass `now`), so the master drives it under its state lock and the bench
//! drives it in-process. Ids are interned to indices once; the allocation
//! pass works on indices and keeps the sorters up to date incrementally
//! (one remove + insert per offer) instead of recomputing every share.
//!
//! The caller owns the offer protocol and must report every change of an
//! agent's allocation: what [`Allocator::allocate`] hands out stays
//! allocated until given back with [`Allocator::recover`] (declined,
//! rescinded, unused part of an accepted offer, task finished).

mod drf;
pub mod quota;
pub mod sorter;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use meseta_core::Resources;

pub use quota::{parse_weights, validate_quota, validate_role, validate_weight};
use sorter::{add_quantities, dominant_share, share_key, sub_quantities, Quantities, Sorter};

/// What the allocator refuses.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AllocatorError {
    #[error("invalid role '{role}': {reason}")]
    InvalidRole { role: String, reason: String },
    #[error("invalid weight {weight} for role '{role}': must be a positive number")]
    InvalidWeight { role: String, weight: f64 },
    #[error("invalid weight '{text}': expected ROLE=WEIGHT")]
    InvalidWeightText { text: String },
    #[error("invalid quota for role '{role}': {reason}")]
    InvalidQuota { role: String, reason: String },
}

/// How the allocator starts (`meseta master` flags).
#[derive(Debug, Clone, Default)]
pub struct AllocatorConfig {
    /// Role weights (`--weights "a=2,b=1"`); roles not named weigh 1.
    pub weights: BTreeMap<String, f64>,
    /// Outstanding offers older than this are rescinded (`--offer-timeout`;
    /// `None`, the default, keeps offers until used, as Mesos does).
    pub offer_timeout: Option<Duration>,
}

/// Index of an agent inside one [`Allocator`]; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentIdx(pub u32);

/// Index of a framework inside one [`Allocator`]; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameworkIdx(pub u32);

/// One offer the allocator decided: `resources` of `agent` to `framework`.
/// They count as allocated from now on.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub framework: FrameworkIdx,
    pub agent: AgentIdx,
    pub resources: Resources,
}

/// A role as `/master/state` and `/roles` show it.
#[derive(Debug, Clone)]
pub struct RoleSummary {
    pub name: String,
    pub weight: f64,
    pub quota: Option<Resources>,
    /// Scalars allocated to the role's frameworks (offered + used).
    pub allocated: BTreeMap<String, f64>,
    pub dominant_share: f64,
    /// `dominant_share / weight`: what the role sorter orders by.
    pub weighted_share: f64,
    pub frameworks: usize,
}

/// A DECLINE filter: `resources` of one agent are refused until `until`;
/// an offer holding anything more is not filtered (Mesos' semantics).
#[derive(Debug, Clone)]
struct Filter {
    until: Instant,
    resources: Resources,
}

#[derive(Debug)]
struct AgentSlot {
    id: String,
    total: Resources,
    /// Offered + used.
    allocated: Resources,
    /// total − allocated, kept up to date on every change.
    available: Resources,
    /// Whether `available` holds reserved resources (then what a role may
    /// take differs per role).
    available_reserved: bool,
    active: bool,
    /// Allocation per framework on this agent, to undo it when the agent
    /// goes away.
    by_framework: Vec<(u32, Quantities)>,
}

#[derive(Debug)]
struct FrameworkSlot {
    id: String,
    role: u32,
    active: bool,
    suppressed: bool,
    filters: HashMap<u32, Filter>,
    alloc: Quantities,
    allocations: u64,
    /// Key in its role's sorter while eligible for offers.
    key: Option<(u64, u64)>,
}

#[derive(Debug)]
struct RoleSlot {
    name: String,
    weight: f64,
    quota: Option<Resources>,
    quota_q: Quantities,
    /// Sum over the role's frameworks (eligible or not).
    alloc: Quantities,
    /// Frameworks eligible for offers.
    frameworks: Sorter,
    members: usize,
    /// Key in the role sorter while it has eligible frameworks.
    key: Option<u64>,
}

/// The allocator; see the module docs for the contract.
#[derive(Debug, Default)]
pub struct Allocator {
    config: AllocatorConfig,
    /// Interned scalar names; `Quantities` are indexed by these.
    names: Vec<String>,
    /// Scalars of every agent added (active or not), per name.
    total: Quantities,
    agents: Vec<Option<AgentSlot>>,
    agent_ids: HashMap<String, u32>,
    frameworks: Vec<Option<FrameworkSlot>>,
    framework_ids: HashMap<String, u32>,
    roles: Vec<RoleSlot>,
    role_ids: HashMap<String, u32>,
    /// Roles with at least one eligible framework, by weighted share.
    role_sorter: Sorter,
    /// The cluster total changed: every share must be recomputed.
    shares_dirty: bool,
    cursor: usize,
}

/// Mesos' default minimum allocatable resources: 0.01 cpus or 32 MB.
fn allocatable(r: &Resources) -> bool {
    r.scalar_milli("cpus") >= 10 || r.scalar_milli("mem") >= 32_000
}

impl Allocator {
    /// An empty allocator; needs no network, no clock and no registry.
    pub fn new(config: AllocatorConfig) -> Allocator {
        Allocator {
            config,
            ..Default::default()
        }
    }

    /// How the allocator was configured (weights track later changes).
    pub fn config(&self) -> &AllocatorConfig {
        &self.config
    }

    fn intern(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        }
    }

    /// Scalar quantities of `r` (all roles merged), interning new names.
    fn quantities(&mut self, r: &Resources) -> Quantities {
        let mut q = vec![0; self.names.len()];
        for (name, _, v) in r.scalars_milli() {
            let i = self.intern(name);
            if q.len() <= i {
                q.resize(i + 1, 0);
            }
            q[i] += v;
        }
        q
    }

    fn role_index(&mut self, name: &str) -> u32 {
        if let Some(&r) = self.role_ids.get(name) {
            return r;
        }
        let idx = self.roles.len() as u32;
        self.roles.push(RoleSlot {
            name: name.to_string(),
            weight: self.config.weights.get(name).copied().unwrap_or(1.0),
            quota: None,
            quota_q: Vec::new(),
            alloc: Vec::new(),
            frameworks: Sorter::default(),
            members: 0,
            key: None,
        });
        self.role_ids.insert(name.to_string(), idx);
        idx
    }

    // -----------------------------------------------------------------------
    // Sorter maintenance
    // -----------------------------------------------------------------------

    /// Put framework `f` where its share says (or out of the sorter when it
    /// wants no offers), then its role.
    fn refresh_framework(&mut self, f: u32) {
        let Some(fw) = self.frameworks[f as usize].as_mut() else {
            return;
        };
        let role = &mut self.roles[fw.role as usize];
        if let Some(k) = fw.key.take() {
            role.frameworks.remove(k, f);
        }
        if fw.active && !fw.suppressed {
            let k = (
                share_key(dominant_share(&fw.alloc, &self.total)),
                fw.allocations,
            );
            role.frameworks.insert(k, f);
            fw.key = Some(k);
        }
        let r = fw.role;
        self.refresh_role(r);
    }

    fn refresh_role(&mut self, r: u32) {
        let role = &mut self.roles[r as usize];
        if let Some(k) = role.key.take() {
            self.role_sorter.remove((k, 0), r);
        }
        if !role.frameworks.is_empty() {
            let k = share_key(dominant_share(&role.alloc, &self.total) / role.weight);
            self.role_sorter.insert((k, 0), r);
            role.key = Some(k);
        }
    }

    /// Recompute every share (after the cluster total or a weight changed).
    fn rebuild_sorters(&mut self) {
        self.role_sorter.clear();
        for role in &mut self.roles {
            role.frameworks.clear();
            role.key = None;
        }
        for f in 0..self.frameworks.len() as u32 {
            if let Some(fw) = self.frameworks[f as usize].as_mut() {
                fw.key = None;
                self.refresh_framework(f);
            }
        }
        self.shares_dirty = false;
    }

    /// Charge `q` to framework `f` on agent `a` (role and sorters follow).
    fn charge(&mut self, f: u32, a: u32, q: &[i64]) {
        let Some(fw) = self.frameworks[f as usize].as_mut() else {
            return;
        };
        add_quantities(&mut fw.alloc, q);
        add_quantities(&mut self.roles[fw.role as usize].alloc, q);
        if let Some(agent) = self.agents[a as usize].as_mut() {
            match agent.by_framework.iter_mut().find(|(x, _)| *x == f) {
                Some((_, have)) => add_quantities(have, q),
                None => agent.by_framework.push((f, q.to_vec())),
            }
        }
        self.refresh_framework(f);
    }

    /// Take back up to `q` of framework `f`'s allocation on agent `a`
    /// (never more than was charged there).
    fn uncharge(&mut self, f: u32, a: u32, q: &[i64]) {
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return;
        };
        let Some(pos) = agent.by_framework.iter().position(|(x, _)| *x == f) else {
            return;
        };
        let have = &mut agent.by_framework[pos].1;
        let taken: Quantities = have
            .iter()
            .zip(q)
            .map(|(h, w)| (*h).min(*w).max(0))
            .collect();
        sub_quantities(have, &taken);
        if have.iter().all(|v| *v == 0) {
            agent.by_framework.swap_remove(pos);
        }
        let Some(fw) = self.frameworks[f as usize].as_mut() else {
            return;
        };
        sub_quantities(&mut fw.alloc, &taken);
        sub_quantities(&mut self.roles[fw.role as usize].alloc, &taken);
        self.refresh_framework(f);
    }

    // -----------------------------------------------------------------------
    // Agents
    // -----------------------------------------------------------------------

    /// Add an agent, or replace what is known of one that re-registers.
    /// `used` is what its running tasks hold, per framework id; frameworks
    /// the allocator does not know yet are charged when they are added.
    pub fn add_agent(
        &mut self,
        id: &str,
        total: Resources,
        used: &[(&str, Resources)],
    ) -> AgentIdx {
        if let Some(&a) = self.agent_ids.get(id) {
            self.drop_agent_allocations(a);
            if let Some(old) = self.agents[a as usize].take() {
                let q = self.quantities(&old.total);
                sub_quantities(&mut self.total, &q);
            }
        }
        let a = match self.agent_ids.get(id) {
            Some(&a) => a,
            None => {
                self.agents.push(None);
                let a = (self.agents.len() - 1) as u32;
                self.agent_ids.insert(id.to_string(), a);
                a
            }
        };
        let q = self.quantities(&total);
        add_quantities(&mut self.total, &q);
        let mut allocated = Resources::new();
        for (_, r) in used {
            if allocated.add_all(r).is_err() {
                tracing::warn!(agent = %id, resources = %r, "a running task's resources clash in type with the agent's; not counted");
            }
        }
        let available = total.saturating_minus(&allocated);
        self.agents[a as usize] = Some(AgentSlot {
            id: id.to_string(),
            available_reserved: available.has_reserved(),
            total,
            allocated,
            available,
            active: true,
            by_framework: Vec::new(),
        });
        for (fid, r) in used {
            if let Some(&f) = self.framework_ids.get(*fid) {
                let q = self.quantities(r);
                self.charge(f, a, &q);
            }
        }
        self.shares_dirty = true;
        AgentIdx(a)
    }

    fn drop_agent_allocations(&mut self, a: u32) {
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return;
        };
        let by = std::mem::take(&mut agent.by_framework);
        for (f, q) in by {
            if let Some(fw) = self.frameworks[f as usize].as_mut() {
                sub_quantities(&mut fw.alloc, &q);
                sub_quantities(&mut self.roles[fw.role as usize].alloc, &q);
                self.refresh_framework(f);
            }
        }
    }

    /// Forget an agent (removed from the cluster): its allocation is taken
    /// from its frameworks and its resources from the cluster total.
    pub fn remove_agent(&mut self, id: &str) {
        let Some(a) = self.agent_ids.remove(id) else {
            return;
        };
        self.drop_agent_allocations(a);
        if let Some(old) = self.agents[a as usize].take() {
            let q = self.quantities(&old.total);
            sub_quantities(&mut self.total, &q);
        }
        self.shares_dirty = true;
    }

    /// An agent that disconnected gets no offers until reactivated; its
    /// resources still count in the cluster total, as in Mesos.
    pub fn deactivate_agent(&mut self, id: &str) {
        if let Some(agent) = self
            .agent_ids
            .get(id)
            .and_then(|&a| self.agents[a as usize].as_mut())
        {
            agent.active = false;
        }
    }

    pub fn activate_agent(&mut self, id: &str) {
        if let Some(agent) = self
            .agent_ids
            .get(id)
            .and_then(|&a| self.agents[a as usize].as_mut())
        {
            agent.active = true;
        }
    }

    // -----------------------------------------------------------------------
    // Frameworks
    // -----------------------------------------------------------------------

    /// Add a framework, or reactivate one that fails over (its filters are
    /// cleared and it may change role). `existing` is what the framework's
    /// running tasks hold per agent id; it is only used for a framework the
    /// allocator does not know yet.
    pub fn add_framework(
        &mut self,
        id: &str,
        role: &str,
        suppressed: bool,
        existing: &[(&str, Resources)],
    ) -> FrameworkIdx {
        let r = self.role_index(role);
        if let Some(&f) = self.framework_ids.get(id) {
            if let Some(fw) = self.frameworks[f as usize].as_mut() {
                let old_role = fw.role;
                if let Some(k) = fw.key.take() {
                    self.roles[old_role as usize].frameworks.remove(k, f);
                }
                fw.active = true;
                fw.suppressed = suppressed;
                fw.filters.clear();
                if old_role != r {
                    fw.role = r;
                    let alloc = fw.alloc.clone();
                    sub_quantities(&mut self.roles[old_role as usize].alloc, &alloc);
                    self.roles[old_role as usize].members -= 1;
                    add_quantities(&mut self.roles[r as usize].alloc, &alloc);
                    self.roles[r as usize].members += 1;
                    self.refresh_role(old_role);
                }
                self.refresh_framework(f);
            }
            return FrameworkIdx(f);
        }
        self.frameworks.push(Some(FrameworkSlot {
            id: id.to_string(),
            role: r,
            active: true,
            suppressed,
            filters: HashMap::new(),
            alloc: Vec::new(),
            allocations: 0,
            key: None,
        }));
        let f = (self.frameworks.len() - 1) as u32;
        self.framework_ids.insert(id.to_string(), f);
        self.roles[r as usize].members += 1;
        for (aid, res) in existing {
            if let Some(&a) = self.agent_ids.get(*aid) {
                let q = self.quantities(res);
                self.charge(f, a, &q);
            }
        }
        self.refresh_framework(f);
        FrameworkIdx(f)
    }

    /// The framework disconnected: no offers, allocation still counted.
    pub fn deactivate_framework(&mut self, id: &str) {
        if let Some(&f) = self.framework_ids.get(id) {
            if let Some(fw) = self.frameworks[f as usize].as_mut() {
                fw.active = false;
            }
            self.refresh_framework(f);
        }
    }

    /// Forget a framework (torn down). Its tasks' resources stay allocated
    /// on their agents until they are recovered (the tasks end).
    pub fn remove_framework(&mut self, id: &str) {
        let Some(f) = self.framework_ids.remove(id) else {
            return;
        };
        let Some(fw) = self.frameworks[f as usize].take() else {
            return;
        };
        let role = &mut self.roles[fw.role as usize];
        if let Some(k) = fw.key {
            role.frameworks.remove(k, f);
        }
        sub_quantities(&mut role.alloc, &fw.alloc);
        role.members -= 1;
        self.refresh_role(fw.role);
        for agent in self.agents.iter_mut().flatten() {
            agent.by_framework.retain(|(x, _)| *x != f);
        }
    }

    /// SUPPRESS: no offers until [`Allocator::revive`].
    pub fn suppress(&mut self, id: &str) {
        self.set_suppressed(id, true, false);
    }

    /// REVIVE: offers again, and every DECLINE filter is cleared.
    pub fn revive(&mut self, id: &str) {
        self.set_suppressed(id, false, true);
    }

    fn set_suppressed(&mut self, id: &str, suppressed: bool, clear_filters: bool) {
        let Some(&f) = self.framework_ids.get(id) else {
            return;
        };
        if let Some(fw) = self.frameworks[f as usize].as_mut() {
            fw.suppressed = suppressed;
            if clear_filters {
                fw.filters.clear();
            }
        }
        self.refresh_framework(f);
    }

    /// Give back resources of `agent_id` that were allocated to
    /// `framework_id` (declined, rescinded, unused, or freed by a finished
    /// task). With `refuse` set (DECLINE's `refuse_seconds`), the framework
    /// is not offered these resources of that agent again until `now +
    /// refuse`. An unknown framework (torn down) only frees the agent.
    pub fn recover(
        &mut self,
        framework_id: &str,
        agent_id: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Instant,
    ) {
        let Some(&a) = self.agent_ids.get(agent_id) else {
            return;
        };
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return;
        };
        agent.allocated.subtract_saturating(resources);
        agent.available = agent.total.saturating_minus(&agent.allocated);
        agent.available_reserved = agent.available.has_reserved();
        let Some(&f) = self.framework_ids.get(framework_id) else {
            return;
        };
        let q = self.quantities(resources);
        self.uncharge(f, a, &q);
        if let Some(d) = refuse.filter(|d| !d.is_zero()) {
            if let Some(fw) = self.frameworks[f as usize].as_mut() {
                fw.filters.insert(
                    a,
                    Filter {
                        until: now
                            .checked_add(d)
                            .unwrap_or(now + Duration::from_secs(365 * 86400)),
                        resources: resources.clone(),
                    },
                );
            }
        }
    }

    // -----------------------------------------------------------------------
    // Weights and quota
    // -----------------------------------------------------------------------

    /// Set role weights (others keep theirs). Validated as a whole first:
    /// on error nothing changes.
    pub fn set_weights(&mut self, weights: &BTreeMap<String, f64>) -> Result<(), AllocatorError> {
        for (role, w) in weights {
            validate_weight(role, *w)?;
        }
        for (role, w) in weights {
            self.config.weights.insert(role.clone(), *w);
            let r = self.role_index(role);
            self.roles[r as usize].weight = *w;
        }
        self.shares_dirty = true;
        Ok(())
    }

    /// Every role's weight that differs from the default of 1, plus those
    /// set explicitly.
    pub fn weights(&self) -> BTreeMap<String, f64> {
        let mut out = self.config.weights.clone();
        for role in &self.roles {
            if role.weight != 1.0 {
                out.insert(role.name.clone(), role.weight);
            }
        }
        out
    }

    /// Set (`Some`) or remove (`None`) a role's quota guarantee.
    pub fn set_quota(
        &mut self,
        role: &str,
        guarantee: Option<Resources>,
    ) -> Result<(), AllocatorError> {
        if let Some(g) = &guarantee {
            validate_quota(role, g)?;
        } else {
            validate_role(role)?;
        }
        let q = guarantee
            .as_ref()
            .map(|g| self.quantities(g))
            .unwrap_or_default();
        let r = self.role_index(role);
        let slot = &mut self.roles[r as usize];
        slot.quota = guarantee.filter(|g| !g.is_empty());
        slot.quota_q = if slot.quota.is_some() { q } else { Vec::new() };
        Ok(())
    }

    /// Every role's quota guarantee.
    pub fn quotas(&self) -> BTreeMap<String, Resources> {
        self.roles
            .iter()
            .filter_map(|r| r.quota.clone().map(|q| (r.name.clone(), q)))
            .collect()
    }

    // -----------------------------------------------------------------------
    // Views
    // -----------------------------------------------------------------------

    /// The id of an agent named in an [`Allocation`].
    pub fn agent_id(&self, a: AgentIdx) -> Option<&str> {
        self.agents
            .get(a.0 as usize)?
            .as_ref()
            .map(|x| x.id.as_str())
    }

    /// The id of a framework named in an [`Allocation`].
    pub fn framework_id(&self, f: FrameworkIdx) -> Option<&str> {
        self.frameworks
            .get(f.0 as usize)?
            .as_ref()
            .map(|x| x.id.as_str())
    }

    /// An agent's allocated (offered + used) resources.
    pub fn agent_allocated(&self, id: &str) -> Option<&Resources> {
        let a = *self.agent_ids.get(id)?;
        self.agents[a as usize].as_ref().map(|x| &x.allocated)
    }

    /// An agent's resources not allocated to anyone.
    pub fn agent_available(&self, id: &str) -> Option<&Resources> {
        let a = *self.agent_ids.get(id)?;
        self.agents[a as usize].as_ref().map(|x| &x.available)
    }

    /// A framework's dominant share (of the cluster total).
    pub fn framework_share(&self, id: &str) -> Option<f64> {
        let f = *self.framework_ids.get(id)?;
        self.frameworks[f as usize]
            .as_ref()
            .map(|fw| dominant_share(&fw.alloc, &self.total))
    }

    /// A framework's allocated scalars (offered + used), by name.
    pub fn framework_allocated(&self, id: &str) -> Option<BTreeMap<String, f64>> {
        let f = *self.framework_ids.get(id)?;
        self.frameworks[f as usize]
            .as_ref()
            .map(|fw| self.named(&fw.alloc))
    }

    fn named(&self, q: &[i64]) -> BTreeMap<String, f64> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), q.get(i).copied().unwrap_or(0) as f64 / 1000.0))
            .collect()
    }

    /// Every role that has frameworks, a weight or a quota.
    pub fn roles(&self) -> Vec<RoleSummary> {
        self.roles
            .iter()
            .filter(|r| r.members > 0 || r.quota.is_some() || r.weight != 1.0)
            .map(|r| {
                let share = dominant_share(&r.alloc, &self.total);
                RoleSummary {
                    name: r.name.clone(),
                    weight: r.weight,
                    quota: r.quota.clone(),
                    allocated: self.named(&r.alloc),
                    dominant_share: share,
                    weighted_share: share / r.weight,
                    frameworks: r.members,
                }
            })
            .collect()
    }

    /// Cluster total of every scalar, by name.
    pub fn total(&self) -> BTreeMap<String, f64> {
        self.named(&self.total)
    }

    /// Check the incremental bookkeeping against a recomputation: cluster
    /// total, per-framework and per-role allocations, sorter keys. Walks
    /// everything; for tests and debugging, never on the hot path.
    pub fn check_sorters(&self) -> Result<(), String> {
        let mut total: Quantities = Vec::new();
        let mut by_fw: HashMap<u32, Quantities> = HashMap::new();
        for agent in self.agents.iter().flatten() {
            for (name, _, v) in agent.total.scalars_milli() {
                let i = self
                    .names
                    .iter()
                    .position(|n| n == name)
                    .ok_or("uninterned name")?;
                if total.len() <= i {
                    total.resize(i + 1, 0);
                }
                total[i] += v;
            }
            for (f, q) in &agent.by_framework {
                add_quantities(by_fw.entry(*f).or_default(), q);
            }
            if agent.available != agent.total.saturating_minus(&agent.allocated) {
                return Err(format!("agent {}: available is stale", agent.id));
            }
        }
        let trim = |q: &[i64]| -> Vec<i64> {
            let mut v = q.to_vec();
            while v.last() == Some(&0) {
                v.pop();
            }
            v
        };
        if trim(&total) != trim(&self.total) {
            return Err(format!(
                "cluster total {:?} != sum of agents {:?}",
                self.total, total
            ));
        }
        let mut by_role: HashMap<u32, Quantities> = HashMap::new();
        for (f, fw) in self.frameworks.iter().enumerate() {
            let Some(fw) = fw else { continue };
            let expect = by_fw.remove(&(f as u32)).unwrap_or_default();
            if trim(&expect) != trim(&fw.alloc) {
                return Err(format!(
                    "framework {}: allocation {:?} != sum over agents {:?}",
                    fw.id, fw.alloc, expect
                ));
            }
            add_quantities(by_role.entry(fw.role).or_default(), &fw.alloc);
            let eligible = fw.active && !fw.suppressed;
            if eligible != fw.key.is_some() {
                return Err(format!("framework {}: sorter membership is stale", fw.id));
            }
            if !self.shares_dirty {
                if let Some(k) = fw.key {
                    let want = (
                        share_key(dominant_share(&fw.alloc, &self.total)),
                        fw.allocations,
                    );
                    if k != want {
                        return Err(format!(
                            "framework {}: key {k:?} != recomputed {want:?}",
                            fw.id
                        ));
                    }
                }
            }
        }
        if let Some((f, _)) = by_fw.iter().find(|(_, q)| q.iter().any(|v| *v != 0)) {
            return Err(format!("agents hold allocation of unknown framework #{f}"));
        }
        for (r, role) in self.roles.iter().enumerate() {
            let expect = by_role.remove(&(r as u32)).unwrap_or_default();
            if trim(&expect) != trim(&role.alloc) {
                return Err(format!(
                    "role {}: allocation {:?} != sum of frameworks {:?}",
                    role.name, role.alloc, expect
                ));
            }
            if role.key.is_some() == role.frameworks.is_empty() {
                return Err(format!(
                    "role {}: role sorter membership is stale",
                    role.name
                ));
            }
        }
        Ok(())
    }

    /// Number of agents and frameworks known.
    pub fn counts(&self) -> (usize, usize) {
        (self.agent_ids.len(), self.framework_ids.len())
    }
}
