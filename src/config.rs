//! The options of `aqueduct run`: command-line flags, `AQUEDUCT_*`
//! environment variables and a TOML file, merged in that order of
//! precedence (a flag beats the environment, which beats the file, which
//! beats the defaults).
//!
//! Owns parsing and validation of every option, so that the daemon starts
//! from values that are already known good. Must not start anything.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::api::{ApiAccess, ApiToken, Quota, Quotas, SiteRules};
use crate::certs::NodeName;
use crate::crdt::model::{CfgWord, InvalidValue, LogTarget, NativesPolicy};

/// The API port of the original Aqueduct, kept so that existing scripts
/// keep working.
pub const DEFAULT_API: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    10000,
));
/// Gossip listens next to the API by default.
pub const DEFAULT_GOSSIP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    10001,
));
/// Where a peer started without options keeps its data.
pub const DEFAULT_DATA_DIR: &str = "aqueduct-data";

/// `aqueduct run`'s flags. Each also reads an `AQUEDUCT_*` variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// This peer's name (must match its certificate). Default: the
    /// certificate's name, or the host name for a self-made certificate.
    #[arg(long, env = "AQUEDUCT_NAME")]
    pub name: Option<String>,
    /// Where the store (and a self-made TLS dir) lives.
    #[arg(long, env = "AQUEDUCT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST API listen address (default 127.0.0.1:10000).
    #[arg(long, env = "AQUEDUCT_API")]
    pub api: Option<SocketAddr>,
    /// Gossip (QUIC) listen address (default 127.0.0.1:10001).
    #[arg(long, env = "AQUEDUCT_GOSSIP")]
    pub gossip: Option<SocketAddr>,
    /// Gossip address other peers should dial, when it differs from the
    /// listen address (e.g. listening on 0.0.0.0).
    #[arg(long, env = "AQUEDUCT_ADVERTISE")]
    pub advertise: Option<SocketAddr>,
    /// Directory with ca.pem, node.pem and node.key (`aqueduct certs`).
    /// Default: DATA_DIR/tls, created with a private CA if missing.
    #[arg(long, env = "AQUEDUCT_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Gossip address (HOST:PORT; HOST may be a DNS name) of a peer to
    /// join through (repeatable).
    #[arg(long = "join", env = "AQUEDUCT_JOIN", value_delimiter = ',')]
    pub join: Vec<JoinAddr>,
    /// The write token: with it, every API route but `/health` and the
    /// dashboard's files needs `Authorization: Bearer <token>` (this one
    /// for writes, this or the read token for reads). Prefer
    /// --api-token-file: a flag shows in `ps`.
    #[arg(long, env = "AQUEDUCT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// A file holding the write token (one line).
    #[arg(long, env = "AQUEDUCT_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// The read token: reads every route, writes nothing. Needs a write
    /// token too.
    #[arg(long, env = "AQUEDUCT_API_READ_TOKEN", hide_env_values = true)]
    pub api_read_token: Option<String>,
    /// A file holding the read token (one line).
    #[arg(long, env = "AQUEDUCT_API_READ_TOKEN_FILE")]
    pub api_read_token_file: Option<PathBuf>,
    /// Serve the API on a non-loopback address without a token (anyone
    /// who reaches it may read and write everything); said in the log at
    /// every start.
    #[arg(long, env = "AQUEDUCT_API_INSECURE")]
    pub api_insecure: bool,
    /// Host names (besides the API's own addresses and, on loopback,
    /// `localhost`) that a request's `Host` may carry (comma-separated).
    #[arg(long, env = "AQUEDUCT_API_ALLOWED_HOSTS", value_delimiter = ',')]
    pub api_allowed_hosts: Vec<String>,
    /// Origins (`https://ops.example.com`) besides the API's own that may
    /// send requests, e.g. a dashboard served elsewhere (comma-separated).
    #[arg(long, env = "AQUEDUCT_API_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub api_allowed_origins: Vec<String>,
    /// API requests in progress at once; one more is answered 503 with
    /// `Retry-After` (default 256).
    #[arg(long, env = "AQUEDUCT_API_MAX_REQUESTS")]
    pub api_max_requests: Option<usize>,
    /// Largest API request body, bytes; a larger one is answered 413
    /// (default 1048576).
    #[arg(long, env = "AQUEDUCT_API_BODY_LIMIT")]
    pub api_body_limit: Option<usize>,
    /// Seconds a request body may take to arrive; a slower one is answered
    /// 408 (default 30).
    #[arg(long, env = "AQUEDUCT_API_BODY_TIMEOUT")]
    pub api_body_timeout: Option<u64>,
    /// Seconds another peer's clock may be ahead of this one's: a change
    /// stamped, or a lease renewed, further ahead is refused until this
    /// peer's clock catches up (default 10, 1 to 3600).
    #[arg(long, env = "AQUEDUCT_CLOCK_SKEW_MAX")]
    pub clock_skew_max: Option<u64>,
    /// Seconds a peer that starts with an empty store and `--join` waits
    /// for a first complete sync before it applies what it holds to HAProxy
    /// anyway (logged); 0 or unset: for as long as it takes (at most
    /// 86400).
    #[arg(long, env = "AQUEDUCT_FIRST_SYNC_TIMEOUT")]
    pub first_sync_timeout: Option<u64>,
    /// Seconds an API client has to send a request head (and finish a TLS
    /// handshake), also between requests on a kept-alive connection; then
    /// its connection is closed (default 10, at most 10).
    #[arg(long, env = "AQUEDUCT_API_HEADER_TIMEOUT")]
    pub api_header_timeout: Option<u64>,
    /// Seconds an API connection may move no byte either way before it is
    /// closed (default 60, at least 20: above the event streams' keep-alive).
    #[arg(long, env = "AQUEDUCT_API_IDLE_TIMEOUT")]
    pub api_idle_timeout: Option<u64>,
    /// API connections open at once; one more is closed at once
    /// (default 512).
    #[arg(long, env = "AQUEDUCT_API_MAX_CONNECTIONS")]
    pub api_max_connections: Option<usize>,
    /// API connections open at once from one client IP address; one more is
    /// closed at once (default 64).
    #[arg(long, env = "AQUEDUCT_API_MAX_CONNECTIONS_PER_IP")]
    pub api_max_connections_per_ip: Option<usize>,
    /// PEM certificate chain: serve the API over HTTPS (needs
    /// --api-tls-key).
    #[arg(long, env = "AQUEDUCT_API_TLS_CERT")]
    pub api_tls_cert: Option<PathBuf>,
    /// PEM private key of --api-tls-cert.
    #[arg(long, env = "AQUEDUCT_API_TLS_KEY")]
    pub api_tls_key: Option<PathBuf>,
    /// HAProxy binary to drive, or `off` (default: `haproxy` if found).
    #[arg(long, env = "AQUEDUCT_HAPROXY")]
    pub haproxy: Option<HaproxySetting>,
    /// Address this peer's HAProxy listens on wherever a frontend binds
    /// `*` (several peers on one machine: 127.0.0.2, 127.0.0.3, ...).
    #[arg(long, env = "AQUEDUCT_BIND_HOST")]
    pub bind_host: Option<IpAddr>,
    /// HAProxy `global` maxconn (default 4096).
    #[arg(long, env = "AQUEDUCT_HAPROXY_MAXCONN")]
    pub haproxy_maxconn: Option<u32>,
    /// HAProxy `timeout connect`, ms (default 5000).
    #[arg(long, env = "AQUEDUCT_HAPROXY_TIMEOUT_CONNECT")]
    pub haproxy_timeout_connect: Option<u32>,
    /// HAProxy `timeout client`, ms (default 50000).
    #[arg(long, env = "AQUEDUCT_HAPROXY_TIMEOUT_CLIENT")]
    pub haproxy_timeout_client: Option<u32>,
    /// HAProxy `timeout server`, ms (default 50000).
    #[arg(long, env = "AQUEDUCT_HAPROXY_TIMEOUT_SERVER")]
    pub haproxy_timeout_server: Option<u32>,
    /// How long an old HAProxy worker may finish its connections after a
    /// reload, ms (default 60000).
    #[arg(long, env = "AQUEDUCT_HAPROXY_HARD_STOP_AFTER")]
    pub haproxy_hard_stop_after: Option<u32>,
    /// HAProxy `log` target, e.g. `127.0.0.1:514 local0` (default: none).
    #[arg(long, env = "AQUEDUCT_HAPROXY_LOG")]
    pub haproxy_log: Option<String>,
    /// Address of HAProxy's own stats page (default: none); needs
    /// --haproxy-stats-auth.
    #[arg(long, env = "AQUEDUCT_HAPROXY_STATS")]
    pub haproxy_stats: Option<SocketAddr>,
    /// USER:PASSWORD of HAProxy's stats page.
    #[arg(long, env = "AQUEDUCT_HAPROXY_STATS_AUTH", hide_env_values = true)]
    pub haproxy_stats_auth: Option<String>,
    /// How often HAProxy's stats are read, ms (default 1000).
    #[arg(long, env = "AQUEDUCT_STATS_INTERVAL")]
    pub stats_interval: Option<u64>,
    /// What stopping the peer does to its HAProxy: `keep` it serving (the
    /// next start takes it over without a gap; the default) or `stop` it.
    #[arg(long, env = "AQUEDUCT_HAPROXY_ON_EXIT", value_enum)]
    pub haproxy_on_exit: Option<OnExit>,
    /// Which `natives` lines API writes may hold and HAProxy gets:
    /// `restricted` (the allow-list of docs/natives.md; the default) or
    /// `unrestricted` (any line that opens no section: lines that read
    /// files, open sockets or run programs included; logged at every
    /// start). Set on the peer only, never through the API.
    #[arg(long, env = "AQUEDUCT_NATIVES")]
    pub natives: Option<NativesPolicy>,
    /// The user HAProxy's workers run as when the peer runs as root
    /// (default: `haproxy`, which must then exist; never root). A peer not
    /// running as root runs HAProxy as its own user and takes no
    /// --haproxy-user.
    #[arg(long, env = "AQUEDUCT_HAPROXY_USER")]
    pub haproxy_user: Option<String>,
    /// The group HAProxy's workers run as (default: the user's own group).
    #[arg(long, env = "AQUEDUCT_HAPROXY_GROUP")]
    pub haproxy_group: Option<String>,
    /// A TOML file with the same options (keys as the flags, with `_`).
    #[arg(long, env = "AQUEDUCT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Limits on what API writers can store.
    #[command(flatten)]
    pub quotas: QuotaArgs,
}

