//! Unpacking archives into the sandbox. The archive crates only parse:
//! every member is placed through [`Sandbox`], which validates it (see
//! [`super::sandbox`] for what is refused). Blocks: call it from a blocking
//! thread.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;

use super::sandbox::{Member, Placement, Sandbox};
use super::uri::ArchiveKind;
use super::Failure;

/// The longest symlink target accepted from a zip member.
const MAX_LINK_TARGET: u64 = 4096;

/// Unpacks the archive `name` (in the sandbox root) into the sandbox.
pub(super) fn unpack(sandbox: &Sandbox, name: &str, kind: ArchiveKind) -> Result<(), Failure> {
    let archive = Member::file_name(name).map_err(Failure::Invalid)?;
    let file = sandbox
        .open_file(&archive)
        .map_err(|p| p.for_member(name))?;
    let reader = BufReader::new(file);
    match kind {
        ArchiveKind::Tar => unpack_tar(sandbox, reader),
        ArchiveKind::TarGz => unpack_tar(sandbox, flate2::read::MultiGzDecoder::new(reader)),
        ArchiveKind::TarBz2 => unpack_tar(sandbox, bzip2::read::MultiBzDecoder::new(reader)),
        ArchiveKind::TarXz => {
            unpack_tar(sandbox, liblzma::read::XzDecoder::new_multi_decoder(reader))
        }
        ArchiveKind::Zip => {
            let file = reader.into_inner();
            unpack_zip(sandbox, file)
        }
        ArchiveKind::Gz => gunzip(sandbox, name, reader),
    }
}

fn unreadable(e: impl std::fmt::Display) -> Failure {
    Failure::Archive(format!("cannot read the archive: {e}"))
}

/// Writes a member's content into its new file, then sets its mode.
fn fill(mut file: File, content: &mut impl Read, mode: u32, shown: &str) -> Result<(), Failure> {
    io::copy(content, &mut file)
        .map_err(|e| Failure::io(format!("cannot extract '{shown}'"), e))?;
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))
        .map_err(|e| Failure::io(format!("cannot set the mode of '{shown}'"), e))
}

/// Directories get the archive's modes only once everything is in them
/// (a read-only directory is filled first), deepest first.
fn set_dir_modes(sandbox: &Sandbox, dirs: Vec<(Member, u32)>) -> Result<(), Failure> {
    for (dir, mode) in dirs.into_iter().rev() {
        sandbox
            .set_dir_mode(&dir, mode)
            .map_err(|p| p.for_member(&dir.to_string()))?;
    }
    Ok(())
}

fn unpack_tar(sandbox: &Sandbox, reader: impl Read) -> Result<(), Failure> {
    let mut archive = tar::Archive::new(reader);
    let mut dirs = Vec::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let refused = |reason: String| Failure::Unsafe {
            member: shown.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let Some(member) = Member::parse(&raw).map_err(refused)? else {
            // The archive's root (`./`): the sandbox itself, left as it is.
            continue;
        };
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let placed = |p: Placement| p.for_member(&shown);
        match kind {
            tar::EntryType::Directory => {
                sandbox.create_dir(&member).map_err(placed)?;
                dirs.push((member, mode));
            }
            // An old archive marks a directory by a trailing slash only.
            tar::EntryType::Regular if raw.ends_with(b"/") => {
                sandbox.create_dir(&member).map_err(placed)?;
                dirs.push((member, mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let file = sandbox.create_file(&member).map_err(placed)?;
                fill(file, &mut entry, mode, &shown)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Failure::Archive(format!("symlink '{shown}' has no target")))?
                    .into_owned();
                sandbox.create_symlink(&member, &target).map_err(placed)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Failure::Archive(format!("hard link '{shown}' has no target")))?
                    .into_owned();
                let target_shown = String::from_utf8_lossy(&target).into_owned();
                let Ok(Some(source)) = Member::parse(&target) else {
                    return Err(refused(format!(
                        "is a hard link to '{target_shown}', which is outside the sandbox"
                    )));
                };
                sandbox.create_hardlink(&member, &source).map_err(placed)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(refused(
                    "is a device node or FIFO, which the fetcher does not create".to_string(),
                ))
            }
            other => {
                return Err(Failure::Archive(format!(
                    "member '{shown}' is of a type the fetcher does not unpack ({other:?})"
                )))
            }
        }
    }
    set_dir_modes(sandbox, dirs)
}

fn unpack_zip(sandbox: &Sandbox, file: File) -> Result<(), Failure> {
    let mut archive = zip::ZipArchive::new(file).map_err(unreadable)?;
    let mut dirs = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(unreadable)?;
        let shown = entry.name().to_string();
        // Zips made on Windows may separate with backslashes (unzip reads
        // them as separators too).
        let raw = shown.replace('\\', "/");
        let refused = |reason: String| Failure::Unsafe {
            member: shown.clone(),
            reason,
        };
        let Some(member) = Member::parse(raw.as_bytes()).map_err(refused)? else {
            continue;
        };
        let placed = |p: Placement| p.for_member(&shown);
        let unix = entry.unix_mode();
        let file_type = unix.map_or(0, |m| m & libc::S_IFMT);
        let mode = unix.map(|m| m & 0o777);
        if entry.is_dir() || file_type == libc::S_IFDIR {
            sandbox.create_dir(&member).map_err(placed)?;
            dirs.push((member, mode.unwrap_or(0o755)));
        } else if file_type == libc::S_IFLNK {
            let mut target = Vec::new();
            (&mut entry)
                .take(MAX_LINK_TARGET + 1)
                .read_to_end(&mut target)
                .map_err(unreadable)?;
            if target.len() as u64 > MAX_LINK_TARGET {
                return Err(Failure::Archive(format!(
                    "symlink '{shown}' has a target longer than {MAX_LINK_TARGET} bytes"
                )));
            }
            sandbox.create_symlink(&member, &target).map_err(placed)?;
        } else if file_type == 0 || file_type == libc::S_IFREG {
            let file = sandbox.create_file(&member).map_err(placed)?;
            fill(file, &mut entry, mode.unwrap_or(0o644), &shown)?;
        } else {
            return Err(refused(
                "is a device node, FIFO or socket, which the fetcher does not create".to_string(),
            ));
        }
    }
    set_dir_modes(sandbox, dirs)
}

/// A plain `.gz`: decompressed to the name without `.gz`, beside it.
fn gunzip(sandbox: &Sandbox, name: &str, reader: impl Read) -> Result<(), Failure> {
    let stem = &name[..name.len().saturating_sub(".gz".len())];
    let member = Member::file_name(stem).map_err(Failure::Invalid)?;
    let file = sandbox
        .create_file(&member)
        .map_err(|p| p.for_member(stem))?;
    let mut decoder = flate2::read::MultiGzDecoder::new(reader);
    fill(file, &mut decoder, 0o644, stem)
}
