//! Rendering: the configuration view → `haproxy.cfg`, as a pure function.
//!
//! Owns the text of the configuration (askama templates in
//! `templates/haproxy/`) and the structured form the driver diffs to decide
//! between a runtime-API change and a reload ([`plan`]). Part of the
//! deterministic core: no I/O, no clock (the caller passes `now_ms`, which
//! only decides which registrations are live), no randomness. Given the
//! same view, settings and live registrations, every peer renders the same
//! bytes: sections are in key order, servers in address order, and ACL and
//! server names are derived from content.

mod plan;

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use askama::Template;

use crate::crdt::model::{
    AclValue, Backend, BackendType, Balance, BindHost, CfgWord, ConfigView, Frontend, HealthMethod,
    Host, HttpPath, HttpVersion, Keepalive, LiveRegistrations, LogTarget, MemberState, Mode, Name,
    NativeLine, NativeRefusal, Natives, NativesPolicy, Port, RuleOperation, Section, Weight,
};

pub use plan::{Change, Outcome, Plan, RuntimeCommand, ServerChange, plan};

/// The peer-local settings that shape `global`, `defaults` and the stats
/// listener. They are options of the peer, not replicated state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The admin stats socket (runtime API and `show stat`).
    pub admin_socket: CfgWord,
    /// Where HAProxy keeps server state across reloads.
    pub server_state_file: CfgWord,
    /// `global` `maxconn`.
    pub maxconn: u32,
    /// `timeout connect` (and `timeout check`).
    pub timeout_connect_ms: u32,
    /// `timeout client`.
    pub timeout_client_ms: u32,
    /// `timeout server`.
    pub timeout_server_ms: u32,
    /// How long an old worker may finish its connections after a reload.
    pub hard_stop_after_ms: u32,
    /// `log` target, if any.
    pub log: Option<LogTarget>,
    /// HAProxy's own stats page, if any.
    pub stats: Option<StatsListener>,
    /// The address that replaces `*` in frontend binds (several peers on one
    /// machine each listen on their own address).
    pub bind_host: Option<IpAddr>,
    /// Which `natives` lines are rendered; the others are comments.
    pub natives: NativesPolicy,
    /// Whom the workers run as and where they are confined, when the peer
    /// runs as root (`None`: the workers run as the peer's own user).
    pub privileges: Option<Privileges>,
}

/// `global`'s `user`, `group` and `chroot`: HAProxy's master binds the
/// listeners and sockets and reads the files as root, then each worker
/// enters `chroot` and drops to `user`/`group`, so that what a worker runs
/// — the configuration's rules, a request's parsing — can reach no file
/// and holds no root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Privileges {
    /// The unprivileged user the workers run as.
    pub user: CfgWord,
    /// Their group.
    pub group: CfgWord,
    /// Their root directory: empty, and not theirs to write.
    pub chroot: CfgWord,
}

impl Settings {
    /// The defaults of the original Aqueduct's template (maxconn 4096,
    /// timeouts 5 s / 50 s / 50 s), with the given files, no log target, no
    /// stats listener, restricted natives and no privilege drop.
    pub fn new(admin_socket: CfgWord, server_state_file: CfgWord) -> Settings {
        Settings {
            admin_socket,
            server_state_file,
            maxconn: 4096,
            timeout_connect_ms: 5_000,
            timeout_client_ms: 50_000,
            timeout_server_ms: 50_000,
            hard_stop_after_ms: 60_000,
            log: None,
            stats: None,
            bind_host: None,
            natives: NativesPolicy::Restricted,
            privileges: None,
        }
    }
}

/// HAProxy's stats page: where it listens and its basic-auth credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsListener {
    /// Listen address.
    pub bind: SocketAddr,
    /// User name.
    pub user: CfgWord,
    /// Password.
    pub password: CfgWord,
}

/// The name of the stats listener: it starts with `_`, which no frontend or
/// backend key can, so it never collides with one.
const STATS_PROXY: &str = "_aqueduct_stats";

/// A server's name in HAProxy, derived from its address (`10.0.0.5:8080`,
/// `::1:8080`, `app.internal:80`): a member's address is its identity, so
/// the same member has the same name on every peer and across reloads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName(String);

