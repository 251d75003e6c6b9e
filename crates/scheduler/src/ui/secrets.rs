//! Secret-looking values are never shown in full: `env` values whose names
//! look secret (`…PASSWORD…`, `…SECRET…`, `…TOKEN…`, `…_KEY`, …) and the
//! sources of `secrets` are replaced by [`MASK`] wherever the UI renders
//! an app (configuration, versions, the editor). When an edited app is
//! saved, a value still equal to [`MASK`] is put back as it was.

use serde_json::{Map, Value};

/// What a hidden value is shown as.
pub(super) const MASK: &str = "••••••••";

/// Whether an environment variable's name suggests a secret value.
pub(super) fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    const WORDS: [&str; 7] = [
        "SECRET",
        "PASSW",
        "TOKEN",
        "CREDENTIAL",
        "PRIVATE",
        "AUTH",
        "APIKEY",
    ];
    WORDS.iter().any(|w| n.contains(w)) || n.ends_with("KEY") || n.contains("_KEY")
}

/// `app` (Marathon's JSON) with secret-looking values replaced by [`MASK`].
pub(super) fn mask(app: &mut Value) {
    if let Some(env) = app.get_mut("env").and_then(Value::as_object_mut) {
        for (k, v) in env.iter_mut() {
            if v.is_string() && looks_secret(k) {
                *v = Value::String(MASK.into());
            }
        }
    }
    if let Some(secrets) = app.get_mut("secrets").and_then(Value::as_object_mut) {
        for v in secrets.values_mut() {
            if let Some(o) = v.as_object_mut() {
                for field in o.values_mut() {
                    *field = Value::String(MASK.into());
                }
            } else {
                *v = Value::String(MASK.into());
            }
        }
    }
}

/// Puts back, in an update of `current`, every `env` value and `secrets`
/// field the user left at [`MASK`].
pub(super) fn restore(update: &mut Value, current: &Value) {
    let restore_map = |target: Option<&mut Map<String, Value>>, source: Option<&Value>| {
        let (Some(target), Some(source)) = (target, source) else {
            return;
        };
        for (k, v) in target.iter_mut() {
            let Some(old) = source.get(k) else { continue };
            if v.as_str() == Some(MASK) {
                *v = old.clone();
            } else if let Some(o) = v.as_object_mut() {
                for (field, fv) in o.iter_mut() {
                    if fv.as_str() == Some(MASK) {
                        if let Some(old_field) = old.get(field) {
                            *fv = old_field.clone();
                        }
                    }
                }
            }
        }
    };
    restore_map(
        update.get_mut("env").and_then(Value::as_object_mut),
        current.get("env"),
    );
    restore_map(
        update.get_mut("secrets").and_then(Value::as_object_mut),
        current.get("secrets"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_looking_names_are_recognised() {
        for name in [
            "DB_PASSWORD",
            "api_token",
            "AWS_SECRET_ACCESS_KEY",
            "SSH_KEY",
            "ApiKey",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in ["PATH", "HOME", "PORT0", "KEYBOARD_LAYOUT", "MONKEYS"] {
            assert!(!looks_secret(name), "{name}");
        }
    }

    #[test]
    fn masked_values_come_back_on_save() {
        let current = json!({
            "env": {"DB_PASSWORD": "hunter2", "MODE": "prod", "REF": {"secret": "s0"}},
            "secrets": {"s0": {"source": "/vault/db"}},
        });
        let mut shown = current.clone();
        mask(&mut shown);
        assert_eq!(shown["env"]["DB_PASSWORD"], MASK);
        assert_eq!(shown["env"]["MODE"], "prod");
        assert_eq!(shown["env"]["REF"], json!({"secret": "s0"}));
        assert_eq!(shown["secrets"]["s0"]["source"], MASK);
        assert!(!shown.to_string().contains("hunter2"));
        assert!(!shown.to_string().contains("/vault/db"));

        let mut update = json!({"env": {"DB_PASSWORD": MASK, "MODE": "dev"}, "secrets": shown["secrets"].clone()});
        restore(&mut update, &current);
        assert_eq!(update["env"]["DB_PASSWORD"], "hunter2");
        assert_eq!(update["env"]["MODE"], "dev");
        assert_eq!(update["secrets"]["s0"]["source"], "/vault/db");
    }
}