/// The `--quota-*` flags (defaults and reasons in README, "Quotas"). A
/// write beyond one is refused and changes nothing.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QuotaArgs {
    /// Most frontends (default 1000).
    #[arg(long, env = "AQUEDUCT_QUOTA_FRONTENDS")]
    pub quota_frontends: Option<u64>,
    /// Most backends (default 10000).
    #[arg(long, env = "AQUEDUCT_QUOTA_BACKENDS")]
    pub quota_backends: Option<u64>,
    /// Most static members of one backend (default and at most 4096).
    #[arg(long, env = "AQUEDUCT_QUOTA_MEMBERS_PER_BACKEND")]
    pub quota_members_per_backend: Option<u64>,
    /// Most registrations, live or not yet swept (default 10000).
    #[arg(long, env = "AQUEDUCT_QUOTA_REGISTRATIONS")]
    pub quota_registrations: Option<u64>,
    /// Most registrations of one service name (default 2000).
    #[arg(long, env = "AQUEDUCT_QUOTA_REGISTRATIONS_PER_NAME")]
    pub quota_registrations_per_name: Option<u64>,
    /// Largest meta of a registration, bytes of JSON (default 1024, at
    /// most 4096).
    #[arg(long, env = "AQUEDUCT_QUOTA_META_BYTES")]
    pub quota_meta_bytes: Option<u64>,
    /// Longest lease (`secondsToExpire`), seconds (default 3600, at most
    /// 86400).
    #[arg(long, env = "AQUEDUCT_QUOTA_LEASE_MAX")]
    pub quota_lease_max: Option<u64>,
    /// Most natives lines of one frontend or backend (default and at most
    /// 64).
    #[arg(long, env = "AQUEDUCT_QUOTA_NATIVES_LINES")]
    pub quota_natives_lines: Option<u64>,
    /// Largest natives of one frontend or backend, bytes (default 8192, at
    /// most 32768).
    #[arg(long, env = "AQUEDUCT_QUOTA_NATIVES_BYTES")]
    pub quota_natives_bytes: Option<u64>,
    /// Largest document, bytes as encoded (default 16777216, at most
    /// 536870912: the store keeps its snapshot as one value).
    #[arg(long, env = "AQUEDUCT_QUOTA_DOCUMENT_BYTES")]
    pub quota_document_bytes: Option<u64>,
}

