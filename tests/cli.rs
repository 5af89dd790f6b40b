//! The `aqueduct` command line as users and scripts meet it: `run` with no
//! arguments, options from flags, environment and a TOML file, `certs`, and
//! clear start-up errors.

mod support;

use std::process::{Command, Stdio};

use aqueduct::api::Quotas;
use aqueduct::config::{DEFAULT_API, OnExit, QuotaArgs, RunArgs};
use aqueduct::crdt::model::CfgWord;
use support::{Cluster, TempDir, aqueduct, binary, first_stdout_line};

/// Runs `aqueduct` with `args` and `envs` in `cwd` until it prints its
/// listening line; returns that line, then stops the process.
fn first_line(cwd: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut child = Command::new(binary())
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("aqueduct starts");
    let line = first_stdout_line(&mut child);
    let _ = child.kill();
    let output = child.wait_with_output().expect("exits");
    assert!(
        line.contains("listening"),
        "no listening line; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    line
}

/// Runs `aqueduct` to its exit; returns (success, stderr).
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("aqueduct runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn run_without_arguments_starts_a_single_peer_with_its_own_ca_in_aqueduct_data() {
    let cwd = TempDir::new("noargs");
    // Only the ports come from the environment, so that tests never collide
    // on the default port 10000.
    let line = first_line(
        cwd.path(),
        &["run"],
        &[
            ("AQUEDUCT_API", "127.0.0.1:0"),
            ("AQUEDUCT_GOSSIP", "127.0.0.1:0"),
            ("AQUEDUCT_HAPROXY", "off"),
        ],
    );
    assert!(line.contains("api=http://127.0.0.1:"), "{line}");
    for file in [
        "state.redb",
        "tls/node.pem",
        "tls/node.key",
        "tls/ca.pem",
        "tls/ca/ca.key",
    ] {
        assert!(
            cwd.path().join("aqueduct-data").join(file).exists(),
            "aqueduct-data/{file} missing"
        );
    }
}

#[test]
fn the_default_api_address_is_the_original_aqueduct_port_on_loopback() {
    let options = RunArgs::default().resolve().expect("defaults resolve");
    assert_eq!(options.api, DEFAULT_API);
    assert_eq!(DEFAULT_API.to_string(), "127.0.0.1:10000");
}

#[test]
fn a_flag_beats_the_environment() {
    let cwd = TempDir::new("flag-env");
    let line = first_line(
        cwd.path(),
        &[
            "run",
            "--api",
            "127.0.0.1:0",
            "--gossip",
            "127.0.0.1:0",
            "--haproxy",
            "off",
        ],
        // An address no test can bind: used, it would fail the start.
        &[("AQUEDUCT_API", "192.0.2.1:1")],
    );
    assert!(line.contains("api=http://127.0.0.1:"), "{line}");
}

#[test]
fn the_config_file_sets_options_and_flags_beat_it() {
    let dir = TempDir::new("file");
    let file = dir.path().join("aqueduct.toml");
    std::fs::write(
        &file,
        "api = \"127.0.0.1:1\"\ngossip = \"127.0.0.1:2\"\ndata_dir = \"/var/lib/x\"\njoin = [\"127.0.0.1:7000\"]\n",
    )
    .expect("writes");
    let args = RunArgs {
        api: Some("127.0.0.1:9".parse().expect("addr")),
        config: Some(file),
        ..RunArgs::default()
    };
    let options = args.resolve().expect("resolves");
    assert_eq!(options.api.to_string(), "127.0.0.1:9");
    assert_eq!(options.gossip.to_string(), "127.0.0.1:2");
    assert_eq!(options.data_dir, std::path::PathBuf::from("/var/lib/x"));
    assert_eq!(options.join, vec!["127.0.0.1:7000".parse().expect("addr")]);
}

#[test]
fn haproxy_is_kept_on_exit_unless_the_file_or_a_flag_says_stop() {
    assert_eq!(
        RunArgs::default()
            .resolve()
            .expect("resolves")
            .haproxy_options
            .on_exit,
        OnExit::Keep
    );
    let dir = TempDir::new("on-exit");
    let file = dir.path().join("aqueduct.toml");
    std::fs::write(&file, "haproxy_on_exit = \"stop\"\n").expect("writes");
    let from_file = RunArgs {
        config: Some(file.clone()),
        ..RunArgs::default()
    };
    assert_eq!(
        from_file
            .resolve()
            .expect("resolves")
            .haproxy_options
            .on_exit,
        OnExit::Stop
    );
    let flag_over_file = RunArgs {
        config: Some(file),
        haproxy_on_exit: Some(OnExit::Keep),
        ..RunArgs::default()
    };
    assert_eq!(
        flag_over_file
            .resolve()
            .expect("resolves")
            .haproxy_options
            .on_exit,
        OnExit::Keep
    );
}

#[test]
fn haproxys_user_and_group_come_from_the_file_and_flags_beat_it() {
    let dir = TempDir::new("haproxy-user");
    let file = dir.path().join("aqueduct.toml");
    std::fs::write(&file, "haproxy_user = \"www\"\nhaproxy_group = \"web\"\n").expect("writes");
    let options = RunArgs {
        config: Some(file),
        haproxy_user: Some("nobody".into()),
        ..RunArgs::default()
    }
    .resolve()
    .expect("resolves")
    .haproxy_options;
    let words = |w: Option<CfgWord>| w.map(|w| w.to_string());
    assert_eq!(words(options.user).as_deref(), Some("nobody"));
    assert_eq!(words(options.group).as_deref(), Some("web"));
}

#[test]
fn a_haproxy_user_that_cannot_be_written_into_haproxy_cfg_is_refused() {
    let error = RunArgs {
        haproxy_user: Some("haproxy\n    chroot /".into()),
        ..RunArgs::default()
    }
    .resolve()
    .expect_err("refused")
    .to_string();
    assert!(error.contains("haproxy-user"), "{error}");
}

#[test]
fn an_unknown_haproxy_on_exit_value_is_refused_with_the_choices() {
    let output = Command::new(binary())
        .args(["run", "--haproxy-on-exit", "maybe"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("keep") && error.contains("stop"), "{error}");
}

#[test]
fn an_unknown_config_key_is_an_error_naming_it() {
    let dir = TempDir::new("unknown-key");
    let file = dir.path().join("aqueduct.toml");
    std::fs::write(&file, "api = \"127.0.0.1:1\"\ngosip = \"127.0.0.1:2\"\n").expect("writes");
    let args = RunArgs {
        config: Some(file),
        ..RunArgs::default()
    };
    let error = args.resolve().expect_err("a typo is refused").to_string();
    assert!(error.contains("gosip"), "{error}");
}

#[test]
fn an_invalid_name_is_refused_before_anything_starts() {
    let args = RunArgs {
        name: Some("Bad Name".into()),
        ..RunArgs::default()
    };
    let error = args.resolve().expect_err("refused").to_string();
    assert!(error.contains("name"), "{error}");
}

#[test]
fn a_corrupt_store_is_a_start_up_error_naming_the_file_and_is_left_alone() {
    let cluster = Cluster::new("corrupt");
    let spec = cluster.peer("peer-x");
    std::fs::create_dir_all(&spec.data_dir).expect("data dir");
    let store = spec.data_dir.join("state.redb");
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(&store, &garbage).expect("writes");
    let mut child = spec.spawn();
    let status = child.wait().expect("exits");
    assert!(!status.success());
    let log = std::fs::read_to_string(&spec.log).expect("log");
    assert!(log.contains(&store.display().to_string()), "log:\n{log}");
    assert_eq!(std::fs::read(&store).expect("still there"), garbage);
}

#[test]
fn a_name_that_differs_from_the_certificate_is_refused() {
    let cluster = Cluster::new("mismatch");
    let mut spec = cluster.peer("peer-y");
    spec.name = "someone-else".into();
    let mut child = spec.spawn();
    assert!(!child.wait().expect("exits").success());
    let log = std::fs::read_to_string(&spec.log).expect("log");
    assert!(
        log.contains("someone-else") && log.contains("peer-y"),
        "log:\n{log}"
    );
}

#[test]
fn certs_init_refuses_to_overwrite_a_ca() {
    let dir = TempDir::new("ca-twice");
    let out = dir.path().join("ca");
    aqueduct(&["certs", "init", "--out", out.to_str().expect("utf-8")]);
    let before = std::fs::read(out.join("ca.key")).expect("key");
    let (ok, stderr) = run_to_exit(&["certs", "init", "--out", out.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(stderr.contains("ca"), "{stderr}");
    assert_eq!(std::fs::read(out.join("ca.key")).expect("key"), before);
}

/// `aqueduct certs issue` for `node-1` into `dir/<out>` with `extra`
/// arguments: (success, stderr, the certificate's expiry if one was
/// written).
fn issue_with(cluster: &Cluster, out: &str, extra: &[&str]) -> (bool, String, Option<i64>) {
    let out = cluster.dir.path().join(out);
    let ca = cluster.ca_dir();
    let mut args = vec![
        "certs",
        "issue",
        "--ca",
        ca.to_str().expect("utf-8"),
        "--name",
        "node-1",
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let (ok, stderr) = run_to_exit(&args);
    let not_after = out
        .join("node.pem")
        .exists()
        .then(|| aqueduct::certs::TlsIdentity::load(&out).expect("a valid identity"))
        .map(|identity| identity.certificate().not_after);
    (ok, stderr, not_after)
}

fn days_from_now(days: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(now).expect("seconds fit") + days * 24 * 60 * 60
}

#[test]
fn certs_issue_days_sets_the_validity_and_defaults_to_two_years() {
    let cluster = Cluster::new("issue-days");
    for (out, extra, days) in [
        ("three", &["--days", "3"][..], 3),
        ("default", &[][..], 730),
    ] {
        let (ok, stderr, not_after) = issue_with(&cluster, out, extra);
        assert!(ok, "{extra:?}: {stderr}");
        let not_after = not_after.expect("a certificate");
        let expected = days_from_now(days);
        assert!(
            (expected - 60..=expected + 60).contains(&not_after),
            "{extra:?}: not after {not_after}, expected about {expected}"
        );
    }
}

#[test]
fn certs_issue_refuses_days_out_of_bounds_clearly_and_writes_nothing() {
    let cluster = Cluster::new("issue-bad-days");
    for days in ["0", "-5", "3651", "99999999999", "two"] {
        let (ok, stderr, written) = issue_with(&cluster, days, &["--days", days]);
        assert!(!ok, "--days {days} was taken");
        assert!(
            stderr.contains("invalid validity") && stderr.contains(days),
            "--days {days}: {stderr}"
        );
        assert_eq!(written, None, "--days {days}");
    }
}

#[test]
fn bare_aqueduct_is_run_and_reads_the_environment() {
    let cwd = TempDir::new("bare");
    let line = first_line(
        cwd.path(),
        &[],
        &[
            ("AQUEDUCT_API", "127.0.0.1:0"),
            ("AQUEDUCT_GOSSIP", "127.0.0.1:0"),
            ("AQUEDUCT_HAPROXY", "off"),
        ],
    );
    assert!(
        line.contains("api=http://127.0.0.1:") && !line.contains(":10000 "),
        "{line}"
    );
}

#[test]
fn a_wildcard_gossip_address_needs_an_advertised_one() {
    let args = RunArgs {
        gossip: Some("0.0.0.0:7000".parse().expect("addr")),
        ..RunArgs::default()
    };
    let error = args.resolve().expect_err("refused").to_string();
    assert!(error.contains("advertise"), "{error}");
    let args = RunArgs {
        gossip: Some("0.0.0.0:7000".parse().expect("addr")),
        advertise: Some("10.1.2.3:7000".parse().expect("addr")),
        ..RunArgs::default()
    };
    assert!(args.resolve().is_ok());
}

#[test]
fn join_addresses_take_host_names_and_refuse_what_is_not_host_port() {
    use aqueduct::config::JoinAddr;
    for good in [
        "10.0.0.2:10001",
        "lb-2.internal:10001",
        "[::1]:7000",
        "localhost:1",
    ] {
        assert!(good.parse::<JoinAddr>().is_ok(), "{good} refused");
    }
    for bad in [
        "10.0.0.2",
        "lb-2:0",
        "lb 2:10001",
        ":10001",
        "lb-2:port",
        "a/b:1",
        "::1:7000",
        "[127.0.0.1:80",
        "[lb-2]:80",
        "a..b:1",
        "-:1",
    ] {
        assert!(bad.parse::<JoinAddr>().is_err(), "{bad} accepted");
    }
}

#[test]
fn a_peer_joins_through_a_host_name() {
    let cluster = Cluster::new("join-by-name");
    let a = cluster.start("peer-a", &[]);
    let mut spec = cluster.peer("peer-b");
    spec.extra = vec!["--join".into(), format!("localhost:{}", a.gossip.port())];
    let b = spec.start();
    support::wait_for_mesh(&[&a, &b]);
}

#[test]
fn haproxy_options_are_validated_before_anything_starts() {
    let stats = Some("127.0.0.1:1988".parse().expect("addr"));
    let args = RunArgs {
        haproxy_stats: stats,
        ..RunArgs::default()
    };
    let error = args.resolve().expect_err("refused").to_string();
    assert!(error.contains("haproxy-stats-auth"), "{error}");
    let args = RunArgs {
        haproxy_stats: stats,
        haproxy_stats_auth: Some("admin:s3cret".to_owned()),
        ..RunArgs::default()
    };
    assert!(args.resolve().is_ok());
    let args = RunArgs {
        haproxy_log: Some("127.0.0.1:514 local0\nbackend evil".to_owned()),
        ..RunArgs::default()
    };
    let error = args.resolve().expect_err("refused").to_string();
    assert!(error.contains("haproxy-log"), "{error}");
    // HAProxy's timers hold at most 2^31 - 1 ms.
    let args = RunArgs {
        haproxy_timeout_client: Some(3_000_000_000),
        ..RunArgs::default()
    };
    let error = args.resolve().expect_err("refused").to_string();
    assert!(error.contains("haproxy-timeout-client"), "{error}");
}

#[test]
fn api_limits_have_defaults_come_from_the_file_and_are_range_checked() {
    let defaults = RunArgs::default().resolve().expect("resolves");
    assert_eq!(
        defaults.api_max_requests,
        aqueduct::api::MAX_REQUESTS_DEFAULT
    );
    assert_eq!(defaults.api_body_limit, aqueduct::api::BODY_LIMIT_DEFAULT);
    let dir = TempDir::new("api-limits");
    let file = dir.path().join("aqueduct.toml");
    std::fs::write(&file, "api_max_requests = 64\napi_body_limit = 65536\n").expect("writes");
    let args = RunArgs {
        api_max_requests: Some(32),
        config: Some(file),
        ..RunArgs::default()
    };
    let options = args.resolve().expect("resolves");
    assert_eq!(
        (options.api_max_requests, options.api_body_limit),
        (32, 65536)
    );
    for (args, option) in [
        (
            RunArgs {
                api_max_requests: Some(0),
                ..RunArgs::default()
            },
            "api-max-requests",
        ),
        (
            RunArgs {
                api_body_limit: Some(1 << 30),
                ..RunArgs::default()
            },
            "api-body-limit",
        ),
    ] {
        let error = args.resolve().expect_err("refused").to_string();
        assert!(error.contains(option), "{error}");
    }
}

#[test]
fn an_api_beyond_loopback_needs_a_token_or_an_explicit_insecure_flag() {
    let beyond = || RunArgs {
        api: Some("0.0.0.0:10000".parse().expect("addr")),
        ..RunArgs::default()
    };
    let error = beyond().resolve().expect_err("refused").to_string();
    assert!(
        error.contains("loopback") && error.contains("--api-insecure"),
        "{error}"
    );
    let with_token = RunArgs {
        api_token: Some("a-token".into()),
        ..beyond()
    };
    assert!(with_token.resolve().is_ok());
    let insecure = RunArgs {
        api_insecure: true,
        ..beyond()
    };
    assert!(insecure.resolve().expect("resolves").api_insecure);
}

#[test]
fn a_token_file_gives_its_first_line_and_cannot_be_combined_with_the_flag() {
    let dir = TempDir::new("token-file");
    let file = dir.path().join("token");
    std::fs::write(&file, "from-the-file\n").expect("writes");
    let args = RunArgs {
        api_token_file: Some(file.clone()),
        ..RunArgs::default()
    };
    let options = args.resolve().expect("resolves");
    let token = options.api_access.write.expect("a write token");
    assert_eq!(token.expose(), "from-the-file");
    let both = RunArgs {
        api_token: Some("from-the-flag".into()),
        api_token_file: Some(file),
        ..RunArgs::default()
    };
    let error = both.resolve().expect_err("refused").to_string();
    assert!(error.contains("not both"), "{error}");
    let missing = RunArgs {
        api_token_file: Some(dir.path().join("nothing-here")),
        ..RunArgs::default()
    };
    let error = missing.resolve().expect_err("refused").to_string();
    assert!(error.contains("cannot read"), "{error}");
}

#[test]
fn a_read_token_alone_is_refused() {
    let args = RunArgs {
        api_read_token: Some("reader".into()),
        ..RunArgs::default()
    };
    let error = args.resolve().expect_err("refused").to_string();
    assert!(error.contains("write token"), "{error}");
}

#[test]
fn allowed_hosts_and_origins_are_validated() {
    let args = RunArgs {
        api_allowed_hosts: vec!["LB-1.Internal".into(), "10.0.0.5".into()],
        api_allowed_origins: vec!["https://Ops.example.com/".into()],
        ..RunArgs::default()
    };
    let site = args.resolve().expect("resolves").api_site;
    assert_eq!(site.allowed_hosts, ["lb-1.internal", "10.0.0.5"]);
    assert_eq!(site.allowed_origins, ["https://ops.example.com"]);
    for (hosts, origins) in [
        (vec!["lb-1:10000".to_owned()], vec![]),
        (vec![], vec!["ops.example.com".to_owned()]),
        (vec![], vec!["https://ops.example.com/path".to_owned()]),
    ] {
        let args = RunArgs {
            api_allowed_hosts: hosts,
            api_allowed_origins: origins,
            ..RunArgs::default()
        };
        assert!(args.resolve().is_err());
    }
}

#[test]
fn quotas_have_defaults_come_from_flags_and_the_file_and_are_range_checked() {
    let defaults = RunArgs::default().resolve().expect("resolves");
    assert_eq!(defaults.quotas, Quotas::default());
    let dir = TempDir::new("quotas");
    let file = dir.path().join("aqueduct.toml");
    std::fs::write(&file, "quota_backends = 50\nquota_lease_max = 600\n").expect("writes");
    let args = RunArgs {
        quotas: QuotaArgs {
            quota_backends: Some(20),
            ..QuotaArgs::default()
        },
        config: Some(file),
        ..RunArgs::default()
    };
    let quotas = args.resolve().expect("resolves").quotas;
    assert_eq!((quotas.backends, quotas.lease_max_seconds), (20, 600));
    // A quota can only tighten what decoding accepts, and is never 0.
    for quotas in [
        QuotaArgs {
            quota_frontends: Some(0),
            ..QuotaArgs::default()
        },
        QuotaArgs {
            quota_members_per_backend: Some(4097),
            ..QuotaArgs::default()
        },
        QuotaArgs {
            quota_meta_bytes: Some(4097),
            ..QuotaArgs::default()
        },
        QuotaArgs {
            quota_lease_max: Some(86_401),
            ..QuotaArgs::default()
        },
        QuotaArgs {
            quota_natives_lines: Some(65),
            ..QuotaArgs::default()
        },
        QuotaArgs {
            quota_document_bytes: Some(1 << 30),
            ..QuotaArgs::default()
        },
    ] {
        let args = RunArgs {
            quotas: quotas.clone(),
            ..RunArgs::default()
        };
        let error = args.resolve().expect_err("refused").to_string();
        assert!(error.contains("option quota-"), "{quotas:?}: {error}");
    }
}

#[test]
fn api_connection_bounds_have_defaults_come_from_the_file_and_are_range_checked() {
    use aqueduct::api::server;
    let defaults = RunArgs::default()
        .resolve()
        .expect("resolves")
        .api_connections;
    assert_eq!(defaults.header_timeout, server::HEADER_TIMEOUT_DEFAULT);
    assert_eq!(defaults.idle_timeout, server::IDLE_TIMEOUT_DEFAULT);
    assert_eq!(defaults.max, server::MAX_CONNECTIONS_DEFAULT);
    assert_eq!(defaults.max_per_ip, server::MAX_CONNECTIONS_PER_IP_DEFAULT);
    let dir = TempDir::new("api-connections");
    let file = dir.path().join("aqueduct.toml");
    std::fs::write(
        &file,
        "api_header_timeout = 5\napi_idle_timeout = 30\napi_max_connections = 100\n\
         api_max_connections_per_ip = 10\n",
    )
    .expect("writes");
    let args = RunArgs {
        api_max_connections_per_ip: Some(20),
        config: Some(file),
        ..RunArgs::default()
    };
    let bounds = args.resolve().expect("resolves").api_connections;
    assert_eq!(
        (
            bounds.header_timeout,
            bounds.idle_timeout,
            bounds.max,
            bounds.max_per_ip
        ),
        (
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(30),
            100,
            20
        )
    );
    for (args, option) in [
        // The issue's bound on the header timeout.
        (
            RunArgs {
                api_header_timeout: Some(11),
                ..RunArgs::default()
            },
            "api-header-timeout",
        ),
        // Below the event streams' keep-alive, every idle stream would go.
        (
            RunArgs {
                api_idle_timeout: Some(10),
                ..RunArgs::default()
            },
            "api-idle-timeout",
        ),
        (
            RunArgs {
                api_max_connections: Some(0),
                ..RunArgs::default()
            },
            "api-max-connections",
        ),
        // A share above the total could never be used.
        (
            RunArgs {
                api_max_connections: Some(10),
                api_max_connections_per_ip: Some(11),
                ..RunArgs::default()
            },
            "api-max-connections-per-ip",
        ),
    ] {
        let error = args.resolve().expect_err("refused").to_string();
        assert!(error.contains(option), "{error}");
    }
}

#[test]
fn natives_are_restricted_unless_the_file_or_a_flag_says_unrestricted() {
    use aqueduct::crdt::model::NativesPolicy;
    let natives = |args: RunArgs| args.resolve().map(|o| o.haproxy_options.natives);
    assert_eq!(
        natives(RunArgs::default()).ok(),
        Some(NativesPolicy::Restricted)
    );
    let dir = TempDir::new("natives");
    let file = dir.path().join("aqueduct.toml");
    std::fs::write(&file, "natives = \"unrestricted\"\n").expect("writes");
    let from_file = RunArgs {
        config: Some(file.clone()),
        ..RunArgs::default()
    };
    assert_eq!(natives(from_file).ok(), Some(NativesPolicy::Unrestricted));
    let flag_over_file = RunArgs {
        config: Some(file.clone()),
        natives: Some(NativesPolicy::Restricted),
        ..RunArgs::default()
    };
    assert_eq!(
        natives(flag_over_file).ok(),
        Some(NativesPolicy::Restricted)
    );
    std::fs::write(&file, "natives = \"open\"\n").expect("writes");
    let error = natives(RunArgs {
        config: Some(file),
        ..RunArgs::default()
    })
    .expect_err("an unknown value is refused");
    assert!(error.to_string().contains("natives"), "{error}");
}

#[test]
fn a_quota_out_of_range_stops_the_start_naming_its_flag() {
    let (ok, stderr) = run_to_exit(&["run", "--quota-backends", "0"]);
    assert!(!ok);
    assert!(stderr.contains("quota-backends"), "{stderr}");
}

#[test]
fn api_tls_needs_both_a_certificate_and_a_key() {
    let both = RunArgs {
        api_tls_cert: Some("node.pem".into()),
        api_tls_key: Some("node.key".into()),
        ..RunArgs::default()
    };
    assert!(both.resolve().expect("resolves").api_tls.is_some());
    let alone = RunArgs {
        api_tls_cert: Some("node.pem".into()),
        ..RunArgs::default()
    };
    let error = alone.resolve().expect_err("refused").to_string();
    assert!(error.contains("api-tls-key"), "{error}");
}

#[test]
fn the_api_body_timeout_defaults_to_30_s_and_is_range_checked() {
    let defaults = RunArgs::default().resolve().expect("resolves");
    assert_eq!(
        defaults.api_body_timeout,
        aqueduct::api::BODY_DEADLINE_DEFAULT
    );
    let zero = RunArgs {
        api_body_timeout: Some(0),
        ..RunArgs::default()
    };
    let error = zero.resolve().expect_err("refused").to_string();
    assert!(error.contains("api-body-timeout"), "{error}");
}
