//! Private files and directories: the peer's data is readable by its own
//! user only.
//!
//! Owns the modes of what the peer writes under its data directory — the
//! store, the rendered HAProxy configuration (it holds the stats password),
//! HAProxy's server state, the self-made TLS directory: files 0600 and
//! directories 0700, given at creation (never readable by others, not even
//! for a moment) and tightened on start where an older release left them
//! looser. Must not decide what is written where (that is each writer's).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file the peer writes that others must not read.
pub const FILE_MODE: u32 = 0o600;
/// The mode of the peer's data directories.
pub const DIR_MODE: u32 = 0o700;

/// Creates (or truncates) `path` for reading and writing as a
/// [`FILE_MODE`] file — also when a file left there by an older release or
/// a crash was looser, since opening an existing file keeps its mode.
pub fn create(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Writes `contents` to `path` through a private temporary file beside
/// it, synced before the rename: `path` holds the old contents or the new,
/// never a part, and is [`FILE_MODE`] from then on.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut file = create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// Creates `dir` and its missing parents as [`DIR_MODE`], or tightens an
/// existing `dir` to it (logged, once per start: it stays tight).
///
/// A directory this user does not own, or a sticky one (`/tmp`), is shared
/// with others and left as it is, with a warning: the data directory should
/// be one of the peer's own. So is a symbolic link (never followed).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    // Not followed: a link's target is someone else's to set (and a link
    // planted where a directory of ours belongs must not turn a chmod on,
    // say, `/`).
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => tighten(dir, &meta, DIR_MODE),
        Ok(meta) if meta.file_type().is_symlink() => {
            tracing::warn!(
                path = %dir.display(),
                "a symbolic link: its target's mode is left as it is"
            );
            Ok(())
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
        }
        Err(e) => Err(e),
    }
}

/// [`private_dir`] for a directory the operator names (the data
/// directory): an existing one is tightened only if it is empty or already
/// holds `marker` (a file only this peer writes there), since one holding
/// anything else is not the peer's alone — `--data-dir /var/lib` must not
/// close `/var/lib` to every other service. That one is left as it is, with
/// a warning.
pub fn private_own_dir(dir: &Path, marker: &str) -> io::Result<()> {
    let ours = match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none() || dir.join(marker).try_exists()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(e),
    };
    if ours {
        private_dir(dir)
    } else {
        tracing::warn!(
            path = %dir.display(),
            "holds files of others (no {marker}): its mode is left as it is; give the peer a directory of its own"
        );
        Ok(())
    }
}

/// Tightens an existing file to [`FILE_MODE`] (logged); a missing file is
/// no error.
pub fn private_file(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => tighten(path, &meta, FILE_MODE),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn tighten(path: &Path, meta: &fs::Metadata, mode: u32) -> io::Result<()> {
    let current = meta.mode() & 0o7777;
    if current & !mode == 0 {
        return Ok(());
    }
    let shared = meta.uid() != rustix::process::geteuid().as_raw() || current & 0o1000 != 0;
    if shared {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{current:o}"),
            "shared with other users (not ours, or sticky): left as it is; give the peer a directory of its own"
        );
        return Ok(());
    }
    tracing::info!(
        path = %path.display(),
        from = format_args!("{current:o}"),
        to = format_args!("{mode:o}"),
        "tightening the mode an older release left"
    );
    fs::set_permissions(path, Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(label: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("aqueduct-files-{label}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").mode() & 0o7777
    }

    #[test]
    fn a_new_directory_and_its_parents_are_private() {
        let root = scratch("new");
        private_dir(&root.join("a/b")).expect("created");
        assert_eq!(mode(&root), DIR_MODE);
        assert_eq!(mode(&root.join("a/b")), DIR_MODE);
        fs::remove_dir_all(&root).expect("removed");
    }

    #[test]
    fn a_loose_directory_and_file_are_tightened() {
        let root = scratch("loose");
        fs::create_dir_all(&root).expect("created");
        fs::set_permissions(&root, Permissions::from_mode(0o755)).expect("chmod");
        let file = root.join("f");
        fs::write(&file, "x").expect("written");
        fs::set_permissions(&file, Permissions::from_mode(0o644)).expect("chmod");
        private_dir(&root).expect("tightened");
        private_file(&file).expect("tightened");
        assert_eq!((mode(&root), mode(&file)), (DIR_MODE, FILE_MODE));
        fs::remove_dir_all(&root).expect("removed");
    }

    #[test]
    fn a_named_directory_is_tightened_only_if_empty_or_holding_the_marker() {
        let root = scratch("named");
        let (empty, ours, shared) = (root.join("empty"), root.join("ours"), root.join("shared"));
        for dir in [&empty, &ours, &shared] {
            fs::create_dir_all(dir).expect("created");
            fs::set_permissions(dir, Permissions::from_mode(0o755)).expect("chmod");
        }
        fs::write(ours.join("state.redb"), "").expect("written");
        fs::write(shared.join("other"), "").expect("written");
        for dir in [&empty, &ours, &shared] {
            private_own_dir(dir, "state.redb").expect("no error");
        }
        assert_eq!(
            [mode(&empty), mode(&ours), mode(&shared)],
            [DIR_MODE, DIR_MODE, 0o755]
        );
        fs::remove_dir_all(&root).expect("removed");
    }

    #[test]
    fn a_link_to_a_directory_is_not_followed() {
        let root = scratch("link");
        let target = root.join("target");
        fs::create_dir_all(&target).expect("created");
        fs::set_permissions(&target, Permissions::from_mode(0o755)).expect("chmod");
        let link = root.join("link");
        std::os::unix::fs::symlink(&target, &link).expect("linked");
        private_dir(&link).expect("no error");
        assert_eq!(mode(&target), 0o755);
        fs::remove_dir_all(&root).expect("removed");
    }

    #[test]
    fn a_sticky_shared_directory_is_left_alone() {
        let root = scratch("sticky");
        fs::create_dir_all(&root).expect("created");
        fs::set_permissions(&root, Permissions::from_mode(0o1777)).expect("chmod");
        private_dir(&root).expect("no error");
        assert_eq!(mode(&root), 0o1777);
        fs::remove_dir_all(&root).expect("removed");
    }

    #[test]
    fn created_and_replaced_files_are_private_even_over_a_loose_one() {
        let root = scratch("create");
        private_dir(&root).expect("created");
        let (file, replaced) = (root.join("f"), root.join("g"));
        fs::write(&file, "old").expect("written");
        fs::set_permissions(&file, Permissions::from_mode(0o644)).expect("chmod");
        create(&file).expect("created");
        write_atomically(&replaced, b"new").expect("written");
        assert_eq!((mode(&file), mode(&replaced)), (FILE_MODE, FILE_MODE));
        assert_eq!(fs::read(&replaced).expect("read"), b"new");
        fs::remove_dir_all(&root).expect("removed");
    }
}
