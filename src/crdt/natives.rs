//! What a `natives` line may say: an allow-list of HAProxy directives per
//! section (frontend, backend) and the checks of their arguments, so that
//! a line an API writer sends can shape traffic but never make HAProxy
//! read, write or execute a file, open a socket or listener, read its
//! environment, or serve an admin page. `docs/natives.md` is the table.
//!
//! Owns the judgement of one line ([`check`]) and HAProxy's tokenization
//! of it ([`words`]). Must not decide what happens to a refused line: new
//! API writes are refused, stored values keep decoding (the compatibility
//! policy) and the renderer writes them as comments.
//!
//! A line is judged on the words HAProxy will see, not on its text:
//! [`words`] splits it as HAProxy 2.6's `parse_line` does (quotes of
//! either kind are removed and may join a word from pieces, `fi"le"` is
//! `file`; `#` outside quotes ends the line; `\ ` is a space within a
//! word). What could make HAProxy see another word than this check does is
//! refused outright: an escape for a control or arbitrary character
//! (`\x66`, `\t`…), and a `$` that could expand an environment variable. Keywords are matched
//! case-sensitively, as HAProxy does; the words that name files or sockets
//! are matched case-insensitively, which only ever refuses more.

use std::fmt;
use std::str::FromStr;

use super::model::{Name, SECTION_KEYWORDS, opens_section};

/// The kind of section a `natives` line is rendered into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// A `frontend` section.
    Frontend,
    /// A `backend` section.
    Backend,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Frontend => "frontend",
            Section::Backend => "backend",
        })
    }
}

/// Which rules `natives` lines are held to: a peer-local setting, never a
/// replicated or API-writable one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NativesPolicy {
    /// The allow-list of this module.
    #[default]
    Restricted,
    /// Only the rules of 2.1: no `.` directive and no section keyword as
    /// the first word, which must be written plainly (no quote or
    /// backslash, so that the check sees the word HAProxy sees). An
    /// operator's escape for lines the allow-list does not know.
    Unrestricted,
}

impl FromStr for NativesPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "restricted" => Ok(NativesPolicy::Restricted),
            "unrestricted" => Ok(NativesPolicy::Unrestricted),
            other => Err(format!("{other:?} is not `restricted` or `unrestricted`")),
        }
    }
}

/// Why a line is refused: the word (directive, action, argument or
/// character) and what it would do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("\"{word}\" is not allowed in a {section} ({why})")]
pub struct Refusal {
    /// The offending word, at most 64 characters of it.
    pub word: String,
    /// The section the line was meant for.
    pub section: Section,
    /// What the word would do, or which rule it breaks.
    pub why: &'static str,
}

const READS_A_FILE: &str = "makes HAProxy read a file";
const NAMES_A_SOCKET: &str = "names a socket HAProxy would open";
const RUNS_LUA: &str = "runs Lua code";
const NOT_LISTED: &str = "not on the allow-list, see docs/natives.md";
const REGEX: &str = "matches a regular expression, which one request can make \
     backtrack until HAProxy's watchdog kills the worker (use the rules' path_reg, url_reg, \
     hdr_reg, whose patterns are checked)";
const FRONTEND_ONLY: &str = "a frontend directive";
const BACKEND_ONLY: &str = "a backend directive";

/// Where a directive is accepted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sections {
    Both,
    Frontend,
    Backend,
}

/// What is checked of an accepted directive beyond its arguments.
#[derive(Clone, Copy)]
enum Shape {
    /// Nothing more.
    Plain,
    /// A rule set: the action after the rule kind (one of `kinds`, or the
    /// second word when there are none) must be in [`ACTIONS`];
    /// `inspect-delay` takes a time.
    Rules { kinds: &'static [&'static str] },
    /// `option NAME`: NAME must be in [`OPTIONS`].
    Option,
    /// `no option NAME` or `no log`.
    No,
    /// `log global` only.
    Log,
    /// `use_backend NAME`: a backend written out, not computed at run time
    /// (a computed name could reach the stats listener).
    UseBackend,
    /// A server line: the word at `address_at` (if any) must be a plain
    /// address, and no option may bind source addresses.
    Server { address_at: Option<usize> },
}

