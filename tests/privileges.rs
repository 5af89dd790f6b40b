//! HAProxy never runs as root, and a peer's files are its own: a peer run
//! as an unprivileged user serves the demo's story through its own HAProxy
//! (which then runs as that user); a peer run as root keeps its store,
//! rendered configuration and server state 0600 in 0700 directories —
//! tightening what an older release left looser — and refuses a user for
//! HAProxy that does not exist or is root.
//!
//! That every HAProxy worker started as root runs unprivileged in its
//! chroot is checked where those tests start HAProxy
//! (`Peer::assert_haproxy_workers_unprivileged`).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::json;
use support::http::{TestServer, fetch};
use support::{Cluster, Peer, PeerSpec, eventually, ok, serve_myapp_v1};

/// The static frontend's port (above 1024: an unprivileged HAProxy cannot
/// bind below).
const PORT: u16 = 18480;
/// The dynamic backend's frontend.
const SHOP_PORT: u16 = 18481;

/// Debian's `nobody` and its group.
fn nobody() -> (u32, u32) {
    let user = nix::unistd::User::from_name("nobody")
        .expect("the user database")
        .expect("a user nobody");
    (user.uid.as_raw(), user.gid.as_raw())
}

/// Gives `path` and everything under it to `owner`.
fn chown_all(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("readable") {
            chown_all(&entry.expect("an entry").path(), (uid, gid));
        }
    }
}

/// A peer of `cluster` with HAProxy that runs as `nobody`: its data and
/// TLS directories are nobody's, and it runs a copy of the binary in the
/// cluster's directory (the build directory may not be reachable by
/// nobody).
fn unprivileged_peer(cluster: &Cluster) -> PeerSpec {
    let mut spec = cluster.peer_with_haproxy("peer-a", &[]);
    let owner = nobody();
    let home = spec
        .tls_dir
        .parent()
        .expect("the peer's home")
        .to_path_buf();
    chown_all(&home, owner);
    let binary = cluster.dir.path().join("aqueduct");
    std::fs::copy(support::binary(), &binary).expect("binary copied");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    spec.binary = binary;
    spec.run_as = Some(owner);
    // Started from a directory it may not enter (as from root's home):
    // nothing it or its HAProxy runs may depend on the directory it
    // starts in.
    let closed = cluster.dir.path().join("root-only");
    std::fs::create_dir_all(&closed).expect("a directory");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    spec.current_dir = Some(closed);
    spec
}

fn wait_until_answers(peer: &Peer, port: u16, host: &str, names: &[&str]) {
    eventually(&format!("{names:?} to answer through port {port}"), || {
        let mut seen: Vec<String> = (0..20)
            .filter_map(|_| match fetch(peer.through_haproxy(port), "/", host) {
                Ok((200, body)) => Some(body),
                _ => None,
            })
            .collect();
        seen.sort();
        seen.dedup();
        (seen == names).then_some(())
    });
}

/// The uid of `pid` (real), from `/proc`.
fn uid_of(pid: i32) -> Option<u32> {
    support::worker_privileges(pid).map(|p| p.uids[0])
}