impl ServerName {
    fn of(host: &Host, port: Port) -> ServerName {
        ServerName(format!("{host}:{port}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `server` of a backend as it should be running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Address.
    pub host: Host,
    /// Port.
    pub port: Port,
    /// Weight.
    pub weight: Weight,
    /// Administrative state.
    pub state: MemberState,
    /// Health-check interval.
    pub check_inter_ms: u32,
}

impl Server {
    /// `host:port`, with IPv6 addresses in brackets.
    fn address(&self) -> String {
        address(self.host.as_str(), self.port)
    }

    /// Whether HAProxy can add this server at run time: 2.6 does not
    /// resolve host names of servers added through the runtime API, so a
    /// server named by host name comes in with a reload.
    fn addable_at_runtime(&self) -> bool {
        self.host.as_str().parse::<IpAddr>().is_ok()
    }

    /// The options shared by the `server` line and the runtime API's
    /// `add server`, so that both create the same server.
    fn options(&self, weight: u16) -> String {
        format!("weight {weight} check inter {}ms", self.check_inter_ms)
    }

    /// The `server` line. A draining member has weight 0 in the file: the
    /// file cannot say "drain", and a fresh HAProxy must not send it new
    /// traffic either (across reloads the server-state file keeps the
    /// runtime state).
    fn write_line(&self, name: &ServerName, out: &mut String) {
        let weight = match self.state {
            MemberState::Drain => 0,
            MemberState::Ready | MemberState::Maint => self.weight.get(),
        };
        let disabled = if self.state == MemberState::Maint {
            " disabled"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "    server {name} {} {}{disabled}",
            self.address(),
            self.options(weight)
        );
    }
}

/// A backend section: its text without servers, and its servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSection {
    head: String,
    /// Whether servers can be added and removed through the runtime API
    /// (HAProxy refuses dynamic servers with `balance static-rr`).
    runtime_servers: bool,
    servers: BTreeMap<ServerName, Server>,
}

/// A rendered configuration: the text HAProxy loads, kept in sections so
/// that the driver can tell a member change from a structure change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    preamble: String,
    frontends: Vec<String>,
    backends: BTreeMap<Name, BackendSection>,
}

impl Rendered {
    /// The whole `haproxy.cfg`.
    pub fn text(&self) -> String {
        let servers: usize = self.backends.values().map(|b| b.servers.len()).sum();
        let mut out = String::with_capacity(
            self.preamble.len()
                + self.frontends.iter().map(String::len).sum::<usize>()
                + self.backends.values().map(|b| b.head.len()).sum::<usize>()
                + servers * 80,
        );
        out.push_str(&self.preamble);
        for frontend in &self.frontends {
            out.push_str(frontend);
        }
        for section in self.backends.values() {
            out.push_str(&section.head);
            for (name, server) in &section.servers {
                server.write_line(name, &mut out);
            }
        }
        out
    }

    /// How many servers the configuration has.
    pub fn server_count(&self) -> usize {
        self.backends.values().map(|b| b.servers.len()).sum()
    }

    /// A fingerprint of everything a runtime change cannot alter: two
    /// configurations with the same key differ only in servers that the
    /// runtime API can change.
    pub fn structure_key(&self) -> u64 {
        let mut text = String::new();
        text.push_str(&self.preamble);
        for frontend in &self.frontends {
            text.push_str(frontend);
        }
        for (name, section) in &self.backends {
            let _ = writeln!(text, "{name}");
            text.push_str(&section.head);
            if !section.runtime_servers {
                for (server_name, server) in &section.servers {
                    server.write_line(server_name, &mut text);
                }
            }
        }
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }

