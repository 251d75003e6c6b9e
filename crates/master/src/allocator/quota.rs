//! Role weights and quota: parsing and validation of what operators give.
//!
//! A weight scales a role's fair share (`a=2,b=1`: `a` gets about twice
//! what `b` gets). A quota is a role's guaranteed minimum of unreserved
//! scalar resources (Mesos' quota guarantee): the allocator satisfies it
//! before anything else and keeps enough unallocated headroom for it.

use std::collections::BTreeMap;

use meseta_core::ids::DEFAULT_ROLE;
use meseta_core::{ResourceValue, Resources};

use super::AllocatorError;

/// Check a role name as Mesos does: not empty, not `.`/`..`, no leading
/// `-`, no whitespace, slash or control characters. `*` is the default role.
pub fn validate_role(role: &str) -> Result<(), AllocatorError> {
    let bad = |reason: &str| AllocatorError::InvalidRole {
        role: role.to_string(),
        reason: reason.to_string(),
    };
    if role.is_empty() {
        return Err(bad("empty"));
    }
    if role == DEFAULT_ROLE {
        return Ok(());
    }
    if role == "." || role == ".." {
        return Err(bad("'.' and '..' are not roles"));
    }
    if role.starts_with('-') {
        return Err(bad("must not start with '-'"));
    }
    if role
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '\\')
    {
        return Err(bad(
            "must not contain whitespace, control characters or slashes",
        ));
    }
    Ok(())
}

/// Check one weight: finite and positive.
pub fn validate_weight(role: &str, weight: f64) -> Result<(), AllocatorError> {
    validate_role(role)?;
    if !(weight.is_finite() && weight > 0.0) {
        return Err(AllocatorError::InvalidWeight {
            role: role.to_string(),
            weight,
        });
    }
    Ok(())
}

/// Parse `--weights "a=2,b=1.5"`.
pub fn parse_weights(text: &str) -> Result<BTreeMap<String, f64>, AllocatorError> {
    let mut out = BTreeMap::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (role, w) = term
            .split_once('=')
            .ok_or_else(|| AllocatorError::InvalidWeightText {
                text: term.to_string(),
            })?;
        let role = role.trim();
        let weight: f64 = w
            .trim()
            .parse()
            .map_err(|_| AllocatorError::InvalidWeightText {
                text: term.to_string(),
            })?;
        validate_weight(role, weight)?;
        out.insert(role.to_string(), weight);
    }
    Ok(out)
}

/// Check a quota guarantee: unreserved scalars only, for a real role.
pub fn validate_quota(role: &str, guarantee: &Resources) -> Result<(), AllocatorError> {
    validate_role(role)?;
    let bad = |reason: String| AllocatorError::InvalidQuota {
        role: role.to_string(),
        reason,
    };
    if role == DEFAULT_ROLE {
        return Err(bad("the default role '*' cannot have a quota".into()));
    }
    for r in guarantee.iter() {
        if r.role != DEFAULT_ROLE {
            return Err(bad(format!(
                "'{r}' is reserved; a quota guarantees unreserved resources"
            )));
        }
        if !matches!(r.value, ResourceValue::Scalar(_)) {
            return Err(bad(format!("'{r}' is not a scalar")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weights() {
        let w = parse_weights("a=2, b=1.5").expect("valid");
        assert_eq!(w["a"], 2.0);
        assert_eq!(w["b"], 1.5);
        for bad in ["a", "a=x", "a=0", "a=-1", "=2", "a b=1", "a=inf"] {
            assert!(parse_weights(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_weights("").expect("empty is fine").is_empty());
    }

    #[test]
    fn quota_takes_unreserved_scalars_only() {
        let ok = Resources::parse("cpus:4;mem:1024").expect("valid");
        assert!(validate_quota("web", &ok).is_ok());
        assert!(validate_quota("*", &ok).is_err());
        let reserved = Resources::parse("cpus(web):4").expect("valid");
        assert!(validate_quota("web", &reserved).is_err());
        let ports = Resources::parse("ports:[1-2]").expect("valid");
        assert!(validate_quota("web", &ports).is_err());
    }
}