/// The accepted directives (HAProxy 2.6, configuration manual section 4).
const DIRECTIVES: &[(&str, Sections, Shape)] = {
    use Sections::{Backend as B, Both, Frontend as F};
    use Shape::Plain;
    const HTTP_RULES: Shape = Shape::Rules { kinds: &[] };
    &[
        ("acl", Both, Plain),
        ("backlog", F, Plain),
        ("balance", B, Plain),
        ("capture", F, Plain),
        ("clitcpka-cnt", F, Plain),
        ("clitcpka-idle", F, Plain),
        ("clitcpka-intvl", F, Plain),
        ("compression", Both, Plain),
        ("cookie", B, Plain),
        ("declare", F, Plain),
        ("default-server", B, Shape::Server { address_at: None }),
        ("description", Both, Plain),
        ("dynamic-cookie-key", B, Plain),
        ("errorloc", Both, Plain),
        ("errorloc302", Both, Plain),
        ("errorloc303", Both, Plain),
        ("force-persist", Both, Plain),
        ("fullconn", B, Plain),
        ("hash-balance-factor", B, Plain),
        ("hash-type", B, Plain),
        ("http-after-response", Both, HTTP_RULES),
        ("http-check", B, Plain),
        ("http-error", Both, Plain),
        ("http-request", Both, HTTP_RULES),
        ("http-response", Both, HTTP_RULES),
        ("http-reuse", B, Plain),
        ("http-send-name-header", B, Plain),
        ("ignore-persist", Both, Plain),
        ("log", Both, Shape::Log),
        ("log-format", F, Plain),
        ("log-format-sd", F, Plain),
        ("log-tag", Both, Plain),
        ("max-keep-alive-queue", B, Plain),
        ("maxconn", F, Plain),
        ("monitor", F, Plain),
        ("monitor-uri", F, Plain),
        ("no", Both, Shape::No),
        ("option", Both, Shape::Option),
        ("persist", B, Plain),
        ("rate-limit", F, Plain),
        ("redirect", Both, Plain),
        ("retries", B, Plain),
        ("retry-on", B, Plain),
        (
            "server",
            B,
            Shape::Server {
                address_at: Some(2),
            },
        ),
        (
            "server-template",
            B,
            Shape::Server {
                address_at: Some(3),
            },
        ),
        ("srvtcpka-cnt", B, Plain),
        ("srvtcpka-idle", B, Plain),
        ("srvtcpka-intvl", B, Plain),
        ("stick", B, Plain),
        ("stick-table", Both, Plain),
        ("tcp-check", B, Plain),
        (
            "tcp-request",
            Both,
            Shape::Rules {
                kinds: &["connection", "session", "content"],
            },
        ),
        (
            "tcp-response",
            B,
            Shape::Rules {
                kinds: &["content"],
            },
        ),
        ("timeout", Both, Plain),
        ("unique-id-format", F, Plain),
        ("unique-id-header", F, Plain),
        ("use-server", B, Plain),
        ("use_backend", F, Shape::UseBackend),
    ]
};

/// Directives refused for a reason worth naming (any other directive not
/// in [`DIRECTIVES`] is refused as [`NOT_LISTED`]).
const REFUSED_DIRECTIVES: &[(&str, &str)] = &[
    ("bind", "opens a listener"),
    ("stats", "serves HAProxy's statistics or admin page"),
    ("filter", "loads a filter, which reads a configuration file"),
    ("errorfile", READS_A_FILE),
    ("errorfiles", READS_A_FILE),
    ("load-server-state-from-file", READS_A_FILE),
    ("server-state-file-name", READS_A_FILE),
    ("external-check", "makes HAProxy execute a program"),
    ("email-alert", "makes HAProxy send mail"),
    ("source", "binds source addresses of HAProxy's choosing"),
    ("dispatch", "sends traffic outside the backend's servers"),
    ("use-fcgi-app", "talks to a FastCGI application"),
    ("mode", "the object's own `mode` field sets it"),
    ("default_backend", "the frontend's `backend` field sets it"),
];

/// The options `option` and `no option` accept.
const OPTIONS: &[&str] = &[
    "abortonclose",
    "accept-invalid-http-request",
    "accept-invalid-http-response",
    "allbackups",
    "checkcache",
    "clitcpka",
    "contstats",
    "disable-h2-upgrade",
    "dontlog-normal",
    "dontlognull",
    "forwardfor",
    "h1-case-adjust-bogus-client",
    "h1-case-adjust-bogus-server",
    "http-buffer-request",
    "http-ignore-probes",
    "http-keep-alive",
    "http-no-delay",
    "http-pretend-keepalive",
    "http-restrict-req-hdr-names",
    "http-server-close",
    "http-use-proxy-header",
    "httpchk",
    "httpclose",
    "httplog",
    "httpslog",
    "idle-close-on-response",
    "independent-streams",
    "ldap-check",
    "log-health-checks",
    "log-separate-errors",
    "logasap",
    "mysql-check",
    "nolinger",
    "originalto",
    "persist",
    "pgsql-check",
    "prefer-last-server",
    "redis-check",
    "redispatch",
    "smtpchk",
    "socket-stats",
    "splice-auto",
    "splice-request",
    "splice-response",
    "spop-check",
    "srvtcpka",
    "ssl-hello-chk",
    "tcp-check",
    "tcp-smart-accept",
    "tcp-smart-connect",
    "tcpka",
    "tcplog",
];