    /// This configuration's structure with the servers of `next` wherever
    /// the runtime API can get them there (same backend head, servers
    /// changeable at run time): what HAProxy can run when `next`'s own
    /// structure cannot be activated, so that member changes still apply.
    pub fn with_runtime_servers_of(&self, next: &Rendered) -> Rendered {
        let mut merged = self.clone();
        for (name, section) in &mut merged.backends {
            if let Some(wanted) = next.backends.get(name)
                && wanted.head == section.head
                && wanted.runtime_servers
                && section.runtime_servers
            {
                section.servers = wanted
                    .servers
                    .iter()
                    .filter(|(server_name, server)| {
                        section.servers.contains_key(*server_name) || server.addable_at_runtime()
                    })
                    .map(|(server_name, server)| (server_name.clone(), server.clone()))
                    .collect();
            }
        }
        merged
    }
}

/// Renders `view` with live registrations as of wall-clock `now_ms`.
pub fn render(view: &ConfigView, settings: &Settings, now_ms: u64) -> Rendered {
    let live = LiveRegistrations::new(view, now_ms);
    let preamble = section(&PreambleTemplate { s: settings });
    let frontends = view
        .frontends
        .iter()
        .map(|(key, frontend)| render_frontend(key, frontend, view, settings))
        .collect();
    let backends = view
        .backends
        .iter()
        .map(|(key, backend)| {
            let section = render_backend(key, backend, &live, settings.natives);
            (key.clone(), section)
        })
        .collect();
    Rendered {
        preamble,
        frontends,
        backends,
    }
}

/// A stored `natives` line that the renderer writes as a comment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeftOut {
    /// The kind of section it belongs to.
    pub section: Section,
    /// The frontend or backend.
    pub key: Name,
    /// The line.
    pub line: NativeLine,
    /// Why it is left out.
    pub why: String,
}

/// The `natives` lines of `view` that [`render`] writes as comments under
/// `settings`, in section order.
pub fn left_out_natives(view: &ConfigView, settings: &Settings) -> Vec<LeftOut> {
    let frontends = view
        .frontends
        .iter()
        .map(|(key, f)| (Section::Frontend, key, &f.natives));
    let backends = view
        .backends
        .iter()
        .map(|(key, b)| (Section::Backend, key, &b.natives));
    frontends
        .chain(backends)
        .flat_map(|(section, key, natives)| {
            natives_out(natives, section, settings.natives)
                .into_iter()
                .filter_map(move |out| {
                    Some(LeftOut {
                        section,
                        key: key.clone(),
                        line: out.line.clone(),
                        why: out.left_out?.to_string(),
                    })
                })
        })
        .collect()
}

/// How many lines [`lines_in_section`] quotes at most.
pub const QUOTED_LINES_MAX: usize = 16;

/// The lines of a rendered `text` numbered `numbers` (from 1, as HAProxy
/// counts them) that lie in the section of kind `section` named `key`,
/// trimmed, in file order, at most [`QUOTED_LINES_MAX`]: what the author
/// of a write may be shown of a configuration HAProxy refused. Lines of
/// any other section are never quoted (the preamble holds the stats
/// password; other objects are not the writer's concern).
pub fn lines_in_section(
    text: &str,
    section: Section,
    key: &Name,
    numbers: &[usize],
) -> Vec<String> {
    let header = format!("{section} {key}");
    let mut inside = false;
    let mut quoted = Vec::new();
    for (index, line) in text.lines().enumerate() {
        // Every section starts with an unindented line; everything the
        // renderer writes inside one is indented.
        if !line.is_empty() && !line.starts_with(' ') {
            inside = line == header;
        }
        if inside && numbers.contains(&(index + 1)) && quoted.len() < QUOTED_LINES_MAX {
            quoted.push(line.trim().to_owned());
        }
    }
    quoted
}

/// A template's text as whole lines (askama drops the file's last newline).
fn section(template: &impl Template) -> String {
    let mut text = template
        .render()
        .expect("rendering into a String cannot fail");
    text.push('\n');
    text
}

#[derive(Template)]
#[template(path = "haproxy/preamble.cfg", escape = "none")]
struct PreambleTemplate<'a> {
    s: &'a Settings,
}

#[derive(Template)]
#[template(path = "haproxy/frontend.cfg", escape = "none")]
struct FrontendTemplate<'a> {
    key: &'a Name,
    mode: &'static str,
    binds: Vec<String>,
    keepalive: Keepalive,
    rules: Vec<RuleLines<'a>>,
    default_backend: Result<&'a Name, String>,
    natives: Vec<NativeOut<'a>>,
}

