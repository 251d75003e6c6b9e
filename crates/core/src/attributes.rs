//! Agent attributes (`--attributes "rack:r1;zone:a"`), as Mesos parses them:
//! text values, or scalars when the value is a number.

use crate::CoreError;
use meseta_proto::v1 as pb;

/// One `name:value` attribute of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: String,
}

/// Parse `"rack:r1;zone:a"` (`;`-separated `name:value` pairs).
pub fn parse_attributes(text: &str) -> Result<Vec<Attribute>, CoreError> {
    let mut out = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| CoreError::InvalidAttribute {
                text: part.to_string(),
                reason: "expected name:value".into(),
            })?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(CoreError::InvalidAttribute {
                text: part.to_string(),
                reason: "empty name".into(),
            });
        }
        out.push(Attribute {
            name: name.to_string(),
            value: value.to_string(),
        });
    }
    Ok(out)
}

impl Attribute {
    /// The protobuf form: scalar when the value parses as a number, text otherwise.
    pub fn to_proto(&self) -> pb::Attribute {
        match self.value.parse::<f64>() {
            Ok(v) => pb::Attribute {
                name: self.name.clone(),
                r#type: pb::value::Type::Scalar as i32,
                scalar: Some(pb::value::Scalar { value: v }),
                ..Default::default()
            },
            Err(_) => pb::Attribute {
                name: self.name.clone(),
                r#type: pb::value::Type::Text as i32,
                text: Some(pb::value::Text {
                    value: self.value.clone(),
                }),
                ..Default::default()
            },
        }
    }

    /// Back from protobuf; the value rendered as text.
    pub fn from_proto(a: &pb::Attribute) -> Attribute {
        let value = if let Some(t) = &a.text {
            t.value.clone()
        } else if let Some(s) = &a.scalar {
            format_scalar(s.value)
        } else if let Some(s) = &a.set {
            format!("{{{}}}", s.item.join(","))
        } else if let Some(r) = &a.ranges {
            let parts: Vec<String> = r
                .range
                .iter()
                .map(|r| format!("{}-{}", r.begin, r.end))
                .collect();
            format!("[{}]", parts.join(","))
        } else {
            String::new()
        };
        Attribute {
            name: a.name.clone(),
            value,
        }
    }
}

/// A scalar printed without a trailing `.0` for whole numbers.
pub fn format_scalar(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_round_trips() {
        let a = parse_attributes("rack:r1; zone:a;level:3").expect("valid");
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].name, "rack");
        assert_eq!(Attribute::from_proto(&a[2].to_proto()).value, "3");
        assert_eq!(Attribute::from_proto(&a[0].to_proto()).value, "r1");
    }

    #[test]
    fn rejects_missing_colon() {
        assert!(parse_attributes("rack").is_err());
    }
}