/// The TOML file: the same options as the flags. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOptions {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    api: Option<SocketAddr>,
    gossip: Option<SocketAddr>,
    advertise: Option<SocketAddr>,
    tls_dir: Option<PathBuf>,
    #[serde(default)]
    join: Vec<JoinAddr>,
    api_token: Option<String>,
    api_token_file: Option<PathBuf>,
    api_read_token: Option<String>,
    api_read_token_file: Option<PathBuf>,
    api_insecure: Option<bool>,
    #[serde(default)]
    api_allowed_hosts: Vec<String>,
    #[serde(default)]
    api_allowed_origins: Vec<String>,
    api_max_requests: Option<usize>,
    api_body_limit: Option<usize>,
    api_body_timeout: Option<u64>,
    clock_skew_max: Option<u64>,
    first_sync_timeout: Option<u64>,
    api_header_timeout: Option<u64>,
    api_idle_timeout: Option<u64>,
    api_max_connections: Option<usize>,
    api_max_connections_per_ip: Option<usize>,
    api_tls_cert: Option<PathBuf>,
    api_tls_key: Option<PathBuf>,
    haproxy: Option<String>,
    bind_host: Option<IpAddr>,
    haproxy_maxconn: Option<u32>,
    haproxy_timeout_connect: Option<u32>,
    haproxy_timeout_client: Option<u32>,
    haproxy_timeout_server: Option<u32>,
    haproxy_hard_stop_after: Option<u32>,
    haproxy_log: Option<String>,
    haproxy_stats: Option<SocketAddr>,
    haproxy_stats_auth: Option<String>,
    stats_interval: Option<u64>,
    haproxy_on_exit: Option<OnExit>,
    natives: Option<String>,
    haproxy_user: Option<String>,
    haproxy_group: Option<String>,
    quota_frontends: Option<u64>,
    quota_backends: Option<u64>,
    quota_members_per_backend: Option<u64>,
    quota_registrations: Option<u64>,
    quota_registrations_per_name: Option<u64>,
    quota_meta_bytes: Option<u64>,
    quota_lease_max: Option<u64>,
    quota_natives_lines: Option<u64>,
    quota_natives_bytes: Option<u64>,
    quota_document_bytes: Option<u64>,
}