/// Options refused for a reason worth naming.
const REFUSED_OPTIONS: &[(&str, &str)] = &[
    ("external-check", "makes HAProxy execute a program"),
    (
        "transparent",
        "connects wherever a client's packets were addressed",
    ),
    ("http_proxy", "connects wherever a client's request says"),
];

/// The actions `http-request`, `http-response`, `http-after-response`,
/// `tcp-request` and `tcp-response` accept (HAProxy refuses an action in
/// a rule set that has no such action).
const ACTIONS: &[&str] = &[
    "accept",
    "add-header",
    "allow",
    "auth",
    "capture",
    "close",
    "del-header",
    "deny",
    "disable-l7-retry",
    "early-hint",
    "expect-netscaler-cip",
    "expect-proxy",
    "normalize-uri",
    "redirect",
    "reject",
    "return",
    "sc-add-gpc",
    "sc-inc-gpc",
    "sc-inc-gpc0",
    "sc-inc-gpc1",
    "sc-set-gpt",
    "sc-set-gpt0",
    "set-bandwidth-limit",
    "set-header",
    "set-log-level",
    "set-mark",
    "set-method",
    "set-nice",
    "set-path",
    "set-pathq",
    "set-priority-class",
    "set-priority-offset",
    "set-query",
    "set-src",
    "set-src-port",
    "set-status",
    "set-timeout",
    "set-tos",
    "set-uri",
    "set-var",
    "set-var-fmt",
    "silent-drop",
    "strict-mode",
    "switch-mode",
    "tarpit",
    "track-sc0",
    "track-sc1",
    "track-sc2",
    "unset-var",
    "wait-for-body",
    "wait-for-handshake",
];

/// Actions refused for a reason worth naming.
const REFUSED_ACTIONS: &[(&str, &str)] = &[
    ("replace-header", REGEX),
    ("replace-path", REGEX),
    ("replace-pathq", REGEX),
    ("replace-uri", REGEX),
    ("replace-value", REGEX),
    (
        "set-dst",
        "sends the connection to an address the client can choose (an open proxy)",
    ),
    (
        "set-dst-port",
        "sends the connection to a port the client can choose (an open proxy)",
    ),
    (
        "use-service",
        "serves one of HAProxy's own services (such as the Prometheus exporter)",
    ),
    ("set-map", "changes the entries of a map file"),
    ("del-map", "changes the entries of a map file"),
    ("add-acl", "changes the entries of an ACL file"),
    ("del-acl", "changes the entries of an ACL file"),
    (
        "send-spoe-group",
        "talks to a SPOE agent, which a filter's configuration file declares",
    ),
    (
        "cache-use",
        "needs a cache section, which natives cannot declare",
    ),
    (
        "cache-store",
        "needs a cache section, which natives cannot declare",
    ),
    (
        "do-resolve",
        "needs a resolvers section, which natives cannot declare",
    ),
];

/// Arguments that name a file HAProxy reads (lower case; `-f` and `-M` are
/// matched as written: `-m` is a match method).
const FILE_ARGUMENTS: &[&str] = &[
    "file",
    "lf-file",
    "errorfile",
    "errorfiles",
    "config",
    "crt",
    "crt-list",
    "ca-file",
    "ca-verify-file",
    "crl-file",
    "key",
    "issuers-chain-file",
];

/// Address prefixes of HAProxy that name a socket or file descriptor
/// (lower case).
const SOCKET_PREFIXES: &[&str] = &[
    "unix@",
    "abns@",
    "abnsz@",
    "fd@",
    "sockpair@",
    "uxst@",
    "uxdg@",
];

/// Server options that bind source addresses or switch network namespace.
const REFUSED_SERVER_OPTIONS: &[&str] =
    &["source", "usesrc", "interface", "namespace", "init-addr"];

/// Arguments whose next word HAProxy reads as an address to connect to.
const ADDRESS_OPTIONS: &[&str] = &["addr", "agent-addr", "socks4"];

