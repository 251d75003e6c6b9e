//! The allocation pass: a quota stage, then the fair (DRF) stage.
//!
//! Stage 1 walks every agent and offers its resources to roles whose quota
//! guarantee is not met yet, lowest weighted share first (the whole of what
//! the role may use on that agent, as Mesos 1.0 does; the framework
//! declines what it does not need). Stage 2 walks every agent again and
//! offers what is left to the role, then the framework, furthest below its
//! share, holding back, per resource, what unsatisfied quotas still need
//! (the headroom). Each agent may serve several roles in one pass (its
//! reservations for one role, the unreserved rest for another) but each
//! role at most once per agent and pass.

use std::borrow::Cow;
use std::time::Instant;

use meseta_core::ids::DEFAULT_ROLE;
use meseta_core::Resources;

use super::{allocatable, AgentIdx, Allocation, Allocator, FrameworkIdx, RoleSlot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Quota,
    Fair,
}

/// Whether a role's allocation is below its quota guarantee in any resource.
fn unsatisfied(r: &RoleSlot) -> bool {
    r.quota.is_some()
        && r.quota_q
            .iter()
            .enumerate()
            .any(|(i, q)| *q > 0 && r.alloc.get(i).copied().unwrap_or(0) < *q)
}

/// Spare amount per name that is not held back; `i64::MAX` = no limit.
type Spare = Vec<i64>;

fn cap_to_spare(r: &Resources, spare: &[i64], names: &[String]) -> Resources {
    let mut out = r.clone();
    for (i, s) in spare.iter().enumerate() {
        if *s != i64::MAX {
            if let Some(name) = names.get(i) {
                out = out.cap_unreserved_scalar(name, *s);
            }
        }
    }
    out
}

impl Allocator {
    /// One allocation pass over every active agent. Returns the offers to
    /// make; their resources are allocated from now on and must come back
    /// through [`Allocator::recover`] when not (or no longer) used.
    /// Expired DECLINE filters are dropped first. The agent walk starts at a
    /// different agent each pass so no agent is always first.
    pub fn allocate(&mut self, now: Instant) -> Vec<Allocation> {
        for fw in self.frameworks.iter_mut().flatten() {
            if !fw.filters.is_empty() {
                fw.filters.retain(|_, f| f.until > now);
            }
        }
        if self.shares_dirty {
            self.rebuild_sorters();
        }
        let mut out = Vec::new();
        let n = self.agents.len();
        if n == 0 || self.role_sorter.is_empty() {
            return out;
        }
        self.cursor = self.cursor.wrapping_add(1);
        let start = self.cursor.wrapping_mul(7919) % n;
        if self
            .roles
            .iter()
            .any(|r| unsatisfied(r) && !r.frameworks.is_empty())
        {
            for k in 0..n {
                self.allocate_agent(((start + k) % n) as u32, Stage::Quota, now, None, &mut out);
            }
        }
        let mut spare = self.headroom_spare();
        for k in 0..n {
            self.allocate_agent(
                ((start + k) % n) as u32,
                Stage::Fair,
                now,
                spare.as_mut(),
                &mut out,
            );
        }
        out
    }

    /// What may still be handed out per resource without eating into the
    /// headroom unsatisfied quotas need; `None` when every quota is met.
    fn headroom_spare(&self) -> Option<Spare> {
        let mut required = vec![0i64; self.names.len()];
        let mut any = false;
        for r in self.roles.iter().filter(|r| r.quota.is_some()) {
            for (i, q) in r.quota_q.iter().enumerate() {
                let need = q - r.alloc.get(i).copied().unwrap_or(0);
                if need > 0 {
                    required[i] += need;
                    any = true;
                }
            }
        }
        if !any {
            return None;
        }
        let mut free = vec![0i64; self.names.len()];
        for agent in self.agents.iter().flatten().filter(|a| a.active) {
            for (name, role, v) in agent.available.scalars_milli() {
                if role == DEFAULT_ROLE {
                    if let Some(i) = self.names.iter().position(|n| n == name) {
                        free[i] += v;
                    }
                }
            }
        }
        Some(
            required
                .iter()
                .zip(free)
                .map(|(req, fr)| {
                    if *req > 0 {
                        (fr - req).max(0)
                    } else {
                        i64::MAX
                    }
                })
                .collect(),
        )
    }

