//! Placement constraints: `[field, operator, value?]`.
//!
//! On the wire a constraint is a 2- or 3-element array of strings. Apps
//! written for old Marathon versions sometimes give a single flat constraint
//! (`["hostname", "UNIQUE", ""]`) instead of a list of them; both are
//! accepted. An empty value (`""`) means "no value". Constraints are kept
//! normalized ([`Constraint`]) and rendered back as `[[field, op, value?]]`.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Marathon's constraint operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstraintOperator {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    Is,
}

impl ConstraintOperator {
    /// Every operator, in Marathon's documentation order.
    pub const ALL: [ConstraintOperator; 7] = [
        Self::Unique,
        Self::Cluster,
        Self::GroupBy,
        Self::Like,
        Self::Unlike,
        Self::MaxPer,
        Self::Is,
    ];

    /// The wire name (`GROUP_BY`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unique => "UNIQUE",
            Self::Cluster => "CLUSTER",
            Self::GroupBy => "GROUP_BY",
            Self::Like => "LIKE",
            Self::Unlike => "UNLIKE",
            Self::MaxPer => "MAX_PER",
            Self::Is => "IS",
        }
    }

    /// Case-insensitive, as Marathon's validation upper-cases the operator.
    pub fn parse(s: &str) -> Option<Self> {
        let upper = s.to_ascii_uppercase();
        Self::ALL.into_iter().find(|op| op.as_str() == upper)
    }
}

impl fmt::Display for ConstraintOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Marathon's messages for constraint errors (SchedulingValidationMessages).
pub mod messages {
    pub const WRONG_ARITY: &str = "Each constraint must have either 2 or 3 fields";
    pub const MISSING_FIELD: &str = "missing field for constraint declaration";
    pub const BAD_OPERATOR: &str =
        "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS";
    pub const UNIQUE_NO_VALUE: &str = "UNIQUE does not accept a value";
    pub const GROUP_BY_INT: &str = "GROUP BY must define an integer value or else no value at all";
    pub const MAX_PER_INT: &str = "MAX_PER requires an integer value";
    pub const LIKE_REGEX: &str = "LIKE and UNLIKE require a non-empty, regular expression value";
    pub const IS_TEXT: &str = "IS only supports Mesos text and float values (see http://mesos.apache.org/documentation/latest/attributes-resources/)";
}

/// One normalized constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    /// `hostname` or an agent attribute name.
    pub field: String,
    pub operator: ConstraintOperator,
    /// `None` when absent or given as `""`.
    pub value: Option<String>,
}

impl Constraint {
    /// Builds a constraint from its wire parts, checking arity, field and
    /// operator; the error is Marathon's message for the broken rule.
    pub fn from_parts(parts: &[String]) -> Result<Constraint, &'static str> {
        if parts.len() < 2 || parts.len() > 3 {
            return Err(messages::WRONG_ARITY);
        }
        let field = parts[0].clone();
        if field.is_empty() {
            return Err(messages::MISSING_FIELD);
        }
        let operator = ConstraintOperator::parse(&parts[1]).ok_or(messages::BAD_OPERATOR)?;
        let value = parts.get(2).filter(|v| !v.is_empty()).cloned();
        Ok(Constraint {
            field,
            operator,
            value,
        })
    }

    /// The wire form: `[field, op]` or `[field, op, value]`.
    pub fn to_parts(&self) -> Vec<String> {
        let mut out = vec![self.field.clone(), self.operator.as_str().to_string()];
        if let Some(v) = &self.value {
            out.push(v.clone());
        }
        out
    }

    /// Checks the value against the operator's rules; `Some(message)` when
    /// broken. LIKE/UNLIKE values are not compiled here (no regex engine in
    /// the model); the constraint evaluator reports a bad pattern.
    pub fn value_error(&self) -> Option<&'static str> {
        let v = self.value.as_deref();
        match self.operator {
            ConstraintOperator::Unique => v.map(|_| messages::UNIQUE_NO_VALUE),
            ConstraintOperator::Cluster => None,
            ConstraintOperator::GroupBy => match v {
                Some(s) if s.parse::<i32>().is_err() => Some(messages::GROUP_BY_INT),
                _ => None,
            },
            ConstraintOperator::MaxPer => match v {
                Some(s) if s.parse::<i32>().is_ok() => None,
                _ => Some(messages::MAX_PER_INT),
            },
            ConstraintOperator::Like | ConstraintOperator::Unlike => match v {
                Some(_) => None,
                None => Some(messages::LIKE_REGEX),
            },
            ConstraintOperator::Is => {
                let ok = v
                    .unwrap_or("")
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'.' | b'-'));
                (!ok).then_some(messages::IS_TEXT)
            }
        }
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_parts().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let parts = Vec::<String>::deserialize(d)?;
        Constraint::from_parts(&parts).map_err(D::Error::custom)
    }
}

