//! Local sources (`file://PATH` and plain paths), opened for the task's
//! user: the agent may be root, and a task must not get through the fetcher
//! what its user could not read. Blocks: call it from a blocking thread.

use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::Failure;

/// `r` and `x` in a mode's permission triplets.
const READ: u32 = 0o4;
const SEARCH: u32 = 0o1;

/// Whether `(uid, gid)` has `bit` on `meta` by its mode bits (the owner's
/// triplet for the owner, the group's for the group, else the others').
fn permits(meta: &Metadata, (uid, gid): (u32, u32), bit: u32) -> bool {
    let mode = meta.mode();
    let triplet = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == gid {
        mode >> 3
    } else {
        mode
    };
    triplet & bit != 0
}

/// Opens the regular file at `path` for reading. With an owner other than
/// root, the file and every directory above it must be readable and
/// searchable by that uid/gid; supplementary groups and ACLs are not
/// consulted (such a file is refused).
pub(super) fn open(path: &Path, owner: Option<(u32, u32)>) -> Result<File, Failure> {
    let shown = path.display();
    let canonical =
        std::fs::canonicalize(path).map_err(|e| Failure::io(format!("cannot read {shown}"), e))?;
    let user = owner.filter(|(uid, _)| *uid != 0);
    if let Some(user) = user {
        for dir in canonical.ancestors().skip(1) {
            let meta = std::fs::metadata(dir)
                .map_err(|e| Failure::io(format!("cannot read {shown}"), e))?;
            if !permits(&meta, user, SEARCH) {
                return Err(Failure::Refused(format!(
                    "{shown} is not readable by the task's user (uid {}): {} is not searchable",
                    user.0,
                    dir.display()
                )));
            }
        }
    }
    // O_NONBLOCK: a FIFO must not hang the open; it is refused below.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&canonical)
        .map_err(|e| Failure::io(format!("cannot read {shown}"), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Failure::io(format!("cannot read {shown}"), e))?;
    if !meta.is_file() {
        return Err(Failure::Refused(format!("{shown} is not a regular file")));
    }
    if let Some(user) = user {
        if !permits(&meta, user, READ) {
            return Err(Failure::Refused(format!(
                "{shown} is not readable by the task's user (uid {})",
                user.0
            )));
        }
    }
    Ok(file)
}