/// Whether `line` may be rendered into a section of `section`'s kind under
/// `policy`; the refusal names the word and why.
pub fn check(line: &str, section: Section, policy: NativesPolicy) -> Result<(), Refusal> {
    let refuse = |word: &str, why: &'static str| Refusal {
        word: word.chars().take(64).collect(),
        section,
        why,
    };
    if policy == NativesPolicy::Unrestricted {
        // The first word as HAProxy reads it (`global#` is `global`: `#`
        // ends a word), written plainly.
        let first = line.split(' ').find(|w| !w.is_empty()).unwrap_or("");
        if first.contains(['"', '\'', '\\', '#']) {
            return Err(refuse(
                first,
                "a quoted, escaped or commented first word, which this check cannot read as HAProxy does",
            ));
        }
        return check_first_word(first).map_err(|why| refuse(first, why));
    }
    let words = words(line).map_err(|(word, why)| refuse(&word, why))?;
    let Some(keyword) = words.first() else {
        // A comment.
        return Ok(());
    };
    check_first_word(keyword).map_err(|why| refuse(keyword, why))?;
    let Some((_, sections, shape)) = DIRECTIVES.iter().find(|(k, _, _)| k == keyword) else {
        let why = if keyword.starts_with("lua") {
            RUNS_LUA
        } else {
            reason_in(REFUSED_DIRECTIVES, keyword).unwrap_or(NOT_LISTED)
        };
        return Err(refuse(keyword, why));
    };
    match (sections, section) {
        (Sections::Frontend, Section::Backend) => return Err(refuse(keyword, FRONTEND_ONLY)),
        (Sections::Backend, Section::Frontend) => return Err(refuse(keyword, BACKEND_ONLY)),
        _ => {}
    }
    check_shape(*shape, &words).map_err(|(word, why)| refuse(word, why))?;
    check_arguments(&words[1..]).map_err(|(word, why)| refuse(word, why))
}

/// The rules every policy applies to a line's first word.
fn check_first_word(word: &str) -> Result<(), &'static str> {
    if word.starts_with('.') {
        Err("a configuration directive (a word starting with '.'), whose block would span sections")
    } else if opens_section(word, SECTION_KEYWORDS) {
        Err("opens a new section")
    } else {
        Ok(())
    }
}

fn reason_in(table: &[(&str, &'static str)], word: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == word).map(|(_, why)| *why)
}

/// The checks of a directive's [`Shape`].
fn check_shape(shape: Shape, words: &[String]) -> Result<(), (&str, &'static str)> {
    let word = |index: usize| words.get(index).map_or("", String::as_str);
    match shape {
        Shape::Plain => Ok(()),
        Shape::Rules { kinds } => {
            let at = if kinds.is_empty() {
                1
            } else if word(1) == "inspect-delay" {
                return Ok(());
            } else if kinds.contains(&word(1)) {
                2
            } else {
                return Err((word(1), NOT_LISTED));
            };
            check_action(word(at))
        }
        Shape::Option => check_option(word(1)),
        Shape::No => match (word(1), words.len()) {
            ("option", _) => check_option(word(2)),
            ("log", 2) => Ok(()),
            (other, _) => Err((other, "only `no option` and `no log` are taken")),
        },
        Shape::Log if word(1) == "global" && words.len() == 2 => Ok(()),
        Shape::Log => Err((
            word(0),
            "sends logs to a target of its own; only `log global` and `no log` are taken",
        )),
        Shape::UseBackend if Name::new(word(1)).is_ok() => Ok(()),
        Shape::UseBackend => Err((
            word(1),
            "a backend must be named as it is written, not computed when a request comes",
        )),
        Shape::Server { address_at } => {
            // A server's own address needs its port: without one, HAProxy
            // connects to the port the client's connection was headed for,
            // which `expect-proxy` lets the client choose.
            if let Some(at) = address_at
                && !(is_plain_address(word(at)) && split_host_port(word(at)).1.is_some())
            {
                return Err((word(at), SERVER_ADDRESS));
            }
            if word(0) == "server-template"
                && template_size(word(2)).is_none_or(|size| size > SERVERS_MAX)
            {
                return Err((word(2), TOO_MANY_SERVERS));
            }
            match words
                .iter()
                .find(|w| REFUSED_SERVER_OPTIONS.contains(&w.as_str()))
            {
                Some(option) if option == "init-addr" => Err((
                    option,
                    "sets the address a server starts with (0.0.0.0: wherever the client's \
                     connection was headed); the peer's defaults resolve servers",
                )),
                Some(option) => Err((option, "binds source addresses or switches namespace")),
                None => Ok(()),
            }
        }
    }
}

const PLAIN_ADDRESS: &str = "an address must be a host name or a specified IP with an optional \
     port, not a path, a socket, a port offset or the unspecified address";

const SERVER_ADDRESS: &str = "a server's address must be a host name or a specified IP with \
     its port, not a path, a socket, a port offset, a missing port or the unspecified address";

const TOO_MANY_SERVERS: &str = "a server-template range of 1 to 256 servers (more stalls HAProxy)";

fn check_option(option: &str) -> Result<(), (&str, &'static str)> {
    if OPTIONS.contains(&option) {
        Ok(())
    } else {
        Err((
            option,
            reason_in(REFUSED_OPTIONS, option).unwrap_or(NOT_LISTED),
        ))
    }
}

/// An action, `set-var(txn.x)` named by what comes before `(`.
fn check_action(action: &str) -> Result<(), (&str, &'static str)> {
    let name = action.split('(').next().unwrap_or("");
    if ACTIONS.contains(&name) {
        Ok(())
    } else if name.starts_with("lua.") {
        Err((action, RUNS_LUA))
    } else {
        Err((
            action,
            reason_in(REFUSED_ACTIONS, name).unwrap_or(NOT_LISTED),
        ))
    }
}

/// The checks of every argument, whatever the directive.
fn check_arguments(arguments: &[String]) -> Result<(), (&str, &'static str)> {
    for (index, argument) in arguments.iter().enumerate() {
        let lower = argument.to_ascii_lowercase();
        if FILE_ARGUMENTS.contains(&lower.as_str()) || argument == "-f" || argument == "-M" {
            return Err((argument, READS_A_FILE));
        }
        if argument == "-m"
            && arguments
                .get(index + 1)
                .is_some_and(|method| method.eq_ignore_ascii_case("reg"))
        {
            return Err((argument, REGEX));
        }
        if SOCKET_PREFIXES.iter().any(|p| lower.contains(p)) {
            return Err((argument, NAMES_A_SOCKET));
        }
        if ADDRESS_OPTIONS.contains(&lower.as_str()) {
            let next = arguments.get(index + 1).map_or("", String::as_str);
            if !is_plain_address(next) {
                return Err((next, PLAIN_ADDRESS));
            }
        }
        // Sample fetches and converters inside an argument
        // (`%[env(HOME)]`, `src,map_ip(/etc/x)`, `lua.f`).
        let refused = argument
            .split(|c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c)))
            .find_map(|word| {
                let word = word.to_ascii_lowercase();
                if word == "env" {
                    Some("reads HAProxy's environment")
                } else if word == "map" || word.starts_with("map_") {
                    Some("makes HAProxy read a map file")
                } else if word == "jwt_verify" {
                    Some("makes HAProxy read a key file")
                } else if word.ends_with("_reg")
                    || word == "regsub"
                    || matches!(word.as_str(), "rstring" | "rstatus" | "rbinary")
                {
                    Some(REGEX)
                } else if word == "lua" || word.starts_with("lua.") || word.starts_with("lua-") {
                    Some(RUNS_LUA)
                } else {
                    None
                }
            });
        if let Some(why) = refused {
            return Err((argument, why));
        }
    }
    Ok(())
}