/// What a peer's stop (SIGTERM, SIGINT) does to its HAProxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Leave it serving the last configuration: the next start of the peer
    /// (a restart, an upgrade of aqueduct) takes it over without refusing
    /// a connection, so the control plane can go away without the traffic.
    #[default]
    Keep,
    /// Stop it with the peer (soft stop: connections in flight finish).
    Stop,
}

/// A peer to join through: `HOST:PORT`, where HOST is an IP address (IPv6
/// in brackets) or a DNS name, looked up again at every attempt so that a
/// seed that moves is still found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct JoinAddr {
    host: String,
    port: u16,
}

impl JoinAddr {
    /// The form `tokio::net::lookup_host` resolves.
    pub fn lookup_form(&self) -> (&str, u16) {
        (
            self.host.trim_start_matches('[').trim_end_matches(']'),
            self.port,
        )
    }
}

impl FromStr for JoinAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{s:?}: {port:?} is not a port (1-65535)"))?;
        let valid = match host.strip_prefix('[') {
            // IPv6 only in brackets, so that the port is unambiguous.
            Some(inner) => inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
            None => host.parse::<std::net::Ipv4Addr>().is_ok() || is_host_name(host),
        };
        if !valid {
            return Err(format!("{s:?}: {host:?} is not an IP address or host name"));
        }
        Ok(JoinAddr {
            host: host.to_owned(),
            port,
        })
    }
}

/// A DNS name: dot-separated labels of letters, digits and inner hyphens.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl TryFrom<String> for JoinAddr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::fmt::Display for JoinAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Which HAProxy to drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaproxySetting {
    /// `haproxy` from `PATH` if there is one.
    Auto,
    /// Do not drive HAProxy (a control-plane-only peer).
    Off,
    /// This binary.
    Path(PathBuf),
}

impl FromStr for HaproxySetting {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => HaproxySetting::Auto,
            "off" => HaproxySetting::Off,
            path => HaproxySetting::Path(PathBuf::from(path)),
        })
    }
}

/// Where the TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A directory prepared with `aqueduct certs`; it must be complete.
    Given(PathBuf),
    /// The data dir's own `tls/`, made with a private CA when missing (a
    /// single peer started without options).
    SelfMade(PathBuf),
}

/// The resolved options of one peer.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The name asked for, if any (checked against the certificate).
    pub name: Option<NodeName>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// REST API listen address.
    pub api: SocketAddr,
    /// Gossip listen address.
    pub gossip: SocketAddr,
    /// Gossip address to announce, if not the listen address.
    pub advertise: Option<SocketAddr>,
    /// TLS material.
    pub tls: TlsSource,
    /// Join addresses.
    pub join: Vec<JoinAddr>,
    /// The API's tokens.
    pub api_access: ApiAccess,
    /// Whether the API may listen beyond loopback without a token.
    pub api_insecure: bool,
    /// The `Host` names and `Origin`s the API accepts besides its own
    /// (`listen` is set by the daemon, once the API is bound).
    pub api_site: SiteRules,
    /// API requests in progress at once.
    pub api_max_requests: usize,
    /// Largest API request body, bytes.
    pub api_body_limit: usize,
    /// How long an API request body may take to arrive.
    pub api_body_timeout: Duration,
    /// How far ahead of this peer's clock another's may be.
    pub clock_skew_max: Duration,
    /// How long a peer that starts empty waits for a first sync before it
    /// applies anything to HAProxy anyway (`None`: for as long as it takes).
    pub first_sync_timeout: Option<Duration>,
    /// How the API's connections are bounded.
    pub api_connections: ApiConnections,
    /// The API's HTTPS certificate chain and key files, if it serves HTTPS.
    pub api_tls: Option<ApiTlsFiles>,
    /// HAProxy.
    pub haproxy: HaproxySetting,
    /// How this peer's HAProxy is configured and watched.
    pub haproxy_options: HaproxyOptions,
    /// Limits on what API writers can store.
    pub quotas: Quotas,
}