#[test]
fn a_peer_run_as_an_unprivileged_user_serves_the_demo_story_through_its_own_haproxy() {
    let cluster = Cluster::new("unprivileged");
    let peer = unprivileged_peer(&cluster).start();
    let (first, second) = (TestServer::start("first"), TestServer::start("second"));
    let member = |s: &TestServer| json!({"host": "127.0.0.1", "port": s.port()});

    // A static backend with a member, behind a frontend.
    ok(peer.put(
        "/backends/app",
        json!({"type": "static", "members": [member(&first)]}),
    ));
    ok(peer.put(
        "/frontends/web",
        json!({"bind": format!("*:{PORT}"), "backend": "app"}),
    ));
    wait_until_answers(&peer, PORT, "example.com", &["first"]);
    peer.wait_until_applied();
    let reloads = peer.haproxy_count("reloads");

    // A member change, through the runtime API.
    ok(peer.put(
        &format!("/backends/app/members/127.0.0.1/{}", second.port()),
        json!({}),
    ));
    wait_until_answers(&peer, PORT, "example.com", &["first", "second"]);
    peer.wait_until_applied();
    assert_eq!(
        peer.haproxy_count("reloads"),
        reloads,
        "a member change reloaded"
    );

    // Registrations, a dynamic backend following one version, the switch.
    let (v1, v2) = (TestServer::start("1.0.0"), TestServer::start("2.0.0"));
    for (version, server) in [("1.0.0", &v1), ("2.0.0", &v2)] {
        ok(peer.post(
            &format!("/registrations/myapp/{version}/127.0.0.1/{}", server.port()),
            json!({"secondsToExpire": 600}),
        ));
    }
    serve_myapp_v1(&peer, "shop", SHOP_PORT);
    wait_until_answers(&peer, SHOP_PORT, "shop.example.com", &["1.0.0"]);
    ok(peer.post("/backends/live", json!({"version": "2.0.0"})));
    wait_until_answers(&peer, SHOP_PORT, "shop.example.com", &["2.0.0"]);

    // Everything ran as nobody: the peer, HAProxy's master and workers.
    let (uid, _) = nobody();
    let pids = peer.haproxy_pids();
    assert!(pids.len() >= 2, "a master and a worker: {pids:?}");
    for pid in pids.iter().map(|p| p.as_raw_nonzero().get()) {
        assert_eq!(uid_of(pid), Some(uid), "HAProxy process {pid}");
    }
    assert_eq!(uid_of(i32::try_from(peer.pid()).expect("a pid")), Some(uid));
    let config = peer.haproxy_config().expect("the rendered configuration");
    for keyword in ["user", "group", "chroot"] {
        assert!(
            !config.contains(&format!("\n    {keyword} ")),
            "an unprivileged peer cannot drop or chroot:\n{config}"
        );
    }
}

#[test]
fn an_unprivileged_peer_refuses_a_user_for_haproxy_since_it_cannot_switch_to_it() {
    let cluster = Cluster::new("unprivileged-user-flag");
    let mut spec = unprivileged_peer(&cluster);
    spec.extra = vec!["--haproxy-user".into(), "haproxy".into()];
    let log = failed_start(&spec);
    assert!(log.contains("need the peer to run as root"), "{log}");
}

/// The data directory's private files and directories of a root peer with
/// HAProxy, and their modes.
fn modes(data_dir: &Path) -> Vec<(PathBuf, u32)> {
    [
        "",
        "state.redb",
        "tls",
        "tls/ca",
        "tls/node.key",
        "tls/ca/ca.key",
        "haproxy",
        "haproxy/haproxy.cfg",
        "haproxy/server-state",
        "haproxy/chroot",
    ]
    .iter()
    .map(|name| {
        let path = data_dir.join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .mode()
            & 0o7777;
        (path, mode)
    })
    .collect()
}

/// A peer with HAProxy and a self-made TLS directory inside its data
/// directory (as a peer started without `--tls-dir` has), serving a frontend
/// with a stats password in its configuration, and reloaded once (which
/// writes the server state).
fn root_peer(cluster: &Cluster, member: &TestServer) -> Peer {
    let mut spec = cluster.peer_with_haproxy("peer-a", &[]);
    spec.tls_dir = spec.data_dir.join("tls");
    spec.extra = [
        "--haproxy-stats",
        &format!("{}:19881", spec.haproxy.expect("a bind host")),
        "--haproxy-stats-auth",
        "admin:s3cret",
    ]
    .map(String::from)
    .to_vec();
    let peer = spec.start();
    ok(peer.put(
        "/backends/app",
        json!({"type": "static", "members": [{"host": "127.0.0.1", "port": member.port()}]}),
    ));
    ok(peer.put(
        "/frontends/web",
        json!({"bind": format!("*:{PORT}"), "backend": "app"}),
    ));
    wait_until_answers(&peer, PORT, "example.com", &[member.name.as_str()]);
    peer.wait_until_applied();
    peer
}

fn expected_modes(data_dir: &Path) -> Vec<(PathBuf, u32)> {
    modes(data_dir)
        .into_iter()
        .map(|(path, _)| {
            let mode = if path.is_dir() { 0o700 } else { 0o600 };
            (path, mode)
        })
        .collect()
}