/// A host name or IP address with an optional port (`10.0.0.5:80`,
/// `app.internal`, `[::1]:8080`, `::1`): no path, no socket prefix, no
/// variable, no port offset, and never the unspecified address (`0.0.0.0`,
/// `::`, `*`, `0`, an empty host), which makes HAProxy connect to wherever
/// the request was headed — an open proxy with `set-dst`, or a loop. A
/// name must start with a letter, so that no numeric form the resolver
/// reads as an address (`0x0`, `127.1`) passes as a name.
fn is_plain_address(word: &str) -> bool {
    let (host, port) = split_host_port(word);
    let port_ok = port.is_none_or(|port| {
        port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    let host_ok = match host.parse::<std::net::IpAddr>() {
        // `::ffff:0.0.0.0` is 0.0.0.0 to the kernel.
        Ok(ip) => !ip.to_canonical().is_unspecified(),
        Err(_) => {
            host.starts_with(|c: char| c.is_ascii_alphabetic())
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        }
    };
    port_ok && host_ok
}

/// `host[:port]`, `[v6][:port]` or a bare IPv6 address, split.
fn split_host_port(word: &str) -> (&str, Option<&str>) {
    if let Some(rest) = word.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, after)) => (host, Some(after.strip_prefix(':').unwrap_or(after))),
            None => (word, None),
        };
    }
    if word.matches(':').count() > 1 {
        // A bare IPv6 address: no port can be told apart.
        return (word, None);
    }
    match word.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (word, None),
    }
}

/// The most servers one backend's `natives` may declare (`server` lines
/// and the ranges of `server-template`): HAProxy's parse time grows with
/// the square of a backend's servers (20,000 take seconds, 200,000 over a
/// minute), which would stall every check, reload and start.
pub const SERVERS_MAX: usize = 256;

/// How many servers `line` declares: 1 for `server`, the size of the range
/// of `server-template` (`5` or `1-5`; `None` for a range that does not
/// parse), 0 for anything else.
pub fn servers_declared(line: &str) -> Option<usize> {
    let Ok(words) = words(line) else {
        return Some(0);
    };
    match words.first().map(String::as_str) {
        Some("server") => Some(1),
        Some("server-template") => template_size(words.get(2).map_or("", String::as_str)),
        _ => Some(0),
    }
}

