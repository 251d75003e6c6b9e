//! Resources as Mesos has them: named scalars (cpus, mem, disk, gpus),
//! ranges (ports) and sets, each owned by a role (`*` is unreserved).
//!
//! [`Resources`] keeps at most one entry per (name, role) and never an empty
//! one, so equality and containment are structural. Scalars are kept in
//! fixed point with three decimals, as Mesos does, so that adding and
//! subtracting `0.1` a thousand times comes back to where it started.

use std::collections::BTreeSet;
use std::fmt;

use meseta_proto::v1 as pb;

use crate::attributes::format_scalar;
use crate::ids::DEFAULT_ROLE;
use crate::CoreError;

/// The value of one resource.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceValue {
    /// Fixed point: thousandths (`1.5` cpus is `1500`).
    Scalar(i64),
    /// Inclusive, sorted, non-overlapping, non-adjacent ranges.
    Ranges(Vec<(u64, u64)>),
    Set(BTreeSet<String>),
}

/// One named resource owned by a role.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    pub role: String,
    pub value: ResourceValue,
}

/// A bag of resources; see the module docs for the invariants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    items: Vec<Resource>,
}

fn to_fixed(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

fn from_fixed(v: i64) -> f64 {
    v as f64 / 1000.0
}

/// Sort and merge ranges into canonical form.
fn normalize_ranges(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.retain(|(b, e)| b <= e);
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (b, e) in r {
        match out.last_mut() {
            Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

fn ranges_contain(outer: &[(u64, u64)], inner: &[(u64, u64)]) -> bool {
    inner
        .iter()
        .all(|(b, e)| outer.iter().any(|(ob, oe)| ob <= b && e <= oe))
}

fn ranges_subtract(from: &[(u64, u64)], take: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = from.to_vec();
    for &(tb, te) in take {
        let mut next = Vec::with_capacity(out.len() + 1);
        for (b, e) in out {
            if te < b || tb > e {
                next.push((b, e));
                continue;
            }
            if tb > b {
                next.push((b, tb - 1));
            }
            if te < e {
                next.push((te + 1, e));
            }
        }
        out = next;
    }
    normalize_ranges(out)
}

impl ResourceValue {
    fn kind(&self) -> &'static str {
        match self {
            ResourceValue::Scalar(_) => "SCALAR",
            ResourceValue::Ranges(_) => "RANGES",
            ResourceValue::Set(_) => "SET",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            ResourceValue::Scalar(v) => *v <= 0,
            ResourceValue::Ranges(r) => r.is_empty(),
            ResourceValue::Set(s) => s.is_empty(),
        }
    }

    fn add(&mut self, other: &ResourceValue) -> bool {
        match (self, other) {
            (ResourceValue::Scalar(a), ResourceValue::Scalar(b)) => *a += b,
            (ResourceValue::Ranges(a), ResourceValue::Ranges(b)) => {
                let mut all = std::mem::take(a);
                all.extend_from_slice(b);
                *a = normalize_ranges(all);
            }
            (ResourceValue::Set(a), ResourceValue::Set(b)) => a.extend(b.iter().cloned()),
            _ => return false,
        }
        true
    }

    fn contains(&self, other: &ResourceValue) -> bool {
        match (self, other) {
            (ResourceValue::Scalar(a), ResourceValue::Scalar(b)) => a >= b,
            (ResourceValue::Ranges(a), ResourceValue::Ranges(b)) => ranges_contain(a, b),
            (ResourceValue::Set(a), ResourceValue::Set(b)) => b.is_subset(a),
            _ => false,
        }
    }

    fn subtract(&mut self, other: &ResourceValue) {
        match (self, other) {
            (ResourceValue::Scalar(a), ResourceValue::Scalar(b)) => *a = (*a - b).max(0),
            (ResourceValue::Ranges(a), ResourceValue::Ranges(b)) => *a = ranges_subtract(a, b),
            (ResourceValue::Set(a), ResourceValue::Set(b)) => a.retain(|x| !b.contains(x)),
            _ => {}
        }
    }
}

impl fmt::Display for ResourceValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceValue::Scalar(v) => write!(f, "{}", format_scalar(from_fixed(*v))),
            ResourceValue::Ranges(r) => {
                let parts: Vec<String> = r.iter().map(|(b, e)| format!("{b}-{e}")).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            ResourceValue::Set(s) => {
                let parts: Vec<&str> = s.iter().map(String::as_str).collect();
                write!(f, "{{{}}}", parts.join(", "))
            }
        }
    }
}

impl Resource {
    /// An unreserved scalar, e.g. `Resource::scalar("cpus", 0.5)`.
    pub fn scalar(name: &str, value: f64) -> Resource {
        Resource {
            name: name.to_string(),
            role: DEFAULT_ROLE.to_string(),
            value: ResourceValue::Scalar(to_fixed(value)),
        }
    }

    /// Unreserved ranges, e.g. `Resource::ranges("ports", &[(31000, 31010)])`.
    pub fn ranges(name: &str, ranges: &[(u64, u64)]) -> Resource {
        Resource {
            name: name.to_string(),
            role: DEFAULT_ROLE.to_string(),
            value: ResourceValue::Ranges(normalize_ranges(ranges.to_vec())),
        }
    }

    /// The same resource owned by `role`.
    pub fn with_role(mut self, role: &str) -> Resource {
        self.role = role.to_string();
        self
    }

    /// The scalar value, if this is a scalar.
    pub fn as_scalar(&self) -> Option<f64> {
        match self.value {
            ResourceValue::Scalar(v) => Some(from_fixed(v)),
            _ => None,
        }
    }

    /// Parse one `name(role):value` term.
    pub fn parse(text: &str) -> Result<Resource, CoreError> {
        let bad = |reason: &str| CoreError::InvalidResource {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (head, value) = text
            .split_once(':')
            .ok_or_else(|| bad("expected name:value"))?;
        let head = head.trim();
        let value = value.trim();
        let (name, role) = match head.split_once('(') {
            Some((n, rest)) => {
                let role = rest.strip_suffix(')').ok_or_else(|| bad("unclosed role"))?;
                if role.is_empty() {
                    return Err(bad("empty role"));
                }
                (n.trim(), role.trim())
            }
            None => (head, DEFAULT_ROLE),
        };
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        let value = if let Some(inner) = value.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(|| bad("unclosed '['"))?;
            let mut ranges = Vec::new();
            for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (b, e) = part.split_once('-').unwrap_or((part, part));
                let b: u64 = b
                    .trim()
                    .parse()
                    .map_err(|_| bad("range bound is not a number"))?;
                let e: u64 = e
                    .trim()
                    .parse()
                    .map_err(|_| bad("range bound is not a number"))?;
                if b > e {
                    return Err(bad("range begins after it ends"));
                }
                ranges.push((b, e));
            }
            ResourceValue::Ranges(normalize_ranges(ranges))
        } else if let Some(inner) = value.strip_prefix('{') {
            let inner = inner.strip_suffix('}').ok_or_else(|| bad("unclosed '{'"))?;
            ResourceValue::Set(
                inner
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect(),
            )
        } else {
            let v: f64 = value.parse().map_err(|_| bad("value is not a number"))?;
            if !v.is_finite() || v < 0.0 {
                return Err(bad("value must be a non-negative number"));
            }
            ResourceValue::Scalar(to_fixed(v))
        };
        Ok(Resource {
            name: name.to_string(),
            role: role.to_string(),
            value,
        })
    }

    pub fn to_proto(&self) -> pb::Resource {
        let mut r = pb::Resource {
            name: self.name.clone(),
            role: self.role.clone(),
            ..Default::default()
        };
        match &self.value {
            ResourceValue::Scalar(v) => {
                r.r#type = pb::value::Type::Scalar as i32;
                r.scalar = Some(pb::value::Scalar {
                    value: from_fixed(*v),
                });
            }
            ResourceValue::Ranges(ranges) => {
                r.r#type = pb::value::Type::Ranges as i32;
                r.ranges = Some(pb::value::Ranges {
                    range: ranges
                        .iter()
                        .map(|&(begin, end)| pb::value::Range { begin, end })
                        .collect(),
                });
            }
            ResourceValue::Set(s) => {
                r.r#type = pb::value::Type::Set as i32;
                r.set = Some(pb::value::Set {
                    item: s.iter().cloned().collect(),
                });
            }
        }
        r
    }

    /// From protobuf; fails on a type whose value is missing.
    pub fn from_proto(r: &pb::Resource) -> Result<Resource, CoreError> {
        let missing = |what: &str| CoreError::InvalidResource {
            text: r.name.clone(),
            reason: format!("missing {what} value"),
        };
        let value = match pb::value::Type::try_from(r.r#type) {
            Ok(pb::value::Type::Scalar) => {
                let v = r.scalar.as_ref().ok_or_else(|| missing("scalar"))?.value;
                if !v.is_finite() || v < 0.0 {
                    return Err(CoreError::InvalidResource {
                        text: r.name.clone(),
                        reason: "scalar must be a non-negative number".into(),
                    });
                }
                ResourceValue::Scalar(to_fixed(v))
            }
            Ok(pb::value::Type::Ranges) => ResourceValue::Ranges(normalize_ranges(
                r.ranges
                    .as_ref()
                    .ok_or_else(|| missing("ranges"))?
                    .range
                    .iter()
                    .map(|x| (x.begin, x.end))
                    .collect(),
            )),
            Ok(pb::value::Type::Set) => ResourceValue::Set(
                r.set
                    .as_ref()
                    .ok_or_else(|| missing("set"))?
                    .item
                    .iter()
                    .cloned()
                    .collect(),
            ),
            _ => {
                return Err(CoreError::InvalidResource {
                    text: r.name.clone(),
                    reason: "unsupported resource type".into(),
                })
            }
        };
        let role = if r.role.is_empty() {
            DEFAULT_ROLE
        } else {
            &r.role
        };
        Ok(Resource {
            name: r.name.clone(),
            role: role.to_string(),
            value,
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.role == DEFAULT_ROLE {
            write!(f, "{}:{}", self.name, self.value)
        } else {
            write!(f, "{}({}):{}", self.name, self.role, self.value)
        }
    }
}

impl Resources {
    pub fn new() -> Resources {
        Resources::default()
    }

    /// Parse Mesos' `--resources` text: `cpus:2;mem:2048;ports:[31000-31100]`,
    /// with optional roles `cpus(slave_public):2`.
    pub fn parse(text: &str) -> Result<Resources, CoreError> {
        let mut out = Resources::new();
        for term in text.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            out.add(Resource::parse(term)?)?;
        }
        Ok(out)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.items.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Add one resource, merging with the entry of the same name and role.
    pub fn add(&mut self, r: Resource) -> Result<(), CoreError> {
        self.add_ref(&r)
    }

    /// [`Resources::add`] of a borrowed resource: cloned only when it is
    /// new to `self`.
    fn add_ref(&mut self, r: &Resource) -> Result<(), CoreError> {
        if r.value.is_empty() {
            return Ok(());
        }
        match self
            .items
            .iter_mut()
            .find(|x| x.name == r.name && x.role == r.role)
        {
            Some(existing) => {
                let found = existing.value.kind();
                if !existing.value.add(&r.value) {
                    return Err(CoreError::TypeMismatch {
                        name: r.name.clone(),
                        found,
                        expected: r.value.kind(),
                    });
                }
            }
            None => self.items.push(r.clone()),
        }
        Ok(())
    }

    /// `self + other`; type mismatches between same-named resources are errors.
    pub fn plus(&self, other: &Resources) -> Result<Resources, CoreError> {
        let mut out = self.clone();
        out.add_all(other)?;
        Ok(out)
    }

    /// Whether every resource of `other` (by name and role) is in `self`.
    pub fn contains(&self, other: &Resources) -> bool {
        other.items.iter().all(|o| {
            self.items
                .iter()
                .find(|x| x.name == o.name && x.role == o.role)
                .is_some_and(|x| x.value.contains(&o.value))
        })
    }

    /// `self - other`, failing (and changing nothing) when `self` does not
    /// contain `other`.
    pub fn minus(&self, other: &Resources) -> Result<Resources, CoreError> {
        if let Some(o) = other.items.iter().find(|o| {
            !self
                .items
                .iter()
                .find(|x| x.name == o.name && x.role == o.role)
                .is_some_and(|x| x.value.contains(&o.value))
        }) {
            return Err(CoreError::Insufficient {
                name: o.name.clone(),
                role: o.role.clone(),
            });
        }
        Ok(self.saturating_minus(other))
    }

    /// `self - other`, dropping what `self` does not have.
    pub fn saturating_minus(&self, other: &Resources) -> Resources {
        let mut out = self.clone();
        out.subtract_saturating(other);
        out
    }

    /// Add every resource of `other` to `self` in place (no copy of
    /// `self`). On a type mismatch `self` keeps what was added before it.
    pub fn add_all(&mut self, other: &Resources) -> Result<(), CoreError> {
        for r in &other.items {
            self.add_ref(r)?;
        }
        Ok(())
    }

    /// `self -= other` in place, dropping what `self` does not have (the
    /// in-place twin of [`Resources::saturating_minus`]).
    pub fn subtract_saturating(&mut self, other: &Resources) {
        for o in &other.items {
            if let Some(x) = self
                .items
                .iter_mut()
                .find(|x| x.name == o.name && x.role == o.role)
            {
                x.value.subtract(&o.value);
            }
        }
        self.items.retain(|x| !x.value.is_empty());
    }

    /// Every scalar as `(name, role, thousandths)`.
    pub fn scalars_milli(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.items.iter().filter_map(|x| match x.value {
            ResourceValue::Scalar(v) => Some((x.name.as_str(), x.role.as_str(), v)),
            _ => None,
        })
    }

    /// Total scalar `name` across roles, in thousandths (0 when absent).
    pub fn scalar_milli(&self, name: &str) -> i64 {
        self.scalars_milli()
            .filter(|(n, _, _)| *n == name)
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Whether any resource is reserved for a role (not `*`).
    pub fn has_reserved(&self) -> bool {
        self.items.iter().any(|x| x.role != DEFAULT_ROLE)
    }

    /// Only the unreserved (`*`) resources.
    pub fn unreserved(&self) -> Resources {
        self.filter_roles(&[DEFAULT_ROLE])
    }

    /// The same resources with every unreserved scalar `name` cut down to at
    /// most `max_milli` thousandths in total (reservations are kept whole).
    /// Used by the allocator to keep quota headroom.
    pub fn cap_unreserved_scalar(&self, name: &str, max_milli: i64) -> Resources {
        let mut out = self.clone();
        for x in out.items.iter_mut() {
            if x.name == name && x.role == DEFAULT_ROLE {
                if let ResourceValue::Scalar(v) = &mut x.value {
                    *v = (*v).min(max_milli.max(0));
                }
            }
        }
        out.items.retain(|x| !x.value.is_empty());
        out
    }

    /// Total scalar `name` across roles (0 when absent).
    pub fn scalar(&self, name: &str) -> f64 {
        from_fixed(
            self.items
                .iter()
                .filter(|x| x.name == name)
                .map(|x| match x.value {
                    ResourceValue::Scalar(v) => v,
                    _ => 0,
                })
                .sum(),
        )
    }

    /// All ranges of `name` across roles, merged.
    pub fn ranges(&self, name: &str) -> Vec<(u64, u64)> {
        let mut all = Vec::new();
        for x in self.items.iter().filter(|x| x.name == name) {
            if let ResourceValue::Ranges(r) = &x.value {
                all.extend_from_slice(r);
            }
        }
        normalize_ranges(all)
    }

    /// Only the resources owned by one of `roles`.
    pub fn filter_roles(&self, roles: &[&str]) -> Resources {
        Resources {
            items: self
                .items
                .iter()
                .filter(|x| roles.contains(&x.role.as_str()))
                .cloned()
                .collect(),
        }
    }

    /// What a framework in `role` may use: that role's reservations and the
    /// unreserved pool.
    pub fn allocatable_to(&self, role: &str) -> Resources {
        self.filter_roles(&[role, DEFAULT_ROLE])
    }

    /// Every resource re-owned by `role` (Mesos' `flatten`), merged.
    pub fn flatten(&self, role: &str) -> Resources {
        let mut out = Resources::new();
        for r in &self.items {
            // Same name and type merge; a type clash cannot arise when the
            // input itself was consistent per name, so skip it if it does.
            let _ = out.add(r.clone().with_role(role));
        }
        out
    }

    /// Take `n` distinct values out of the ranges named `name` (lowest first),
    /// returning them with the resources they use. `None` when there are
    /// fewer than `n`.
    pub fn take_range_values(&self, name: &str, n: usize) -> Option<(Vec<u64>, Resources)> {
        let mut picked = Vec::with_capacity(n);
        let mut used = Resources::new();
        for r in self.items.iter().filter(|x| x.name == name) {
            if let ResourceValue::Ranges(ranges) = &r.value {
                for &(b, e) in ranges {
                    let mut v = b;
                    while v <= e && picked.len() < n {
                        picked.push(v);
                        used.add(Resource {
                            name: name.to_string(),
                            role: r.role.clone(),
                            value: ResourceValue::Ranges(vec![(v, v)]),
                        })
                        .ok()?;
                        v += 1;
                    }
                }
            }
        }
        (picked.len() == n).then_some((picked, used))
    }

    /// The resources owning range value `v` of `name`, as a single-value
    /// resource (the first role that has it).
    pub fn range_value(&self, name: &str, v: u64) -> Option<Resource> {
        self.items.iter().find_map(|r| match &r.value {
            ResourceValue::Ranges(ranges)
                if r.name == name && ranges.iter().any(|&(b, e)| b <= v && v <= e) =>
            {
                Some(Resource {
                    name: name.to_string(),
                    role: r.role.clone(),
                    value: ResourceValue::Ranges(vec![(v, v)]),
                })
            }
            _ => None,
        })
    }

    /// Take `amount` of scalar `name`, preferring the role's reservation over
    /// the unreserved pool. `None` when there is not enough.
    pub fn take_scalar(&self, name: &str, amount: f64, prefer_role: &str) -> Option<Resources> {
        let mut want = to_fixed(amount);
        let mut out = Resources::new();
        if want <= 0 {
            return Some(out);
        }
        let mut candidates: Vec<&Resource> = self.items.iter().filter(|x| x.name == name).collect();
        candidates.sort_by_key(|x| if x.role == prefer_role { 0 } else { 1 });
        for r in candidates {
            if let ResourceValue::Scalar(have) = r.value {
                let take = have.min(want);
                if take > 0 {
                    out.add(Resource {
                        name: name.to_string(),
                        role: r.role.clone(),
                        value: ResourceValue::Scalar(take),
                    })
                    .ok()?;
                    want -= take;
                }
            }
            if want == 0 {
                break;
            }
        }
        (want == 0).then_some(out)
    }

    pub fn to_proto(&self) -> Vec<pb::Resource> {
        self.items.iter().map(Resource::to_proto).collect()
    }

    pub fn from_proto(list: &[pb::Resource]) -> Result<Resources, CoreError> {
        let mut out = Resources::new();
        for r in list {
            out.add(Resource::from_proto(r)?)?;
        }
        Ok(out)
    }

    /// Mesos' JSON shape in `/master/state`: `{"cpus": 2.0, "mem": 1024.0,
    /// "ports": "[31000-32000]"}` (roles merged).
    pub fn to_mesos_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for name in ["cpus", "mem", "disk", "gpus"] {
            map.insert(name.to_string(), serde_json::json!(self.scalar(name)));
        }
        for r in &self.items {
            match &r.value {
                ResourceValue::Scalar(_) => {
                    if !map.contains_key(&r.name) {
                        map.insert(r.name.clone(), serde_json::json!(self.scalar(&r.name)));
                    }
                }
                ResourceValue::Ranges(_) => {
                    let merged = ResourceValue::Ranges(self.ranges(&r.name));
                    map.insert(
                        r.name.clone(),
                        serde_json::json!(merged.to_string().replace(' ', "")),
                    );
                }
                ResourceValue::Set(_) => {
                    map.insert(r.name.clone(), serde_json::json!(r.value.to_string()));
                }
            }
        }
        serde_json::Value::Object(map)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.items.iter().map(|r| r.to_string()).collect();
        write!(f, "{}", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_mesos_resource_text() {
        let r = Resources::parse("cpus:2;mem:2048;disk:1000;ports:[31000-31100]").expect("valid");
        assert_eq!(r.scalar("cpus"), 2.0);
        assert_eq!(r.scalar("mem"), 2048.0);
        assert_eq!(r.ranges("ports"), vec![(31000, 31100)]);
        let reserved =
            Resources::parse("cpus(slave_public):2;mem(slave_public):1024;cpus:2;mem:4096")
                .expect("valid");
        assert_eq!(reserved.scalar("cpus"), 4.0);
        assert_eq!(
            reserved.filter_roles(&["slave_public"]).scalar("mem"),
            1024.0
        );
        assert_eq!(reserved.allocatable_to("other").scalar("cpus"), 2.0);
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "cpus",
            "cpus:x",
            "ports:[5-1]",
            "cpus(:1",
            "cpus:-1",
            ":3",
            "ports:[1-2",
        ] {
            assert!(Resources::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert!(Resources::parse("cpus:1;cpus:[1-2]").is_err());
    }

    #[test]
    fn scalar_fixed_point_is_exact() {
        let mut r = Resources::parse("cpus:1").expect("valid");
        let tenth = Resources::parse("cpus:0.1").expect("valid");
        for _ in 0..10 {
            r = r.minus(&tenth).expect("enough");
        }
        assert!(r.is_empty());
    }

    #[test]
    fn ranges_subtract_and_take() {
        let r = Resources::parse("ports:[31000-31005]").expect("valid");
        let (ports, used) = r.take_range_values("ports", 2).expect("enough");
        assert_eq!(ports, vec![31000, 31001]);
        let left = r.minus(&used).expect("contained");
        assert_eq!(left.ranges("ports"), vec![(31002, 31005)]);
        assert!(r.take_range_values("ports", 7).is_none());
        let mid = Resources::parse("ports:[31003-31003]").expect("valid");
        assert_eq!(
            r.minus(&mid).expect("contained").ranges("ports"),
            vec![(31000, 31002), (31004, 31005)]
        );
    }

    #[test]
    fn take_scalar_prefers_reservation() {
        let r = Resources::parse("cpus(web):1;cpus:2").expect("valid");
        let t = r.take_scalar("cpus", 1.5, "web").expect("enough");
        assert_eq!(t.filter_roles(&["web"]).scalar("cpus"), 1.0);
        assert_eq!(t.filter_roles(&["*"]).scalar("cpus"), 0.5);
        assert!(r.take_scalar("cpus", 3.5, "web").is_none());
    }

    #[test]
    fn proto_round_trip() {
        let r = Resources::parse("cpus(a):1.5;mem:10;ports:[1-3,7-9];disks:{x,y}").expect("valid");
        assert_eq!(Resources::from_proto(&r.to_proto()).expect("valid"), r);
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        let scalar = (
            prop::sample::select(vec!["cpus", "mem"]),
            prop::sample::select(vec!["*", "r1"]),
            0u32..5000,
        )
            .prop_map(|(n, role, v)| Resource::scalar(n, v as f64 / 100.0).with_role(role));
        let ports = (prop::sample::select(vec!["*", "r1"]), 0u64..200, 0u64..20)
            .prop_map(|(role, b, len)| Resource::ranges("ports", &[(b, b + len)]).with_role(role));
        prop::collection::vec(prop_oneof![scalar, ports], 0..6).prop_map(|v| {
            let mut out = Resources::new();
            for r in v {
                out.add(r).expect("consistent types");
            }
            out
        })
    }

    proptest! {
        #[test]
        fn add_then_subtract_is_identity(a in arb_resources(), b in arb_resources()) {
            let sum = a.plus(&b).expect("consistent");
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            let back = sum.minus(&b).expect("contained");
            // Ranges may overlap between a and b, so only scalars are exact.
            for name in ["cpus", "mem"] {
                prop_assert!((back.scalar(name) - a.scalar(name)).abs() < 1e-9);
            }
            prop_assert!(back.contains(&a.saturating_minus(&b)));
        }

        #[test]
        fn minus_never_goes_negative(a in arb_resources(), b in arb_resources()) {
            match a.minus(&b) {
                Ok(left) => {
                    prop_assert!(a.contains(&b));
                    prop_assert!(a.contains(&left));
                }
                Err(_) => prop_assert!(!a.contains(&b)),
            }
        }

        #[test]
        fn in_place_ops_match_copying_ops(a in arb_resources(), b in arb_resources()) {
            let mut sum = a.clone();
            sum.add_all(&b).expect("consistent");
            prop_assert_eq!(&sum, &a.plus(&b).expect("consistent"));
            let mut diff = a.clone();
            diff.subtract_saturating(&b);
            prop_assert_eq!(diff, a.saturating_minus(&b));
        }

        #[test]
        fn allocatable_to_partitions_by_role(a in arb_resources(), role in prop::sample::select(vec!["r1", "r2"])) {
            let mine = a.allocatable_to(role);
            prop_assert!(a.contains(&mine));
            prop_assert!(mine.iter().all(|r| r.role == role || r.role == "*"));
            // What is left belongs to other roles only.
            let rest = a.saturating_minus(&mine);
            prop_assert!(rest.iter().all(|r| r.role != role && r.role != "*"));
            prop_assert_eq!(rest.plus(&mine).expect("consistent").scalar("cpus"), a.scalar("cpus"));
        }

        #[test]
        fn cap_never_exceeds_the_cap_nor_touches_reservations(a in arb_resources(), cap in 0i64..60_000) {
            let c = a.cap_unreserved_scalar("cpus", cap);
            prop_assert!(a.contains(&c));
            prop_assert!(c.unreserved().scalar_milli("cpus") <= cap);
            prop_assert_eq!(c.filter_roles(&["r1"]), a.filter_roles(&["r1"]));
            prop_assert_eq!(c.scalar_milli("mem"), a.scalar_milli("mem"));
        }

        #[test]
        fn contains_is_reflexive_and_transitive(a in arb_resources(), b in arb_resources(), c in arb_resources()) {
            prop_assert!(a.contains(&a));
            prop_assert!(a.contains(&Resources::new()));
            if a.contains(&b) && b.contains(&c) {
                prop_assert!(a.contains(&c));
            }
        }

        #[test]
        fn flatten_keeps_totals(a in arb_resources()) {
            let f = a.flatten("x");
            for name in ["cpus", "mem"] {
                prop_assert!((f.scalar(name) - a.scalar(name)).abs() < 1e-9);
            }
            prop_assert_eq!(f.ranges("ports"), a.ranges("ports"));
        }
    }
}