#[test]
fn a_peers_store_configuration_server_state_and_keys_are_private_in_private_directories() {
    let cluster = Cluster::new("file-modes");
    let member = TestServer::start("member");
    let peer = root_peer(&cluster, &member);
    let data_dir = peer.spec.data_dir.clone();
    let config = std::fs::read_to_string(data_dir.join("haproxy/haproxy.cfg")).expect("config");
    assert!(
        config.contains("s3cret"),
        "the file holds the stats password"
    );

    assert_eq!(modes(&data_dir), expected_modes(&data_dir));
}

#[test]
fn modes_an_older_release_left_looser_are_tightened_on_start() {
    let cluster = Cluster::new("file-modes-tightened");
    let member = TestServer::start("member");
    let mut peer = root_peer(&cluster, &member);
    let data_dir = peer.spec.data_dir.clone();
    peer.kill_9();
    // What the previous release left: directories 0755, files 0644 (it
    // wrote its keys 0600 already).
    for (path, _) in modes(&data_dir) {
        let loose = match path.extension() {
            _ if path.is_dir() => 0o755,
            Some(extension) if extension == "key" => continue,
            _ => 0o644,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).expect("chmod");
    }

    peer.restart();
    // A fresh HAProxy starts without saved server state: a reload writes it.
    ok(peer.put(
        "/frontends/other",
        json!({"bind": format!("*:{SHOP_PORT}"), "backend": "app"}),
    ));
    wait_until_answers(&peer, SHOP_PORT, "example.com", &[member.name.as_str()]);

    assert_eq!(modes(&data_dir), expected_modes(&data_dir));
    assert!(
        peer.log()
            .contains("tightening the mode an older release left"),
        "{}",
        peer.log()
    );
}

/// Starts `spec`, which must fail: its log.
fn failed_start(spec: &PeerSpec) -> String {
    let mut child = spec.spawn();
    let status = child.wait().expect("the peer exits");
    assert!(!status.success(), "the peer started");
    std::fs::read_to_string(&spec.log).expect("its log")
}

#[test]
fn a_root_peer_refuses_to_run_haproxy_as_a_user_that_does_not_exist() {
    let cluster = Cluster::new("no-such-user");
    let mut spec = cluster.peer_with_haproxy("peer-a", &[]);
    spec.extra = vec!["--haproxy-user".into(), "no-such-user".into()];
    let log = failed_start(&spec);
    assert!(
        log.contains("--haproxy-user no-such-user: no such user"),
        "{log}"
    );
}

#[test]
fn a_root_peer_refuses_to_run_haproxy_as_root() {
    let cluster = Cluster::new("root-user");
    let mut spec = cluster.peer_with_haproxy("peer-a", &[]);
    spec.extra = vec!["--haproxy-user".into(), "root".into()];
    let log = failed_start(&spec);
    assert!(log.contains("HAProxy never runs as root"), "{log}");
}

#[test]
fn a_root_peer_refuses_a_chroot_that_is_a_link_or_not_roots_alone() {
    let cluster = Cluster::new("unsafe-chroot");
    let spec = cluster.peer_with_haproxy("peer-a", &[]);
    let chroot = spec.data_dir.join("haproxy/chroot");
    std::fs::create_dir_all(chroot.parent().expect("the HAProxy dir")).expect("created");
    // Where the link points, a directory as `/` is: root's, 0755.
    let target = cluster.dir.path().join("elsewhere");
    std::fs::create_dir(&target).expect("created");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink(&target, &chroot).expect("a link");
    let log = failed_start(&spec);
    assert!(log.contains("must be a directory of root's"), "{log}");
    let mode = std::fs::metadata(&target).expect("target").mode() & 0o7777;
    assert_eq!(mode, 0o755, "the link's target was changed");

    std::fs::remove_file(&chroot).expect("link removed");
    std::fs::create_dir(&chroot).expect("created");
    chown_all(&chroot, nobody());
    let log = failed_start(&spec);
    assert!(
        log.matches("must be a directory of root's").count() == 2,
        "{log}"
    );
}
