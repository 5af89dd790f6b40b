//! The shell-side HAProxy pieces against the real `haproxy` binary: the
//! configuration check, a master-worker process that starts, serves,
//! reloads (confirmed, seamless, or failed and still serving), exits and
//! stops, and `show stat` read through the runtime API.
//!
//! Every test has its own directory and ports on 127.0.0.1. HAProxy must
//! be installed: these tests fail, not skip, without it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aqueduct::haproxy::process::{Binary, CheckError, Master, ProcessError, ReloadOutcome};
use aqueduct::haproxy::socket;
use aqueduct::haproxy::stats::{StatKind, parse_show_stat};

mod support;

/// How long anything in these tests may take before it is a failure.
const DEADLINE: Duration = Duration::from_secs(30);
/// The limit on one test HTTP exchange.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest HTTP response a test reads.
const HTTP_BYTES_MAX: u64 = 64 * 1024;

/// The installed `haproxy`; fails the test (with the reason) if there is
/// none, since CI installs it and a skipped test would prove nothing.
fn haproxy() -> Binary {
    let runs = std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        runs,
        "`haproxy` is not installed or not in PATH: these tests need HAProxy 2.6+ \
         (apt-get install haproxy)"
    );
    Binary::new("haproxy")
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "aqueduct-hx-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port")
        .port()
}

/// A configuration whose frontend on `port` answers every request with
/// `body`, plus `extra` sections, with an admin socket in `dir`.
fn config(dir: &Path, port: u16, body: &str, extra: &str) -> String {
    format!(
        "global\n\
         \x20   stats socket {admin} mode 600 level admin\n\
         defaults\n\
         \x20   mode http\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 5s\n\
         \x20   timeout server 5s\n\
         frontend fe\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   http-request return status 200 content-type text/plain string {body}\n\
         {extra}",
        admin = admin_socket(dir).display(),
    )
}

fn admin_socket(dir: &Path) -> PathBuf {
    dir.join("admin.sock")
}

/// Writes `text` as `dir/haproxy.cfg` and returns its path.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, text).expect("config written");
    path
}

/// One HTTP/1.0 GET of `/` on `port`: the body of a 200, or why not.
fn http_get(port: u16) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), HTTP_TIMEOUT)
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| format!("timeouts: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    (&mut stream)
        .take(HTTP_BYTES_MAX)
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete response: {response:?}"))?;
    if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
        Ok(body.to_owned())
    } else {
        Err(format!("status: {head:?}"))
    }
}