/// A `natives` line as rendered: as it is, or as a comment saying why it
/// is left out.
struct NativeOut<'a> {
    line: &'a NativeLine,
    left_out: Option<NativeRefusal>,
}

/// The lines of `natives` as rendered into a section of `section`'s kind.
fn natives_out(natives: &Natives, section: Section, policy: NativesPolicy) -> Vec<NativeOut<'_>> {
    natives
        .as_slice()
        .iter()
        .map(|line| NativeOut {
            line,
            left_out: line.refusal(section, policy),
        })
        .collect()
}

/// One routing rule: its ACL and the backend it selects, or why it is left
/// out.
struct RuleLines<'a> {
    acl: String,
    matcher: String,
    value: &'a AclValue,
    backend: Result<&'a Name, String>,
}

#[derive(Template)]
#[template(path = "haproxy/backend.cfg", escape = "none")]
struct BackendTemplate<'a> {
    key: &'a Name,
    mode: &'static str,
    balance: &'static str,
    consistent_hash: bool,
    host_rewrite: Option<&'a Host>,
    http_check: Option<HttpCheck<'a>>,
    natives: Vec<NativeOut<'a>>,
}

struct HttpCheck<'a> {
    method: &'static str,
    uri: &'a HttpPath,
    version: &'static str,
    host: Option<&'a Host>,
}

fn render_frontend(key: &Name, frontend: &Frontend, view: &ConfigView, s: &Settings) -> String {
    let binds = frontend
        .bind
        .as_slice()
        .iter()
        .map(|bind| match (&bind.host, s.bind_host) {
            (BindHost::Any, Some(ip)) => address(&ip.to_string(), bind.port),
            (BindHost::Any, None) => format!(":{}", bind.port),
            (BindHost::Host(host), _) => address(host.as_str(), bind.port),
        })
        .collect();
    let rules = frontend
        .rules
        .as_slice()
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let operation = operation_keyword(rule.operation());
            let matcher = match rule.header() {
                Some(header) => format!("{operation}({header})"),
                None => operation.to_owned(),
            };
            RuleLines {
                // The rule's position is part of the frontend's content
                // (rules apply in order), so the name is stable.
                acl: format!("rule_{}_{operation}", index + 1),
                matcher,
                value: rule.value(),
                backend: reference(rule.backend(), frontend.mode, view),
            }
        })
        .collect();
    section(&FrontendTemplate {
        key,
        mode: mode_keyword(frontend.mode),
        binds,
        // Connection options are HTTP options.
        keepalive: match frontend.mode {
            Mode::Http => frontend.keepalive,
            Mode::Tcp => Keepalive::Default,
        },
        rules,
        default_backend: reference(&frontend.backend, frontend.mode, view),
        natives: natives_out(&frontend.natives, Section::Frontend, s.natives),
    })
}

/// A frontend's reference to a backend, or why it cannot be rendered. The
/// API refuses both cases, but concurrent writes on different peers can
/// still produce them (a backend deleted on one peer while a frontend
/// naming it is written on another); leaving the reference out keeps the
/// configuration loadable on every peer.
fn reference<'a>(backend: &'a Name, mode: Mode, view: &ConfigView) -> Result<&'a Name, String> {
    match view.backends.get(backend) {
        None => Err(format!("backend {backend} does not exist")),
        Some(b) if b.mode != mode => Err(format!(
            "backend {backend} is in {} mode",
            mode_keyword(b.mode)
        )),
        Some(_) => Ok(backend),
    }
}