/// Constraints as received, before validation: a list of string lists.
/// Accepts the nested form, a single flat constraint, and scalar values
/// (`["rack", "MAX_PER", 2]`), which are turned into strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConstraints(pub Vec<Vec<String>>);

impl<'de> Deserialize<'de> for RawConstraints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const EXPECTED: &str = "constraints must be an array of [field, operator, value?] arrays";
        let v = Value::deserialize(d)?;
        let items = match v {
            Value::Null => return Ok(RawConstraints::default()),
            Value::Array(items) => items,
            _ => return Err(D::Error::custom(EXPECTED)),
        };
        let scalar = |v: &Value| -> Result<String, D::Error> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                _ => Err(D::Error::custom(EXPECTED)),
            }
        };
        if !items.is_empty() && items.iter().all(|i| !i.is_array()) {
            // One flat constraint: ["hostname", "UNIQUE", ""].
            let parts = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
            return Ok(RawConstraints(vec![parts]));
        }
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            match item {
                Value::Array(parts) => {
                    out.push(parts.iter().map(scalar).collect::<Result<_, _>>()?)
                }
                _ => return Err(D::Error::custom(EXPECTED)),
            }
        }
        Ok(RawConstraints(out))
    }
}

impl Serialize for RawConstraints {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawConstraints {
        serde_json::from_str(json).expect("parses")
    }

    #[test]
    fn flat_and_nested() {
        assert_eq!(
            raw(r#"["hostname","UNIQUE",""]"#).0,
            vec![vec!["hostname", "UNIQUE", ""]]
        );
        assert_eq!(
            raw(r#"[["hostname","UNIQUE"]]"#).0,
            vec![vec!["hostname", "UNIQUE"]]
        );
        assert_eq!(
            raw(r#"[["rack","MAX_PER",2]]"#).0,
            vec![vec!["rack", "MAX_PER", "2"]]
        );
        assert!(serde_json::from_str::<RawConstraints>(r#"[["a"], "b"]"#).is_err());
    }

    #[test]
    fn normalization_and_rules() {
        let parts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let c = Constraint::from_parts(&parts(&["hostname", "unique", ""])).expect("valid");
        assert_eq!(c.operator, ConstraintOperator::Unique);
        assert_eq!(c.value, None);
        assert_eq!(c.value_error(), None);
        assert_eq!(c.to_parts(), vec!["hostname", "UNIQUE"]);
        assert_eq!(
            Constraint::from_parts(&parts(&["a"])),
            Err(messages::WRONG_ARITY)
        );
        assert_eq!(
            Constraint::from_parts(&parts(&["a", "NEAR"])),
            Err(messages::BAD_OPERATOR)
        );
        let c = Constraint::from_parts(&parts(&["rack", "MAX_PER", "x"])).expect("parses");
        assert_eq!(c.value_error(), Some(messages::MAX_PER_INT));
        let c = Constraint::from_parts(&parts(&["rack", "GROUP_BY"])).expect("parses");
        assert_eq!(c.value_error(), None);
        let c = Constraint::from_parts(&parts(&["rack", "IS", "a b"])).expect("parses");
        assert_eq!(c.value_error(), Some(messages::IS_TEXT));
    }
}