/// Polls `check` until it returns `Some` or [`DEADLINE`] passes.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` is a live process (a zombie, which no init may have
/// reaped in a container, has exited).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// A master started on a fresh config answering `body` on `port`.
async fn start(dir: &Path, port: u16, body: &str) -> Master {
    let config = write_config(dir, &config(dir, port, body, ""));
    Master::start(&haproxy(), &config, dir)
        .await
        .expect("HAProxy starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_config_passes_the_check() {
    let dir = TempDir::new("check-ok");
    let text = config(dir.path(), free_port(), "ok", "");
    haproxy()
        .check(&text, dir.path())
        .await
        .expect("valid config accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_config_is_rejected_in_haproxys_words_without_the_scratch_path() {
    let dir = TempDir::new("check-bad");
    let error = haproxy()
        .check("backend b\n    bogus-keyword x\n", dir.path())
        .await
        .expect_err("invalid config rejected");
    let CheckError::Rejected(rejected) = error else {
        panic!("expected a rejection, got {error}");
    };
    assert!(
        rejected.message.contains("unknown keyword 'bogus-keyword'"),
        "{}",
        rejected.message
    );
    assert!(
        rejected.message.contains("[haproxy.cfg:2]"),
        "{}",
        rejected.message
    );
    let scratch = dir.path().to_string_lossy();
    assert!(
        !rejected.message.contains(scratch.as_ref()),
        "{}",
        rejected.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_check_leaves_no_file_in_the_scratch_dir() {
    let dir = TempDir::new("check-clean");
    let binary = haproxy();
    let _ = binary
        .check("backend b\n    bogus-keyword x\n", dir.path())
        .await;
    let _ = binary
        .check(&config(dir.path(), free_port(), "ok", ""), dir.path())
        .await;
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("scratch dir")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_binary_is_a_process_error_not_a_rejection() {
    let dir = TempDir::new("check-missing");
    let error = Binary::new(dir.path().join("no-such-haproxy"))
        .check("defaults\n", dir.path())
        .await
        .expect_err("cannot run");
    assert!(
        matches!(error, CheckError::Process(ProcessError::Spawn { .. })),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn version_is_the_first_line_of_haproxy_v() {
    let version = haproxy().version().await.expect("version");
    assert!(version.starts_with("HAProxy version "), "{version}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_started_master_serves_traffic() {
    let dir = TempDir::new("start");
    let port = free_port();
    let master = start(dir.path(), port, "hello").await;
    assert_eq!(http_get(port), Ok("hello".to_owned()));
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_whose_config_cannot_start_reports_haproxys_alerts() {
    let dir = TempDir::new("start-fail");
    let held = TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = held.local_addr().expect("address").port();
    let config = write_config(dir.path(), &config(dir.path(), port, "ok", ""));
    let error = Master::start(&haproxy(), &config, dir.path())
        .await
        .err()
        .expect("the port is taken");
    let ProcessError::Exited { last_lines, .. } = &error else {
        panic!("expected an exit, got {error}");
    };
    assert!(
        last_lines
            .iter()
            .any(|l| l.contains("[ALERT]") && l.contains("cannot bind socket")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_leaves_no_haproxy_process_behind() {
    let dir = TempDir::new("stop");
    let master = start(dir.path(), free_port(), "ok").await;
    let master_pid = master.pid();
    let worker_pids: Vec<u32> = master
        .show_proc()
        .await
        .expect("show proc")
        .workers
        .iter()
        .map(|w| w.pid)
        .collect();
    assert!(!worker_pids.is_empty());
    master.stop().await;
    assert!(!alive(master_pid), "master {master_pid} still runs");
    eventually("the workers to exit", || {
        worker_pids.iter().all(|&pid| !alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_is_confirmed_and_serves_the_new_config() {
    let dir = TempDir::new("reload");
    let port = free_port();
    let mut master = start(dir.path(), port, "before").await;
    write_config(dir.path(), &config(dir.path(), port, "after", ""));
    let outcome = master.reload().await.expect("reload");
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(http_get(port), Ok("after".to_owned()));
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_reloads_under_sequential_traffic_fail_no_request() {
    let dir = TempDir::new("reload-traffic");
    let port = free_port();
    let mut master = start(dir.path(), port, "v0").await;
    let stop = Arc::new(AtomicBool::new(false));
    let client = tokio::task::spawn_blocking({
        let stop = stop.clone();
        move || {
            let started = Instant::now();
            let (mut ok, mut failures) = (0u64, Vec::new());
            // Bounded by count and time, so a stuck test cannot loop forever.
            while !stop.load(Ordering::Relaxed) && ok < 200_000 && started.elapsed() < DEADLINE {
                match http_get(port) {
                    Ok(_) => ok += 1,
                    Err(error) => failures.push(error),
                }
            }
            (ok, failures)
        }
    });
    let mut took = Vec::new();
    for generation in 1..=5 {
        write_config(
            dir.path(),
            &config(dir.path(), port, &format!("v{generation}"), ""),
        );
        match master.reload().await.expect("reload") {
            ReloadOutcome::Applied { took: t } => took.push(t),
            failed => panic!("reload {generation}: {failed:?}"),
        }
        assert_eq!(http_get(port), Ok(format!("v{generation}")));
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failures) = client.await.expect("client");
    eprintln!("reload confirmed in {took:?}; {ok} requests served meanwhile");
    assert!(ok > 0, "the client made no request");
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_cannot_bind_fails_and_the_old_worker_keeps_serving() {
    let dir = TempDir::new("reload-fail");
    let port = free_port();
    let mut master = start(dir.path(), port, "old").await;
    let held = TcpListener::bind("127.0.0.1:0").expect("listener");
    let taken = held.local_addr().expect("address").port();
    write_config(
        dir.path(),
        &config(
            dir.path(),
            port,
            "new",
            &format!("frontend taken\n    bind 127.0.0.1:{taken}\n"),
        ),
    );
    let outcome = master.reload().await.expect("reload answered");
    let ReloadOutcome::Failed { alerts, .. } = &outcome else {
        panic!("expected a failed reload, got {outcome:?}");
    };
    assert!(
        alerts.iter().any(|a| a.contains("cannot bind socket")),
        "{alerts:?}"
    );
    assert_eq!(http_get(port), Ok("old".to_owned()));
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_after_a_failed_one_applies_the_fixed_config() {
    let dir = TempDir::new("reload-recover");
    let port = free_port();
    let mut master = start(dir.path(), port, "old").await;
    let held = TcpListener::bind("127.0.0.1:0").expect("listener");
    let taken = held.local_addr().expect("address").port();
    let broken = format!("frontend taken\n    bind 127.0.0.1:{taken}\n");
    write_config(dir.path(), &config(dir.path(), port, "broken", &broken));
    let failed = master.reload().await.expect("reload answered");
    assert!(matches!(failed, ReloadOutcome::Failed { .. }), "{failed:?}");
    write_config(dir.path(), &config(dir.path(), port, "fixed", ""));
    let fixed = master.reload().await.expect("reload answered");
    assert!(matches!(fixed, ReloadOutcome::Applied { .. }), "{fixed:?}");
    assert_eq!(http_get(port), Ok("fixed".to_owned()));
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_master_exiting_is_observed() {
    let dir = TempDir::new("exit");
    let mut master = start(dir.path(), free_port(), "ok").await;
    let pid = i32::try_from(master.pid())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill -9");
    let status = tokio::time::timeout(DEADLINE, master.exited())
        .await
        .expect("exit observed in time")
        .expect("exit status");
    assert_eq!(status.signal(), Some(9), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_exit_when_their_master_is_killed() {
    let dir = TempDir::new("orphans");
    let mut master = start(dir.path(), free_port(), "ok").await;
    let worker = master
        .show_proc()
        .await
        .expect("show proc")
        .current_worker()
        .map(|w| w.pid)
        .expect("a worker");
    let pid = i32::try_from(master.pid())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill -9");
    let _ = tokio::time::timeout(DEADLINE, master.exited()).await;
    eventually("the orphaned worker to exit", || {
        (!alive(worker)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn show_stat_through_the_admin_socket_parses_into_the_frontend_row() {
    let dir = TempDir::new("stat");
    let port = free_port();
    let master = start(dir.path(), port, "ok").await;
    assert_eq!(http_get(port), Ok("ok".to_owned()));
    let csv = socket::send(&admin_socket(dir.path()), "show stat", DEADLINE)
        .await
        .expect("show stat");
    let rows = parse_show_stat(&csv);
    let frontend = rows
        .iter()
        .find(|r| r.proxy == "fe" && r.kind == StatKind::Frontend)
        .unwrap_or_else(|| panic!("no frontend row in {rows:?}"));
    assert_eq!(frontend.status, "OPEN");
    assert_eq!(frontend.responses.status_2xx, 1);
    master.stop().await;
}

/// A configuration as a root-run peer renders it, in essence: the
/// listeners handed over with `expose-fd listeners`, the server state
/// loaded from a file, a health-checked member named by host name
/// (resolved by libc at start), and — when `drop_root` — the workers
/// dropping to Debian's `haproxy` user in the empty chroot `dir/chroot`.
fn peer_like_config(dir: &Path, port: u16, body: &str, member: u16, drop_root: bool) -> String {
    let privileges = if drop_root {
        let chroot = dir.join("chroot");
        std::fs::create_dir_all(&chroot).expect("chroot");
        std::fs::set_permissions(&chroot, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("chroot mode");
        format!(
            "\x20   user haproxy\n\x20   group haproxy\n\x20   chroot {}\n",
            chroot.display()
        )
    } else {
        String::new()
    };
    format!(
        "global\n\
         {privileges}\
         \x20   stats socket {admin} mode 600 level admin expose-fd listeners\n\
         \x20   server-state-file {state}\n\
         defaults\n\
         \x20   mode http\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 5s\n\
         \x20   timeout server 5s\n\
         \x20   load-server-state-from-file global\n\
         \x20   default-server init-addr last,libc,none\n\
         frontend fe\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   http-request return status 200 content-type text/plain string {body}\n\
         backend be\n\
         \x20   server member localhost:{member} check inter 100ms\n",
        admin = admin_socket(dir).display(),
        state = dir.join("server-state").display(),
    )
}

/// How the current worker of `master` runs.
async fn current_worker(master: &Master) -> support::ProcessPrivileges {
    let proc = master.show_proc().await.expect("show proc");
    let pid = proc.current_worker().expect("a current worker").pid;
    support::worker_privileges(i32::try_from(pid).expect("a pid")).expect("the worker runs")
}

/// Waits until `be/member`'s health check, run by a worker, says UP.
async fn wait_until_member_up(dir: &Path) {
    let admin = admin_socket(dir);
    let mut last = String::new();
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if let Ok(csv) = socket::send(&admin, "show stat", DEADLINE).await {
            let rows = parse_show_stat(&csv);
            let member = rows.iter().find(|r| r.proxy == "be" && r.name == "member");
            last = member.map(|r| r.status.clone()).unwrap_or_default();
            if last.starts_with("UP") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("be/member is not UP: {last:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_haproxy_is_taken_over_by_one_whose_workers_drop_root_into_a_chroot_and_reload() {
    let dir = TempDir::new("privileges");
    let (port, member) = (
        free_port(),
        TcpListener::bind("127.0.0.1:0").expect("member"),
    );
    let member_port = member.local_addr().expect("address").port();
    let run_dirs = [dir.path().join("old-run"), dir.path().join("new-run")];
    for run_dir in &run_dirs {
        std::fs::create_dir_all(run_dir).expect("run dir");
    }
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("config written");
        path
    };
    // The previous release: HAProxy as root, no chroot.
    let old_config = write(
        "old.cfg",
        peer_like_config(dir.path(), port, "old", member_port, false),
    );
    let old = Master::start(&haproxy(), &old_config, &run_dirs[0])
        .await
        .expect("the old HAProxy starts");
    assert_eq!(http_get(port), Ok("old".to_owned()));
    assert!(!current_worker(&old).await.unprivileged());

    let new_config = write(
        "new.cfg",
        peer_like_config(dir.path(), port, "new", member_port, true),
    );
    let mut new = Master::take_over(
        &haproxy(),
        &new_config,
        &run_dirs[1],
        &admin_socket(dir.path()),
    )
    .await
    .expect("the new HAProxy takes the listeners over");
    old.stop().await;

    assert_eq!(http_get(port), Ok("new".to_owned()));
    let chroot = dir.path().join("chroot");
    let worker = current_worker(&new).await;
    assert!(worker.unprivileged_in(&chroot), "{worker:?}");
    wait_until_member_up(dir.path()).await;
    // What the driver does before a reload: the master (root, outside the
    // chroot) loads this file into the next worker.
    let state = socket::send(&admin_socket(dir.path()), "show servers state", DEADLINE)
        .await
        .expect("show servers state");
    std::fs::write(dir.path().join("server-state"), state).expect("state written");
    write(
        "new.cfg",
        peer_like_config(dir.path(), port, "reloaded", member_port, true),
    );
    let outcome = new.reload().await.expect("reload");
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(http_get(port), Ok("reloaded".to_owned()));
    let reloaded = current_worker(&new).await;
    assert_ne!(reloaded.pid, worker.pid);
    assert!(reloaded.unprivileged_in(&chroot), "{reloaded:?}");
    wait_until_member_up(dir.path()).await;
    new.stop().await;
}
