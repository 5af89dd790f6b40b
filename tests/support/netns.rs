//! Network namespaces for partitions between real processes: a hub
//! namespace holding a bridge, one namespace per peer joined to it by a veth
//! pair, private addresses that exist only inside those namespaces, and the
//! faults a test injects (a link down, nftables drops, random loss).
//!
//! Owns the namespaces it creates and everything running in them: dropping a
//! [`Network`] (also while a test panics) kills what still runs inside and
//! deletes them. Needs root, `ip` (iproute2) and `nft` (nftables); without
//! them a test fails with a message saying so, never passes silently.
//!
//! Inside namespaces nothing clashes with another test: interface names
//! (`br0`, `v<i>`, `eth0`) and ports are private to each namespace; only the
//! namespace names are global, so they carry the test process id and a
//! counter (`aqt-<pid>-<n>-hub`, `aqt-<pid>-<n>-p<i>`).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::http::TestServer;
use super::{Cluster, Peer, wait_for_mesh};

/// What every namespace name of this harness starts with.
const PREFIX: &str = "aqt-";
/// The nftables table (family `inet`) each peer namespace filters with; its
/// chain `in` sees every packet arriving in that namespace.
const TABLE: &str = "aqt";
/// The port each peer namespace's member server listens on (127.0.0.1).
pub const MEMBER_PORT: u16 = 9001;

/// Fails the test unless it can create namespaces: root, `ip` and `nft`.
pub fn require_root_and_tools() {
    assert!(
        rustix::process::geteuid().is_root(),
        "partition tests need root (network namespaces, veth, nftables); CI runs them as root"
    );
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(tool)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "partition tests need `{tool}` (apt-get install {package}; scripts/system-packages.sh does)"
        );
    }
}

/// Runs `f` on a new thread inside network namespace `ns` (the name `ip
/// netns` knows it by) and returns its result. Sockets `f` creates stay in
/// that namespace whichever thread uses them later, and threads it spawns
/// start in it.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let handle = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("network namespace {ns}: {e}"));
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            rustix::thread::move_into_link_name_space(
                handle.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap_or_else(|e| panic!("entering network namespace {ns}: {e}"));
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `ip args...`; panics with its error output if it fails.
fn ip(args: &[&str]) {
    run("ip", args, None);
}

/// Runs `nft` inside peer namespace `ns` with `script` on its standard input.
fn nft(ns: &str, script: &str) {
    run("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(script));
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("writes stdin");
    drop(input);
    let output = child.wait_with_output().expect("waits");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Kills whatever runs in namespace `ns` (only namespaces this harness
/// created), then deletes it. Best effort: used while cleaning up.
fn remove_namespace(ns: &str) {
    let pids = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Removes namespaces an earlier test process left behind (it was killed
/// before its guards ran): those named for a process that no longer runs.
fn sweep_leftovers() {
    let Ok(list) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_namespace(name);
        }
    }
}

/// A hub namespace with a bridge and `peers` peer namespaces on it; each
/// peer namespace has `eth0` at 10.S.0.(i+1)/24 (S chosen per network), its
/// loopback up, and an empty nftables input chain for faults.
pub struct Network {
    name: String,
    subnet: u8,
    peers: usize,
    /// Namespaces created so far, in order (the hub first): what `Drop`
    /// removes, even when creation stopped half-way.
    created: Vec<String>,
}

impl Network {
    pub fn new(peers: usize) -> Network {
        require_root_and_tools();
        sweep_leftovers();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut network = Network {
            name: format!("{PREFIX}{pid}-{n}"),
            subnet: u8::try_from((u64::from(pid) + n) % 250 + 1).expect("1 to 250"),
            peers,
            created: Vec::new(),
        };
        let hub = network.hub();
        ip(&["netns", "add", &hub]);
        network.created.push(hub.clone());
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..peers {
            let ns = network.ns(i);
            ip(&["netns", "add", &ns]);
            network.created.push(ns.clone());
            let veth = format!("v{i}");
            ip(&[
                "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]);
            ip(&["-n", &hub, "link", "set", &veth, "master", "br0"]);
            ip(&["-n", &hub, "link", "set", &veth, "up"]);
            let address = format!("{}/24", network.addr(i));
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            nft(
                &ns,
                &format!(
                    "add table inet {TABLE}\n\
                     add chain inet {TABLE} in {{ type filter hook input priority 0; }}\n"
                ),
            );
        }
        network
    }

    fn hub(&self) -> String {
        format!("{}-hub", self.name)
    }

    /// Peer `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-p{i}", self.name)
    }

    /// Peer `i`'s address (only its namespace has it).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, u8::try_from(i + 1).expect("few peers"))
    }

    /// Takes peer `i`'s link down: it reaches no one and no one reaches it.
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.hub(), "link", "set", &format!("v{i}"), "down"]);
    }

    /// Drops every packet from peer `from` to peer `to` (on arrival at
    /// `to`, so that `from` sees no error, just silence); `to` → `from`
    /// still flows.
    pub fn drop_packets(&self, from: usize, to: usize) {
        self.add_rule(to, &format!("ip saddr {} drop", self.addr(from)));
    }

    /// Drops `percent`% of the packets between peers `a` and `b`, each way
    /// independently at random.
    pub fn lose(&self, a: usize, b: usize, percent: u8) {
        for (from, to) in [(a, b), (b, a)] {
            self.add_rule(
                to,
                &format!(
                    "ip saddr {} numgen random mod 100 < {percent} drop",
                    self.addr(from)
                ),
            );
        }
    }

    /// Drops everything between peers of different `groups`.
    pub fn partition(&self, groups: &[&[usize]]) {
        for (g, group) in groups.iter().enumerate() {
            for other in groups.iter().skip(g + 1) {
                for &a in group.iter() {
                    for &b in other.iter() {
                        self.drop_packets(a, b);
                        self.drop_packets(b, a);
                    }
                }
            }
        }
    }

    /// Every link up and every drop rule gone.
    pub fn heal(&self) {
        for i in 0..self.peers {
            nft(&self.ns(i), &format!("flush chain inet {TABLE} in\n"));
            ip(&["-n", &self.hub(), "link", "set", &format!("v{i}"), "up"]);
        }
    }

    fn add_rule(&self, i: usize, rule: &str) {
        nft(&self.ns(i), &format!("add rule inet {TABLE} in {rule}\n"));
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            remove_namespace(ns);
        }
    }
}