/// Bounds on the API's connections (see `api::server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiConnections {
    /// Time to send a request head.
    pub header_timeout: Duration,
    /// Time with no byte moving.
    pub idle_timeout: Duration,
    /// Connections at once.
    pub max: usize,
    /// Connections at once from one client address.
    pub max_per_ip: usize,
}

/// `--api-tls-cert` and `--api-tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The peer-local HAProxy settings (`global`, `defaults`, the stats page)
/// and how often stats are read. Unset numbers take the renderer's
/// defaults ([`crate::haproxy::render::Settings::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyOptions {
    /// Replaces `*` in frontend binds.
    pub bind_host: Option<IpAddr>,
    /// `global` maxconn.
    pub maxconn: Option<u32>,
    /// `timeout connect`, ms.
    pub timeout_connect_ms: Option<u32>,
    /// `timeout client`, ms.
    pub timeout_client_ms: Option<u32>,
    /// `timeout server`, ms.
    pub timeout_server_ms: Option<u32>,
    /// `hard-stop-after`, ms.
    pub hard_stop_after_ms: Option<u32>,
    /// `log` target.
    pub log: Option<LogTarget>,
    /// The stats page: address, user, password.
    pub stats: Option<(SocketAddr, CfgWord, CfgWord)>,
    /// Stats polling interval.
    pub stats_interval: Duration,
    /// What the peer's stop does to HAProxy.
    pub on_exit: OnExit,
    /// Which `natives` lines are taken and rendered.
    pub natives: NativesPolicy,
    /// The user HAProxy's workers run as (`None`: the default), when the
    /// peer runs as root ([`crate::haproxy::privileges`]).
    pub user: Option<CfgWord>,
    /// Their group (`None`: the user's own).
    pub group: Option<CfgWord>,
}

/// Why the options are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these options.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (TOML's message: names the key and line).
        message: String,
    },
    /// An option's value is invalid.
    #[error("option {option}: {reason}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
}

