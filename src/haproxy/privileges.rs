//! Whom HAProxy's workers run as: never root.
//!
//! Owns deciding `global`'s `user`, `group` and `chroot` from the peer's own
//! user and its options — a dedicated unprivileged user and an empty chroot
//! when the peer runs as root, nothing when it does not (HAProxy then runs
//! as the peer's user, and `chroot` needs root) — checking at start that the
//! user and group exist and are not root's, and preparing the chroot
//! directory. Must not start HAProxy or render anything: the renderer takes
//! the outcome as [`Privileges`].
//!
//! HAProxy's master stays root (it re-executes itself on reload, binds the
//! listeners and sockets — ports below 1024 too — and reads the
//! configuration and the server-state file); each worker enters the chroot
//! and then drops to the user, so a worker can open no file at all. The
//! sockets the master creates (admin socket, master CLI) stay root's, mode
//! 600: the peer, root too, reaches them, and so does the next run of the
//! peer taking the listeners over with `haproxy -x`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Group, User};

use super::render::Privileges;
use crate::crdt::model::{CfgWord, InvalidValue};
use crate::files;

/// The user (and, through its own group, the group) HAProxy's workers run
/// as by default: Debian's and most distributions' haproxy packages create
/// it.
pub const DEFAULT_USER: &str = "haproxy";
/// The workers' root directory, inside the HAProxy directory.
pub const CHROOT_DIR: &str = "chroot";

/// Why HAProxy cannot be given an unprivileged user.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Running as root with no user given, and no `haproxy` user exists.
    #[error(
        "HAProxy must not run as root, and there is no user `{DEFAULT_USER}` to run it as: \
         create one (`useradd --system --no-create-home --shell /usr/sbin/nologin {DEFAULT_USER}`; \
         installing the distribution's haproxy package does it) or name another with \
         --haproxy-user USER (and --haproxy-group GROUP)"
    )]
    NoDefaultUser,
    /// The user given does not exist.
    #[error("--haproxy-user {0}: no such user")]
    NoSuchUser(String),
    /// The group given does not exist.
    #[error("--haproxy-group {0}: no such group")]
    NoSuchGroup(String),
    /// The user's own group (no group given) has no name to write.
    #[error("--haproxy-user {user}: its group {gid} has no name; give --haproxy-group GROUP")]
    UnnamedGroup {
        /// The user.
        user: String,
        /// Its primary group id.
        gid: u32,
    },
    /// The user or group is root's.
    #[error("HAProxy never runs as root: {what} {name} has id 0; name an unprivileged one")]
    Root {
        /// `user` or `group`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A user or group was given, but the peer does not run as root.
    #[error(
        "--haproxy-user and --haproxy-group need the peer to run as root (HAProxy runs as \
         the peer's own user otherwise); leave them out"
    )]
    NotRoot,
    /// The user or group database could not be read.
    #[error("looking up {what} {name}: {source}")]
    Lookup {
        /// `user` or `group`.
        what: &'static str,
        /// The name.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// The chroot directory cannot be made.
    #[error("cannot prepare HAProxy's chroot {dir}: {source}")]
    Chroot {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The chroot is not a directory only root can change: a symbolic
    /// link (HAProxy would enter its target) or a directory someone else
    /// owns or may write (the workers' user could place files in it).
    #[error(
        "HAProxy's chroot {0} must be a directory of root's that only root can write \
         (not a symbolic link); remove it and the peer makes it anew"
    )]
    UnsafeChroot(std::path::PathBuf),
    /// A name or path cannot be written into `haproxy.cfg`.
    #[error("{what} cannot be named in haproxy.cfg: {source}")]
    Unwritable {
        /// What (`user haproxy`, `chroot /path`).
        what: String,
        /// Why.
        source: InvalidValue,
    },
}

/// The privileges of the HAProxy run from `haproxy_dir`: `None` when the
/// peer does not run as root; otherwise `user` (default [`DEFAULT_USER`])
/// and `group` (default: the user's own), checked to exist and not to be
/// root's, and `haproxy_dir/chroot`, created empty and private to root.
pub fn resolve(
    user: Option<&CfgWord>,
    group: Option<&CfgWord>,
    haproxy_dir: &Path,
) -> Result<Option<Privileges>, PrivilegeError> {
    if !rustix::process::geteuid().is_root() {
        return match (user, group) {
            (None, None) => Ok(None),
            _ => Err(PrivilegeError::NotRoot),
        };
    }
    let found = match user {
        Some(name) => lookup_user(name.as_str())?
            .ok_or_else(|| PrivilegeError::NoSuchUser(name.to_string()))?,
        None => lookup_user(DEFAULT_USER)?.ok_or(PrivilegeError::NoDefaultUser)?,
    };
    if found.uid.is_root() {
        return Err(PrivilegeError::Root {
            what: "user",
            name: found.name,
        });
    }
    let group = match group {
        Some(name) => lookup_group(name.as_str())?
            .ok_or_else(|| PrivilegeError::NoSuchGroup(name.to_string()))?,
        None => Group::from_gid(found.gid)
            .map_err(|source| PrivilegeError::Lookup {
                what: "group",
                name: found.gid.to_string(),
                source,
            })?
            .ok_or_else(|| PrivilegeError::UnnamedGroup {
                user: found.name.clone(),
                gid: found.gid.as_raw(),
            })?,
    };
    if group.gid.as_raw() == 0 {
        return Err(PrivilegeError::Root {
            what: "group",
            name: group.name,
        });
    }
    let chroot = haproxy_dir.join(CHROOT_DIR);
    let prepared = files::private_dir(&chroot).and_then(|()| std::fs::symlink_metadata(&chroot));
    let meta = prepared.map_err(|source| PrivilegeError::Chroot {
        dir: chroot.clone(),
        source,
    })?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(PrivilegeError::UnsafeChroot(chroot));
    }
    let word = |what: &str, value: &str| {
        CfgWord::new(value).map_err(|source| PrivilegeError::Unwritable {
            what: format!("{what} {value}"),
            source,
        })
    };
    Ok(Some(Privileges {
        user: word("user", &found.name)?,
        group: word("group", &group.name)?,
        chroot: word("chroot", &chroot.to_string_lossy())?,
    }))
}

fn lookup_user(name: &str) -> Result<Option<User>, PrivilegeError> {
    User::from_name(name).map_err(|source| PrivilegeError::Lookup {
        what: "user",
        name: name.to_owned(),
        source,
    })
}

fn lookup_group(name: &str) -> Result<Option<Group>, PrivilegeError> {
    Group::from_name(name).map_err(|source| PrivilegeError::Lookup {
        what: "group",
        name: name.to_owned(),
        source,
    })
}