fn render_backend(
    key: &Name,
    backend: &Backend,
    live: &LiveRegistrations<'_>,
    policy: NativesPolicy,
) -> BackendSection {
    let http = backend.mode == Mode::Http;
    let health = &backend.health;
    let head = section(&BackendTemplate {
        key,
        mode: mode_keyword(backend.mode),
        balance: balance_keyword(backend.balance),
        // Map-based hashing cannot take servers at run time; consistent
        // hashing can, and moves fewer clients when members change.
        consistent_hash: matches!(backend.balance, Balance::Source | Balance::Uri),
        host_rewrite: backend.host.as_ref().filter(|_| http),
        http_check: http.then(|| HttpCheck {
            method: match health.method() {
                HealthMethod::Get => "GET",
                HealthMethod::Post => "POST",
            },
            uri: health.uri(),
            version: match health.http_version() {
                HttpVersion::Http10 => "HTTP/1.0",
                HttpVersion::Http11 => "HTTP/1.1",
            },
            host: backend
                .host
                .as_ref()
                .filter(|_| health.http_version() == HttpVersion::Http11),
        }),
        natives: natives_out(&backend.natives, Section::Backend, policy),
    });
    let check_inter_ms = health.interval_ms();
    let servers = match (backend.kind, &backend.service, &backend.version) {
        (BackendType::Static, _, _) => backend
            .members
            .iter()
            .map(|((host, port), member)| {
                let server = Server {
                    host: host.clone(),
                    port: *port,
                    weight: member.weight,
                    state: member.state,
                    check_inter_ms,
                };
                (ServerName::of(host, *port), server)
            })
            .collect(),
        (BackendType::Dynamic, Some(service), Some(version)) => live
            .of(service, version)
            .iter()
            .map(|(key, _)| {
                let server = Server {
                    host: key.host.clone(),
                    port: key.port,
                    weight: Weight::default(),
                    state: MemberState::Ready,
                    check_inter_ms,
                };
                (ServerName::of(&key.host, key.port), server)
            })
            .collect(),
        (BackendType::Dynamic, _, _) => BTreeMap::new(),
    };
    BackendSection {
        head,
        runtime_servers: backend.balance != Balance::StaticRr
            && !backend.natives.as_slice().iter().any(|line| {
                // Servers added at run time ignore `default-server` and
                // templates: they would differ from the file's.
                let keyword = line.as_str().split_whitespace().next().unwrap_or("");
                keyword == "default-server" || keyword == "server-template"
            }),
        servers,
    }
}

/// `host:port` as HAProxy reads it, with IPv6 addresses in brackets.
fn address(host: &str, port: Port) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn mode_keyword(mode: Mode) -> &'static str {
    match mode {
        Mode::Http => "http",
        Mode::Tcp => "tcp",
    }
}

fn balance_keyword(balance: Balance) -> &'static str {
    match balance {
        Balance::Roundrobin => "roundrobin",
        Balance::StaticRr => "static-rr",
        Balance::Leastconn => "leastconn",
        Balance::First => "first",
        Balance::Source => "source",
        Balance::Uri => "uri",
        Balance::Random => "random",
    }
}

fn operation_keyword(operation: RuleOperation) -> &'static str {
    match operation {
        RuleOperation::Path => "path",
        RuleOperation::PathBeg => "path_beg",
        RuleOperation::PathReg => "path_reg",
        RuleOperation::Url => "url",
        RuleOperation::UrlBeg => "url_beg",
        RuleOperation::UrlReg => "url_reg",
        RuleOperation::Hdr => "hdr",
        RuleOperation::HdrBeg => "hdr_beg",
        RuleOperation::HdrEnd => "hdr_end",
        RuleOperation::HdrDom => "hdr_dom",
        RuleOperation::HdrSub => "hdr_sub",
        RuleOperation::HdrReg => "hdr_reg",
    }
}

/// What [`redacted`] puts in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// `text` (a rendered configuration) with every secret the peer itself put
/// in it replaced by [`REDACTED`]: the stats page's `stats auth
/// USER:PASSWORD`. What `/haproxy/config` shows, and what the applied hash
/// covers, so that neither hands out the password nor a way to guess it
/// offline. (Lines a writer put in `natives` are the writer's own.)
pub fn redacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_start();
        let indent = &line[..line.len() - body.len()];
        let mut words = body.split_whitespace();
        if words.next() == Some("stats") && words.next() == Some("auth") {
            out.push_str(indent);
            out.push_str("stats auth ");
            out.push_str(REDACTED);
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_stats_password_is_redacted_and_nothing_else_changes() {
        let text = "global\n    maxconn 10\n\nlisten stats\n    stats auth admin:hunter2\n    stats uri /\n";
        assert_eq!(
            super::redacted(text),
            "global\n    maxconn 10\n\nlisten stats\n    stats auth <redacted>\n    stats uri /\n"
        );
    }
}