impl RunArgs {
    /// Merges flags and environment (already in `self`) over the config
    /// file over the defaults.
    pub fn resolve(self) -> Result<RunOptions, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileOptions::default(),
        };
        let quotas = resolve_quotas(&self.quotas, &file)?;
        let name = self
            .name
            .or(file.name)
            .map(|name| {
                NodeName::new(&name).map_err(|e| ConfigError::Invalid {
                    option: "name",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let tls = match self.tls_dir.or(file.tls_dir) {
            Some(dir) => TlsSource::Given(dir),
            None => TlsSource::SelfMade(data_dir.join("tls")),
        };
        let api_access = ApiAccess {
            write: token_from(
                "api-token",
                self.api_token.or(file.api_token),
                self.api_token_file.or(file.api_token_file),
            )?,
            read: token_from(
                "api-read-token",
                self.api_read_token.or(file.api_read_token),
                self.api_read_token_file.or(file.api_read_token_file),
            )?,
        };
        if api_access.read.is_some() && api_access.write.is_none() {
            return Err(ConfigError::Invalid {
                option: "api-read-token",
                reason: "a read token needs a write token too (--api-token or --api-token-file)"
                    .to_owned(),
            });
        }
        let api_insecure = self.api_insecure || file.api_insecure.unwrap_or(false);
        let api_site = SiteRules {
            listen: None,
            allowed_hosts: allowed_hosts(if self.api_allowed_hosts.is_empty() {
                file.api_allowed_hosts
            } else {
                self.api_allowed_hosts
            })?,
            allowed_origins: allowed_origins(if self.api_allowed_origins.is_empty() {
                file.api_allowed_origins
            } else {
                self.api_allowed_origins
            })?,
        };
        let haproxy = match (self.haproxy, file.haproxy) {
            (Some(setting), _) => setting,
            (None, Some(text)) => {
                let Ok(setting) = text.parse();
                setting
            }
            (None, None) => HaproxySetting::Auto,
        };
        let join = if self.join.is_empty() {
            file.join
        } else {
            self.join
        };
        let invalid = |option: &'static str| {
            move |e: InvalidValue| ConfigError::Invalid {
                option,
                reason: e.to_string(),
            }
        };
        let log = self
            .haproxy_log
            .or(file.haproxy_log)
            .map(|log| LogTarget::new(&log).map_err(invalid("haproxy-log")))
            .transpose()?;
        let stats = match (
            self.haproxy_stats.or(file.haproxy_stats),
            self.haproxy_stats_auth.or(file.haproxy_stats_auth),
        ) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    option: "haproxy-stats",
                    reason: "needs --haproxy-stats-auth USER:PASSWORD".to_owned(),
                });
            }
            (Some(addr), Some(auth)) => {
                let (user, password) = auth.split_once(':').ok_or(ConfigError::Invalid {
                    option: "haproxy-stats-auth",
                    reason: "expected USER:PASSWORD".to_owned(),
                })?;
                Some((
                    addr,
                    CfgWord::new(user).map_err(invalid("haproxy-stats-auth"))?,
                    CfgWord::new(password).map_err(invalid("haproxy-stats-auth"))?,
                ))
            }
        };
        let user = self
            .haproxy_user
            .or(file.haproxy_user)
            .map(|user| CfgWord::new(&user).map_err(invalid("haproxy-user")))
            .transpose()?;
        let group = self
            .haproxy_group
            .or(file.haproxy_group)
            .map(|group| CfgWord::new(&group).map_err(invalid("haproxy-group")))
            .transpose()?;
        let stats_interval_ms = self.stats_interval.or(file.stats_interval).unwrap_or(1000);
        if !(100..=60_000).contains(&stats_interval_ms) {
            return Err(ConfigError::Invalid {
                option: "stats-interval",
                reason: format!("{stats_interval_ms} ms is not within 100 to 60000 ms"),
            });
        }
        // HAProxy's timers hold at most 2^31 - 1 ms; a larger value makes
        // every configuration fail to load.
        const TIMER_MAX_MS: u32 = i32::MAX as u32;
        let in_range = |option: &'static str, value: Option<u32>, min: u32, max: u32| match value {
            Some(v) if !(min..=max).contains(&v) => Err(ConfigError::Invalid {
                option,
                reason: format!("{v} is not within {min} to {max}"),
            }),
            _ => Ok(value),
        };
        let haproxy_options = HaproxyOptions {
            bind_host: self.bind_host.or(file.bind_host),
            maxconn: in_range(
                "haproxy-maxconn",
                self.haproxy_maxconn.or(file.haproxy_maxconn),
                1,
                1_000_000,
            )?,
            timeout_connect_ms: in_range(
                "haproxy-timeout-connect",
                self.haproxy_timeout_connect
                    .or(file.haproxy_timeout_connect),
                1,
                TIMER_MAX_MS,
            )?,
            timeout_client_ms: in_range(
                "haproxy-timeout-client",
                self.haproxy_timeout_client.or(file.haproxy_timeout_client),
                1,
                TIMER_MAX_MS,
            )?,
            timeout_server_ms: in_range(
                "haproxy-timeout-server",
                self.haproxy_timeout_server.or(file.haproxy_timeout_server),
                1,
                TIMER_MAX_MS,
            )?,
            hard_stop_after_ms: in_range(
                "haproxy-hard-stop-after",
                self.haproxy_hard_stop_after
                    .or(file.haproxy_hard_stop_after),
                1,
                TIMER_MAX_MS,
            )?,
            log,
            stats,
            stats_interval: Duration::from_millis(stats_interval_ms),
            on_exit: self
                .haproxy_on_exit
                .or(file.haproxy_on_exit)
                .unwrap_or_default(),
            natives: match (self.natives, file.natives) {
                (Some(policy), _) => policy,
                (None, Some(text)) => text.parse().map_err(|reason| ConfigError::Invalid {
                    option: "natives",
                    reason,
                })?,
                (None, None) => NativesPolicy::default(),
            },
            user,
            group,
        };
        let api_max_requests = in_range_usize(
            "api-max-requests",
            self.api_max_requests.or(file.api_max_requests),
            crate::api::MAX_REQUESTS_DEFAULT,
            1..=1_000_000,
        )?;
        let api_body_limit = in_range_usize(
            "api-body-limit",
            self.api_body_limit.or(file.api_body_limit),
            crate::api::BODY_LIMIT_DEFAULT,
            // Room for the largest write (a backend's members, a frontend's
            // rules) but below what one message between peers may carry.
            1024..=crate::gossip::wire::MESSAGE_BYTES_MAX,
        )?;
        let api_body_timeout = Duration::from_secs(in_range_usize(
            "api-body-timeout",
            self.api_body_timeout
                .or(file.api_body_timeout)
                .map(|s| usize::try_from(s).unwrap_or(usize::MAX)),
            usize::try_from(crate::api::BODY_DEADLINE_DEFAULT.as_secs()).unwrap_or(30),
            1..=3600,
        )? as u64);
        let clock_skew_max = Duration::from_secs(in_range_usize(
            "clock-skew-max",
            self.clock_skew_max
                .or(file.clock_skew_max)
                .map(|s| usize::try_from(s).unwrap_or(usize::MAX)),
            usize::try_from(crate::gossip::CLOCK_SKEW_MAX_DEFAULT.as_secs()).unwrap_or(10),
            1..=3600,
        )? as u64);
        let first_sync_timeout = in_range_usize(
            "first-sync-timeout",
            self.first_sync_timeout
                .or(file.first_sync_timeout)
                .map(|s| usize::try_from(s).unwrap_or(usize::MAX)),
            0,
            0..=86_400,
        )?;
        let first_sync_timeout =
            (first_sync_timeout > 0).then(|| Duration::from_secs(first_sync_timeout as u64));
        let api_connections = api_connections(
            self.api_header_timeout.or(file.api_header_timeout),
            self.api_idle_timeout.or(file.api_idle_timeout),
            self.api_max_connections.or(file.api_max_connections),
            self.api_max_connections_per_ip
                .or(file.api_max_connections_per_ip),
        )?;
        let api_tls = match (
            self.api_tls_cert.or(file.api_tls_cert),
            self.api_tls_key.or(file.api_tls_key),
        ) {
            (Some(cert), Some(key)) => Some(ApiTlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    option: "api-tls-cert",
                    reason: "--api-tls-cert and --api-tls-key go together".to_owned(),
                });
            }
        };
        let gossip = self.gossip.or(file.gossip).unwrap_or(DEFAULT_GOSSIP);
        let advertise = self.advertise.or(file.advertise);
        check_advertised(gossip, advertise)?;
        let api = self.api.or(file.api).unwrap_or(DEFAULT_API);
        if !api.ip().is_loopback() && api_access.is_open() && !api_insecure {
            return Err(ConfigError::Invalid {
                option: "api",
                reason: format!(
                    "{api} is not a loopback address: give --api-token-file (or --api-token) so \
                     that not everyone who reaches it can write, or --api-insecure to serve it \
                     without a token"
                ),
            });
        }
        Ok(RunOptions {
            name,
            data_dir,
            api,
            gossip,
            advertise,
            tls,
            join,
            api_access,
            api_insecure,
            api_site,
            api_max_requests,
            api_body_limit,
            api_body_timeout,
            clock_skew_max,
            first_sync_timeout,
            api_connections,
            api_tls,
            haproxy,
            haproxy_options,
            quotas,
        })
    }
}