    /// Offer agent `a`'s available resources, role by role, until nothing
    /// allocatable is left or no eligible framework wants them.
    fn allocate_agent(
        &mut self,
        a: u32,
        stage: Stage,
        now: Instant,
        mut spare: Option<&mut Spare>,
        out: &mut Vec<Allocation>,
    ) {
        let mut served: Vec<u32> = Vec::new();
        loop {
            let Some(agent) = self.agents[a as usize].as_ref() else {
                return;
            };
            if !agent.active || agent.available.is_empty() {
                return;
            }
            let reserved = agent.available_reserved;
            // Without reservations and headroom, every role is offered the
            // same thing: check it once.
            let uniform = !reserved && spare.is_none();
            if uniform && !allocatable(&agent.available) {
                return;
            }
            // Some(resources): a role was offered part of what is left;
            // None: (uniform) the whole of it, moved out below.
            let mut chosen: Option<(u32, u32, Option<Resources>)> = None;
            'roles: for r in self.role_sorter.iter() {
                if served.contains(&r) {
                    continue;
                }
                let role = &self.roles[r as usize];
                if stage == Stage::Quota && !unsatisfied(role) {
                    continue;
                }
                let mut offerable: Cow<'_, Resources> = if reserved {
                    Cow::Owned(agent.available.allocatable_to(&role.name))
                } else {
                    Cow::Borrowed(&agent.available)
                };
                if let Some(sp) = spare.as_deref() {
                    offerable = Cow::Owned(cap_to_spare(&offerable, sp, &self.names));
                }
                if !uniform && !allocatable(&offerable) {
                    continue;
                }
                for f in role.frameworks.iter() {
                    let Some(fw) = self.frameworks[f as usize].as_ref() else {
                        continue;
                    };
                    if let Some(filter) = fw.filters.get(&a) {
                        if filter.until > now && filter.resources.contains(&offerable) {
                            continue;
                        }
                    }
                    let part = match offerable {
                        Cow::Borrowed(_) => None,
                        Cow::Owned(r) => Some(r),
                    };
                    chosen = Some((r, f, part));
                    break 'roles;
                }
            }
            let Some((r, f, part)) = chosen else {
                return;
            };
            match part {
                Some(resources) => {
                    served.push(r);
                    self.make_allocation(a, f, resources, spare.as_deref_mut(), out);
                }
                // Everything the agent has left goes: no copy, no
                // subtraction, and no other role can be served after.
                None => return self.allocate_whole(a, f, out),
            }
        }
    }

    /// [`Self::make_allocation`] of all of agent `a`'s available resources
    /// (no headroom held back): they are moved into the offer rather than
    /// copied and subtracted, the common case at scale.
    fn allocate_whole(&mut self, a: u32, f: u32, out: &mut Vec<Allocation>) {
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return;
        };
        let resources = std::mem::take(&mut agent.available);
        agent.available_reserved = false;
        if let Err(e) = agent.allocated.add_all(&resources) {
            tracing::error!(agent = %agent.id, error = %e, "allocation clashes with the agent's resources; not offered");
            agent.available = resources;
            agent.available_reserved = agent.available.has_reserved();
            return;
        }
        let q = self.quantities(&resources);
        if let Some(fw) = self.frameworks[f as usize].as_mut() {
            fw.allocations += 1;
        }
        self.charge(f, a, &q);
        out.push(Allocation {
            framework: FrameworkIdx(f),
            agent: AgentIdx(a),
            resources,
        });
    }

    fn make_allocation(
        &mut self,
        a: u32,
        f: u32,
        resources: Resources,
        spare: Option<&mut Spare>,
        out: &mut Vec<Allocation>,
    ) {
        let q = self.quantities(&resources);
        if let Some(sp) = spare {
            for (name, role, v) in resources.scalars_milli() {
                if role == DEFAULT_ROLE {
                    if let Some(i) = self.names.iter().position(|n| n == name) {
                        if let Some(s) = sp.get_mut(i).filter(|s| **s != i64::MAX) {
                            *s = (*s - v).max(0);
                        }
                    }
                }
            }
        }
        let Some(agent) = self.agents[a as usize].as_mut() else {
            return;
        };
        if let Err(e) = agent.allocated.add_all(&resources) {
            // Cannot happen: the resources were taken out of the agent's own
            // available resources, so their types match its total.
            tracing::error!(agent = %agent.id, error = %e, "allocation clashes with the agent's resources; not offered");
            return;
        }
        agent.available.subtract_saturating(&resources);
        agent.available_reserved = agent.available.has_reserved();
        if let Some(fw) = self.frameworks[f as usize].as_mut() {
            fw.allocations += 1;
        }
        self.charge(f, a, &q);
        out.push(Allocation {
            framework: FrameworkIdx(f),
            agent: AgentIdx(a),
            resources,
        });
    }
}
