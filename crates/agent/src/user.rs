//! Which user a task runs as (Mesos' `--switch_user`): the command's `user`,
//! else the framework's, resolved on this host before the launch.

use std::ffi::CString;

use nix::unistd::{getgrouplist, Gid, Uid, User};

use crate::containerizer::TaskUser;

/// Why a task cannot run as the user it asks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user '{0}' does not exist on this agent")]
    Unknown(String),
    #[error("cannot look up user '{user}': {reason}")]
    Lookup { user: String, reason: String },
    #[error("cannot run the task as user '{0}': the agent is not root (run it as root, or with --no-switch-user)")]
    NotRoot(String),
}

/// The user a task runs as: `command_user`, else `framework_user`; `None`
/// when neither names one, when `switch_user` is off, or when it is the
/// agent's own user (nothing to switch).
pub fn resolve(
    switch_user: bool,
    command_user: &str,
    framework_user: &str,
) -> Result<Option<TaskUser>, UserError> {
    if !switch_user {
        return Ok(None);
    }
    let name = [command_user, framework_user]
        .into_iter()
        .map(str::trim)
        .find(|n| !n.is_empty());
    let Some(name) = name else {
        return Ok(None);
    };
    let lookup = |reason: String| UserError::Lookup {
        user: name.to_string(),
        reason,
    };
    let user = User::from_name(name)
        .map_err(|e| lookup(e.to_string()))?
        .ok_or_else(|| UserError::Unknown(name.to_string()))?;
    let me = Uid::effective();
    if user.uid == me {
        return Ok(None);
    }
    if !me.is_root() {
        return Err(UserError::NotRoot(name.to_string()));
    }
    let cname = CString::new(name).map_err(|_| lookup("the name holds a NUL byte".into()))?;
    let groups = getgrouplist(&cname, user.gid)
        .map_err(|e| lookup(format!("cannot list its groups: {e}")))?;
    Ok(Some(TaskUser {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nobody_asked_is_nobody_switched() {
        assert_eq!(resolve(true, "", ""), Ok(None));
        assert_eq!(resolve(false, "nobody", "root"), Ok(None));
    }

    #[test]
    fn an_unknown_user_is_named() {
        let err = resolve(true, "no-such-user-meseta", "").expect_err("unknown");
        assert_eq!(err, UserError::Unknown("no-such-user-meseta".into()));
        assert!(err.to_string().contains("no-such-user-meseta"));
    }

    #[test]
    fn the_command_user_wins_over_the_framework_user() {
        if !Uid::effective().is_root() {
            println!("skipping: needs root to switch users");
            return;
        }
        let user = resolve(true, "nobody", "root")
            .expect("nobody exists")
            .expect("a switch");
        assert_eq!(user.name, "nobody");
        assert_eq!(user.uid, 65534);
        // The agent's own user needs no switch.
        assert_eq!(resolve(true, "", "root"), Ok(None));
    }
}