/// A token given as a value or in a file (not both), validated. A file
/// holds the token on its first line; surrounding whitespace (the final
/// newline an editor adds) is not part of it.
pub fn token_from(
    option: &'static str,
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<ApiToken>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid { option, reason };
    let text = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(format!(
                "give --{option} or --{option}-file, not both"
            )));
        }
        (Some(value), None) => value,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    ApiToken::new(&text)
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// `--api-allowed-hosts`: host names or IP addresses, without port.
fn allowed_hosts(hosts: Vec<String>) -> Result<Vec<String>, ConfigError> {
    hosts
        .into_iter()
        .map(|host| {
            let host = host.trim().to_ascii_lowercase();
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if is_host_name(&host) || bare.parse::<IpAddr>().is_ok() {
                Ok(bare.to_owned())
            } else {
                Err(ConfigError::Invalid {
                    option: "api-allowed-hosts",
                    reason: format!("{host:?} is not a host name or IP address (no port)"),
                })
            }
        })
        .collect()
}

/// `--api-allowed-origins`: `http://` or `https://` with a host and an
/// optional port, nothing else (an origin has no path).
fn allowed_origins(origins: Vec<String>) -> Result<Vec<String>, ConfigError> {
    origins
        .into_iter()
        .map(|origin| {
            let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            let valid = authority.is_some_and(|authority| {
                let host = match authority.rsplit_once(':') {
                    Some((host, port)) if port.parse::<u16>().is_ok() => host,
                    _ => authority,
                };
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                is_host_name(host) || bare.parse::<IpAddr>().is_ok()
            });
            if valid {
                Ok(origin)
            } else {
                Err(ConfigError::Invalid {
                    option: "api-allowed-origins",
                    reason: format!("{origin:?} is not an origin like https://ops.example.com"),
                })
            }
        })
        .collect()
}