/// The number of servers of a `server-template` range: `N` or `A-B`.
fn template_size(range: &str) -> Option<usize> {
    match range.split_once('-') {
        Some((first, last)) => {
            let (first, last) = (first.parse::<usize>().ok()?, last.parse::<usize>().ok()?);
            (first >= 1 && last >= first).then(|| last - first + 1)
        }
        None => range.parse::<usize>().ok().filter(|n| *n >= 1),
    }
}

/// The words of `line` as HAProxy reads them, or the text that could make
/// HAProxy read other words than these (with why).
///
/// As HAProxy's `parse_line`: words are separated by spaces outside
/// quotes; `"` and `'` open and close quotes anywhere and are removed;
/// `#` outside quotes ends the line; outside single quotes, a backslash
/// before a space, `\\`, `#`, `'` or `"` (and `$` in double quotes) stands
/// for that character, and any other backslash is kept (the regex `\d`).
/// Refused: `\t`, `\n`, `\r` and `\xHH` (control or arbitrary bytes) and
/// a backslash ending the line; any other `$` inside double quotes and a
/// `$` before a variable name anywhere (HAProxy expands environment
/// variables in double quotes); an unmatched quote.
pub fn words(line: &str) -> Result<Vec<String>, (String, &'static str)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut started = false;
    let (mut single, mut double) = (false, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' if !single && !double => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
                continue;
            }
            '#' if !single && !double => break,
            '"' if !single => double = !double,
            '\'' if !double => single = !single,
            // Literal inside single quotes, as in HAProxy.
            '\\' if single => word.push(c),
            '\\' => match chars.peek().copied() {
                Some(next @ (' ' | '\\' | '#' | '\'' | '"')) => {
                    chars.next();
                    word.push(next);
                }
                Some('$') if double => {
                    chars.next();
                    word.push('$');
                }
                Some(next @ ('t' | 'n' | 'r' | 'x')) => {
                    return Err((
                        format!("\\{next}"),
                        "an escape for a control or arbitrary character, which could hide a word from this check",
                    ));
                }
                // Kept as written by HAProxy too (`\d` in a regex).
                Some(_) => word.push(c),
                None => return Err(("\\".to_owned(), "a backslash at the end of the line")),
            },
            '$' if double
                || chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphabetic() || "{_.".contains(*n)) =>
            {
                return Err((
                    "$".to_owned(),
                    "expands a variable of HAProxy's environment",
                ));
            }
            other => word.push(other),
        }
        started = true;
    }
    if single || double {
        let quote = if single { "'" } else { "\"" };
        return Err((quote.to_owned(), "an unmatched quote"));
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(line: &str) -> Result<(), Refusal> {
        check(line, Section::Backend, NativesPolicy::Restricted)
    }

    fn frontend(line: &str) -> Result<(), Refusal> {
        check(line, Section::Frontend, NativesPolicy::Restricted)
    }

    #[test]
    fn words_are_split_and_unquoted_as_haproxy_does() {
        let split = |line: &str| words(line).unwrap();
        assert_eq!(split("a  b"), ["a", "b"]);
        assert_eq!(split(r#"set-header X "a b""#), ["set-header", "X", "a b"]);
        assert_eq!(split(r#"fi"le" 'x y'z"#), ["file", "x yz"]);
        assert_eq!(split(r#"a "" b"#), ["a", "", "b"]);
        assert_eq!(split("a # b"), ["a"]);
        assert_eq!(split("a#b"), ["a"]);
        assert_eq!(split(r#""a#b""#), ["a#b"]);
        assert_eq!(
            split(r"path_reg ^/a\d+\.css$"),
            ["path_reg", r"^/a\d+\.css$"]
        );
        assert_eq!(split(r"f\ile"), [r"f\ile"]);
        assert_eq!(split(r"fi\ le a\#b"), ["fi le", "a#b"]);
        assert_eq!(split(r#"a\"b c\\d"#), [r#"a"b"#, r"c\d"]);
        assert_eq!(split(r#"'\x' "\$""#), [r"\x", "$"]);
    }

    #[test]
    fn words_refuse_what_could_hide_a_word() {
        for line in [
            r"fi\x6ce",
            r"a\tb",
            r"a\nb",
            r"a\rb",
            r"a\",
            r#""$HOME""#,
            r#""${HOME}""#,
            r#""a$""#,
            "${HOME}",
            "$HOME",
            r#""unmatched"#,
            "'unmatched",
        ] {
            assert!(words(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn legitimate_lines_are_accepted() {
        for line in [
            "option forwardfor",
            "no option httplog",
            "timeout client 30s",
            "http-request deny if { path_beg /admin }",
            r#"http-response set-header X-Msg "hello world""#,
            "http-request set-var(txn.host) req.hdr(host),lower",
            "http-request redirect scheme https code 301 if !{ ssl_fc }",
            "http-request return status 200 content-type text/plain string ok",
            "acl api path_beg -i /api",
            "acl static path_end .css",
            "compression algo gzip",
            "log global",
            "no log",
            "errorloc 503 https://status.example.com/",
            "http-error status 503 content-type text/plain string down",
            "stick-table type ip size 100k expire 30s store http_req_rate(10s)",
            "http-request track-sc0 src",
            "http-request deny deny_status 429 if { sc_http_req_rate(0) gt 100 }",
            "tcp-request inspect-delay 5s",
            "tcp-request content accept if HTTP",
            "unique-id-format %{+X}o\\ %ci:%cp",
            "# a comment",
        ] {
            assert_eq!(frontend(line), Ok(()), "{line:?}");
        }
        for line in [
            "server extra 10.0.0.9:8080 check weight 5",
            "server v6 [::1]:8080",
            "default-server inter 2s fall 3",
            "server-template web 1-3 app.internal:80 check",
            "http-check expect status 200",
            "http-check connect addr 10.0.0.1 port 80",
            "cookie SRV insert indirect nocache",
            "balance source",
            "hash-type consistent",
            "retries 5",
            "stick on src",
            "tcp-response content accept",
            "option httpchk GET /health",
        ] {
            assert_eq!(backend(line), Ok(()), "{line:?}");
        }
    }

    #[test]
    fn refusals_name_the_word_and_why() {
        let refusal = backend("filter spoe engine x config /etc/shadow").unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "\"filter\" is not allowed in a backend (loads a filter, which reads a configuration file)"
        );
        assert_eq!(
            frontend("http-request return status 200 file /etc/passwd")
                .unwrap_err()
                .word,
            "file"
        );
        assert_eq!(backend("use_backend x").unwrap_err().why, FRONTEND_ONLY);
        assert_eq!(
            frontend("server a 1.2.3.4:80").unwrap_err().why,
            BACKEND_ONLY
        );
    }

    #[test]
    fn files_sockets_programs_and_admin_paths_are_refused() {
        for line in [
            "bind 127.0.0.1:9999",
            "bind unix@/tmp/x mode 666",
            "stats enable",
            "stats admin if TRUE",
            "http-request use-service prometheus-exporter",
            "acl x src -f /etc/passwd",
            "acl x hdr(x) -M -f /etc/passwd",
            "http-request set-header X %[src,map_ip(/etc/passwd)]",
            "http-request set-header X %[src,map(/etc/passwd)]",
            "http-request set-header X %[env(HOME)]",
            "http-request return status 200 lf-file /etc/passwd",
            "http-request deny errorfile /etc/passwd",
            "http-request deny errorfiles x",
            "http-error status 500 file /etc/passwd",
            "errorfile 503 /etc/passwd",
            "http-request set-map(/tmp/x) a b",
            "http-request add-acl(/tmp/x) a",
            "http-request lua.f",
            "http-request set-var(txn.x) lua.f",
            "lua-load /tmp/x.lua",
            "http-request send-spoe-group a b",
            "log 127.0.0.1:514 local0",
            "log stdout format raw local0",
            "email-alert to a@b",
            "use_backend %[req.hdr(x)]",
            "option transparent",
            ".if 1",
            "b\"ind\" :1",
            "'bind' :1",
            "monitor-uri /x x unix@/tmp/y",
            "option external-check",
            "external-check command /bin/sh",
        ] {
            assert!(frontend(line).is_err(), "{line:?}");
        }
        for line in [
            "server x /var/run/admin.sock",
            "server x unix@/var/run/admin.sock",
            "server x abns@evil",
            "server x fd@3",
            "server x ${HOME}:80",
            "server x 1.2.3.4:443 ssl crt /etc/key.pem",
            "server x 1.2.3.4:443 ssl ca-file /etc/ca.pem",
            "server x 1.2.3.4:443 ssl verify required crl-file /etc/crl",
            "server x 1.2.3.4:80 source 0.0.0.0 usesrc clientip",
            "server x 1.2.3.4:80 socks4 unix@/x",
            "server x 1.2.3.4:80 agent-addr /x",
            "server x ./relative:80",
            "http-check connect addr /var/run/x",
            "tcp-check connect addr unix@/x",
            "source 0.0.0.0 usesrc clientip",
            "load-server-state-from-file local",
            "server-state-file-name /etc/passwd",
            "filter cache c",
            "dispatch 1.2.3.4:80",
            "tcp-request content use-service lua.x",
            "mode tcp",
        ] {
            assert!(backend(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn keywords_are_matched_as_haproxy_does() {
        // HAProxy's keywords are case-sensitive: `Bind` is no keyword, and
        // is refused as not listed rather than passed.
        assert_eq!(frontend("Bind :1").unwrap_err().why, NOT_LISTED);
        // Arguments naming files are refused in any case.
        assert!(frontend("http-request return FILE /x").is_err());
    }

    #[test]
    fn unrestricted_takes_what_2_1_took_on_the_word_haproxy_sees() {
        let unrestricted = |line| check(line, Section::Backend, NativesPolicy::Unrestricted);
        assert_eq!(unrestricted("filter spoe config /x"), Ok(()));
        assert_eq!(unrestricted("bind :1"), Ok(()));
        assert!(unrestricted(".if 0").is_err());
        assert!(unrestricted("log-forward x").is_err());
        assert!(unrestricted("\"backend\" x").is_err());
        assert!(unrestricted("b'ackend' x").is_err());
        assert!(
            unrestricted("global#").is_err(),
            "`#` ends the word: a section"
        );
        assert!(unrestricted("defaults#x").is_err());
    }

    #[test]
    fn a_client_cannot_choose_where_a_connection_goes() {
        for line in [
            "http-request set-dst hdr_ip(x-dst)",
            "http-request set-dst-port hdr(x-port)",
            "tcp-request content set-dst-port int(22)",
            "server x 0.0.0.0:0",
            "server x :0",
            "server x 0:0",
            "server x [::]:0",
            "server x ::",
            "server x 0x0:80",
            "server x 127.1:80",
            "server x 10.0.0.1:0",
            "server x 10.0.0.1:+1",
            "server x *:80",
            "http-check connect addr 0.0.0.0",
            "server x 127.0.0.1",
            "server x app.internal",
            "server x a.invalid:80 init-addr 0.0.0.0",
            "default-server init-addr 0.0.0.0",
            "server s [::ffff:0.0.0.0]:80",
            "server s ::ffff:0.0.0.0",
        ] {
            assert!(backend(line).is_err(), "{line:?} was accepted");
        }
        for line in [
            "server x 10.0.0.1:80",
            "server x [::1]:8080",
            "server x app.internal:80",
        ] {
            assert_eq!(backend(line), Ok(()), "{line:?}");
        }
    }

    #[test]
    fn regular_expressions_are_refused_in_natives() {
        for line in [
            "http-request deny if { req.hdr(x) -m reg ^(a|aa)+$ }",
            "acl slow path_reg ^(a|aa)+$",
            "acl slow hdr_reg(x) ^(a|aa)+$",
            "http-request replace-value x ^(a|aa)+$ y",
            "http-request replace-header x ^(a|aa)+$ y",
            "http-request replace-path ^(a|aa)+$ /",
            "http-request set-header y %[req.hdr(x),regsub(^(a|aa)+$,b)]",
            "http-check expect rstring ^(a|aa)+$",
            "tcp-check expect rbinary ^(a|aa)+$",
        ] {
            assert!(backend(line).is_err(), "{line:?} was accepted");
        }
        assert_eq!(backend("acl api path_beg /api"), Ok(()));
        assert_eq!(
            backend("http-request deny if { req.hdr(x) -m str bad }"),
            Ok(())
        );
    }

    #[test]
    fn key_files_are_refused_in_converters() {
        assert!(
            frontend(
                "http-request set-var(txn.x) req.hdr(authorization),jwt_verify(RS256,/dev/kmsg)"
            )
            .is_err()
        );
    }

    #[test]
    fn a_server_template_declares_at_most_256_servers() {
        assert_eq!(backend("server-template w 1-256 app.internal:80"), Ok(()));
        assert_eq!(backend("server-template w 256 app.internal:80"), Ok(()));
        for line in [
            "server-template w 1-257 app.internal:80",
            "server-template w 1-1000000 app.internal:80",
            "server-template w 5-1 app.internal:80",
            "server-template w x app.internal:80",
        ] {
            assert!(backend(line).is_err(), "{line:?} was accepted");
        }
        assert_eq!(servers_declared("server-template w 3-7 a:80"), Some(5));
        assert_eq!(servers_declared("server a 10.0.0.1:80"), Some(1));
        assert_eq!(servers_declared("timeout server 5s"), Some(0));
    }

    #[test]
    fn the_policy_reads_from_its_option_value() {
        assert_eq!("unrestricted".parse(), Ok(NativesPolicy::Unrestricted));
        assert_eq!("restricted".parse(), Ok(NativesPolicy::Restricted));
        assert!("open".parse::<NativesPolicy>().is_err());
    }
}