/// N peers, each in its own namespace of a [`Network`] with its own
/// HAProxy (listening on the peer's address), gossip and API on that
/// address too, and a member server in each namespace at
/// 127.0.0.1:[`MEMBER_PORT`] answering with `member-<i>`, so that a backend
/// with that member is served locally by every peer's HAProxy, cut off or
/// not.
///
/// Fields drop in order: the peers (and their HAProxies), the member
/// servers, the namespaces, then the cluster's directory.
pub struct NetMesh {
    pub peers: Vec<Peer>,
    pub members: Vec<TestServer>,
    pub net: Network,
    pub cluster: Cluster,
}

impl NetMesh {
    /// Starts `n` peers (each joining through the first) and waits until
    /// every one sees all the others alive.
    pub fn start(label: &str, n: usize) -> NetMesh {
        let cluster = Cluster::new(label);
        let net = Network::new(n);
        let members = (0..n)
            .map(|i| {
                in_netns(&net.ns(i), || {
                    TestServer::bind(
                        &format!("member-{i}"),
                        SocketAddr::from((Ipv4Addr::LOCALHOST, MEMBER_PORT)),
                    )
                })
            })
            .collect();
        let mut mesh = NetMesh {
            peers: Vec::new(),
            members,
            net,
            cluster,
        };
        for i in 0..n {
            let mut spec = mesh.cluster.peer(&format!("peer-{i}"));
            let addr = mesh.net.addr(i);
            spec.netns = Some(mesh.net.ns(i));
            spec.api = SocketAddr::from((addr, 0));
            spec.gossip = SocketAddr::from((addr, 0));
            spec.haproxy = Some(addr);
            spec.join = mesh.peers.first().map(|p| p.gossip).into_iter().collect();
            mesh.peers.push(spec.start());
        }
        wait_for_mesh(&mesh.peers.iter().collect::<Vec<_>>());
        mesh
    }

    /// All the peers, for the helpers that take a slice of them.
    pub fn all(&self) -> Vec<&Peer> {
        self.peers.iter().collect()
    }
}