/// The quotas: each flag over its file key over its default, from 1 to
/// the most it may be ([`Quotas::max_of`]).
fn resolve_quotas(flags: &QuotaArgs, file: &FileOptions) -> Result<Quotas, ConfigError> {
    let defaults = Quotas::default();
    let pick = |quota: Quota, flag: Option<u64>, file: Option<u64>| {
        let value = flag.or(file).unwrap_or_else(|| defaults.limit(quota));
        let max = Quotas::max_of(quota);
        if (1..=max).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                option: quota.option(),
                reason: format!("{value} is not within 1 to {max}"),
            })
        }
    };
    // Every maximum fits the field's type, so the conversions are exact.
    Ok(Quotas {
        frontends: pick(
            Quota::Frontends,
            flags.quota_frontends,
            file.quota_frontends,
        )? as usize,
        backends: pick(Quota::Backends, flags.quota_backends, file.quota_backends)? as usize,
        members_per_backend: pick(
            Quota::MembersPerBackend,
            flags.quota_members_per_backend,
            file.quota_members_per_backend,
        )? as usize,
        registrations: pick(
            Quota::Registrations,
            flags.quota_registrations,
            file.quota_registrations,
        )? as usize,
        registrations_per_name: pick(
            Quota::RegistrationsPerName,
            flags.quota_registrations_per_name,
            file.quota_registrations_per_name,
        )? as usize,
        meta_bytes: pick(
            Quota::MetaBytes,
            flags.quota_meta_bytes,
            file.quota_meta_bytes,
        )? as usize,
        lease_max_seconds: pick(Quota::LeaseMax, flags.quota_lease_max, file.quota_lease_max)?
            as u32,
        natives_lines: pick(
            Quota::NativesLines,
            flags.quota_natives_lines,
            file.quota_natives_lines,
        )? as usize,
        natives_bytes: pick(
            Quota::NativesBytes,
            flags.quota_natives_bytes,
            file.quota_natives_bytes,
        )? as usize,
        document_bytes: pick(
            Quota::DocumentBytes,
            flags.quota_document_bytes,
            file.quota_document_bytes,
        )?,
    })
}

/// The API's connection bounds, defaults filled in and ranges checked.
fn api_connections(
    header_timeout_s: Option<u64>,
    idle_timeout_s: Option<u64>,
    max: Option<usize>,
    max_per_ip: Option<usize>,
) -> Result<ApiConnections, ConfigError> {
    use crate::api::server;
    let seconds = |option, value: Option<u64>, default: Duration, min: u64, max: Duration| {
        let whole = |s: u64| usize::try_from(s).unwrap_or(usize::MAX);
        let range = whole(min)..=whole(max.as_secs());
        in_range_usize(option, value.map(whole), whole(default.as_secs()), range)
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(u64::MAX)))
    };
    let max = in_range_usize(
        "api-max-connections",
        max,
        server::MAX_CONNECTIONS_DEFAULT,
        1..=1_000_000,
    )?;
    Ok(ApiConnections {
        header_timeout: seconds(
            "api-header-timeout",
            header_timeout_s,
            server::HEADER_TIMEOUT_DEFAULT,
            1,
            server::HEADER_TIMEOUT_MAX,
        )?,
        // Above the event streams' keep-alive (15 s), which is all that
        // moves on an idle stream.
        idle_timeout: seconds(
            "api-idle-timeout",
            idle_timeout_s,
            server::IDLE_TIMEOUT_DEFAULT,
            20,
            Duration::from_secs(86_400),
        )?,
        max,
        max_per_ip: in_range_usize(
            "api-max-connections-per-ip",
            max_per_ip,
            server::MAX_CONNECTIONS_PER_IP_DEFAULT.min(max),
            1..=max,
        )?,
    })
}

/// `value`, or `default` if unset, checked against `range`.
fn in_range_usize(
    option: &'static str,
    value: Option<usize>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let value = value.unwrap_or(default);
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            option,
            reason: format!("{value} is not within {} to {}", range.start(), range.end()),
        })
    }
}

/// Other peers dial the advertised address (the gossip address unless
/// `advertise` is given), so it must name one host and one port: a wildcard
/// like 0.0.0.0 would send every peer to itself.
fn check_advertised(gossip: SocketAddr, advertise: Option<SocketAddr>) -> Result<(), ConfigError> {
    match advertise {
        None if gossip.ip().is_unspecified() => Err(ConfigError::Invalid {
            option: "gossip",
            reason: format!(
                "{gossip} listens on every address; give --advertise with the address other peers should dial"
            ),
        }),
        Some(addr) if addr.ip().is_unspecified() || addr.port() == 0 => Err(ConfigError::Invalid {
            option: "advertise",
            reason: format!("{addr} is not an address other peers can dial"),
        }),
        _ => Ok(()),
    }
}

fn read_file(path: &Path) -> Result<FileOptions, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
