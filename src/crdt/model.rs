//! The load-balancer configuration model: validated values, object keys,
//! fields, and the typed read view.
//!
//! Owns every type whose text can reach `haproxy.cfg`, each a newtype that
//! can only be built through validation (strict character sets, no
//! whitespace or newlines in identifiers, bounded lengths, ports 1–65535),
//! also when decoded from a peer. Must not know about dots, contexts or
//! replication; see `store.rs` for that.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value was refused. Carries the offending input, truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason} (got {input:?})")]
pub struct InvalidValue {
    /// Which kind of value (e.g. "name", "port").
    pub what: &'static str,
    /// What rule it broke.
    pub reason: &'static str,
    /// The input, cut to 64 characters.
    pub input: String,
}

impl InvalidValue {
    fn new(what: &'static str, reason: &'static str, input: &str) -> Self {
        Self {
            what,
            reason,
            input: input.chars().take(64).collect(),
        }
    }
}

/// Checks a string against a length bound and a per-character rule, and
/// that its first character is alphanumeric (so it cannot look like an
/// option such as `-f` or a comment).
fn check_identifier(
    what: &'static str,
    input: &str,
    max_len: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), InvalidValue> {
    if input.is_empty() {
        return Err(InvalidValue::new(what, "must not be empty", input));
    }
    if input.len() > max_len {
        return Err(InvalidValue::new(what, "too long", input));
    }
    if !input
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
    {
        return Err(InvalidValue::new(
            what,
            "must start with a letter or digit",
            input,
        ));
    }
    if !input.chars().all(allowed) {
        return Err(InvalidValue::new(
            what,
            "contains a character that is not allowed",
            input,
        ));
    }
    Ok(())
}

/// Defines a validated string newtype: constructor, `FromStr`, `Display`,
/// `as_str`, and serde through the same validation.
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `input`.
            pub fn new(input: &str) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> Result<(), InvalidValue> = $check;
                check(input).map(|()| Self(input.to_owned()))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(input: String) -> Result<Self, InvalidValue> {
                Self::new(&input)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(input: &str) -> Result<Self, InvalidValue> {
                Self::new(input)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A frontend or backend key; becomes an HAProxy section name.
    /// 1–64 characters of `[A-Za-z0-9._:-]`, starting with a letter or digit.
    Name,
    |s| check_identifier("name", s, 64, |c| c.is_ascii_alphanumeric() || "._:-".contains(c))
);

validated_string!(
    /// A registered service's name (`myapp`). Same rules as [`Name`].
    ServiceName,
    |s| check_identifier("service name", s, 64, |c| c.is_ascii_alphanumeric() || "._:-".contains(c))
);

validated_string!(
    /// A registered service's version (`1.0.0`, `2.0.0-rc.1+build5`).
    /// 1–64 characters of `[A-Za-z0-9._+-]`, starting with a letter or digit.
    Version,
    |s| check_identifier("version", s, 64, |c| c.is_ascii_alphanumeric() || "._+-".contains(c))
);

validated_string!(
    /// A host: an IPv4 address, an IPv6 address, or an RFC 1123 host name.
    Host,
    check_host
);

validated_string!(
    /// An HTTP header name for a rule (`host`, `x-canary`).
    HeaderName,
    |s| check_identifier("header name", s, 64, |c| c.is_ascii_alphanumeric() || "-_".contains(c))
);

validated_string!(
    /// The value of a routing rule's ACL: printable ASCII with no whitespace,
    /// quotes, backslash or `#`, at most 256 characters — one ACL pattern
    /// that cannot end the line or start a comment.
    AclValue,
    |s| check_printable("rule value", s, 256, |c| !c.is_ascii_whitespace() && !"#\"'\\".contains(c))
);

validated_string!(
    /// A health-check URI: starts with `/`, printable ASCII without
    /// whitespace, quotes, backslash or `#`, at most 256 characters.
    HttpPath,
    |s| {
        check_printable("health uri", s, 256, |c| !c.is_ascii_whitespace() && !"#\"'\\".contains(c))?;
        if s.starts_with('/') {
            Ok(())
        } else {
            Err(InvalidValue::new("health uri", "must start with '/'", s))
        }
    }
);

validated_string!(
    /// One raw HAProxy line from `natives`: a single line of printable
    /// ASCII, at most 512 characters, that does not open a new section.
    NativeLine,
    check_native_line
);

validated_string!(
    /// A registration's `meta` object as JSON text (the API checks that it
    /// is a JSON object); at most 4096 bytes. Never reaches `haproxy.cfg`.
    Meta,
    |s| {
        if s.len() > Meta::BYTES_MAX {
            Err(InvalidValue::new("meta", "longer than 4096 bytes", s))
        } else {
            Ok(())
        }
    }
);

impl Meta {
    /// Longest meta, in bytes (a bound of decoding).
    pub const BYTES_MAX: usize = 4096;
}

validated_string!(
    /// One word of peer-local HAProxy settings (a socket path, a stats
    /// user or password): printable ASCII without whitespace, quotes,
    /// backslash or `#`, at most 1024 characters.
    CfgWord,
    |s| check_printable("setting", s, 1024, |c| !c.is_ascii_whitespace() && !"#\"'\\".contains(c))
);

validated_string!(
    /// The arguments of HAProxy's `log` directive (`127.0.0.1:514 local0`,
    /// `stdout format raw local0`): one line of printable ASCII without
    /// quotes, backslash or `#`, at most 256 characters.
    LogTarget,
    |s| check_printable("log target", s, 256, |c| !"#\"'\\".contains(c))
);

fn check_printable(
    what: &'static str,
    input: &str,
    max_len: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), InvalidValue> {
    if input.is_empty() {
        return Err(InvalidValue::new(what, "must not be empty", input));
    }
    if input.len() > max_len {
        return Err(InvalidValue::new(what, "too long", input));
    }
    if !input.chars().all(|c| c.is_ascii_graphic() || c == ' ') || !input.chars().all(allowed) {
        return Err(InvalidValue::new(
            what,
            "contains a character that is not allowed",
            input,
        ));
    }
    Ok(())
}

/// Keywords that open a section in `haproxy.cfg` (HAProxy's manual,
/// section 2): a natives line starting with one would end the section it
/// was meant for. The first [`SECTION_KEYWORDS_SINCE_2_0`] are refused
/// wherever a natives line comes from, as since 2.0; the others were found
/// missing in 2.1 (by fuzzing) and, since a value that decoded once must
/// always decode, are refused for new writes only and rendered as comments
/// ([`NativeLine::refusal`]).
pub const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "program",
    "cache",
    "mailers",
    "ring",
    "http-errors",
    "crt-store",
    "traces",
    "log-forward",
    "fcgi-app",
];

/// How many of [`SECTION_KEYWORDS`] every decode refuses.
const SECTION_KEYWORDS_SINCE_2_0: usize = 15;

/// Whether `word` opens a section, among `keywords`.
pub(super) fn opens_section(word: &str, keywords: &[&str]) -> bool {
    keywords.iter().any(|k| word.eq_ignore_ascii_case(k))
}

fn check_native_line(input: &str) -> Result<(), InvalidValue> {
    check_printable("natives line", input, NativeLine::BYTES_MAX, |_| true)?;
    let first_word = input.split_whitespace().next().unwrap_or("");
    if first_word.is_empty() {
        return Err(InvalidValue::new(
            "natives line",
            "must not be blank",
            input,
        ));
    }
    if opens_section(first_word, &SECTION_KEYWORDS[..SECTION_KEYWORDS_SINCE_2_0]) {
        return Err(InvalidValue::new(
            "natives line",
            "must not open a new section",
            input,
        ));
    }
    Ok(())
}

fn check_host(input: &str) -> Result<(), InvalidValue> {
    if input.parse::<Ipv4Addr>().is_ok() || input.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    if input.is_empty() || input.len() > 253 {
        return Err(InvalidValue::new(
            "host",
            "must be 1 to 253 characters",
            input,
        ));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if input.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "host",
            "not an IP address or a valid host name",
            input,
        ))
    }
}

/// The most unbounded repetitions (`*`, `+`, `{n,}`) one pattern may hold:
/// with two, matching costs at most the square of the input's length,
/// which HAProxy's header buffer bounds.
const REGEX_UNBOUNDED_MAX: usize = 2;

/// Why `pattern` could make HAProxy's regex engine (PCRE2, backtracking)
/// run to its match limit on a short input, if it could: a repetition of
/// something that itself repeats or has alternatives (`(a|aa)+`, `(a+)*`:
/// exponential backtracking), more than [`REGEX_UNBOUNDED_MAX`] unbounded
/// repetitions, or a pattern this check cannot read (PCRE's lookaround and
/// back-references among them). One request whose multi-valued header
/// makes such a pattern backtrack on every value holds a worker until
/// HAProxy's watchdog kills it, with every frontend of the peer.
pub fn regex_hazard(pattern: &str) -> Option<&'static str> {
    use regex_syntax::ast::{Ast, RepetitionKind, RepetitionRange};

    /// Whether `ast` repeats or branches anywhere inside.
    fn repeats_or_branches(ast: &Ast) -> bool {
        match ast {
            Ast::Repetition(_) | Ast::Alternation(_) => true,
            Ast::Group(group) => repeats_or_branches(&group.ast),
            Ast::Concat(concat) => concat.asts.iter().any(repeats_or_branches),
            _ => false,
        }
    }
    /// The unbounded repetitions in `ast`, or a nested repetition.
    fn walk(ast: &Ast, unbounded: &mut usize) -> Result<(), &'static str> {
        match ast {
            Ast::Repetition(repetition) => {
                if repeats_or_branches(&repetition.ast) {
                    return Err(
                        "a repetition of something that repeats or has alternatives \
                         (exponential backtracking)",
                    );
                }
                if matches!(
                    repetition.op.kind,
                    RepetitionKind::ZeroOrMore
                        | RepetitionKind::OneOrMore
                        | RepetitionKind::Range(RepetitionRange::AtLeast(_))
                ) {
                    *unbounded += 1;
                }
                Ok(())
            }
            Ast::Group(group) => walk(&group.ast, unbounded),
            Ast::Concat(concat) => concat.asts.iter().try_for_each(|a| walk(a, unbounded)),
            Ast::Alternation(alternation) => {
                alternation.asts.iter().try_for_each(|a| walk(a, unbounded))
            }
            _ => Ok(()),
        }
    }
    let Ok(ast) = regex_syntax::ast::parse::Parser::new().parse(pattern) else {
        return Some("a regular expression this check cannot read (lookaround, back-references…)");
    };
    let mut unbounded = 0;
    if let Err(why) = walk(&ast, &mut unbounded) {
        return Some(why);
    }
    (unbounded > REGEX_UNBOUNDED_MAX)
        .then_some("more than two unbounded repetitions (*, +, {n,}) in one pattern")
}

/// A TCP port, 1–65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Port(NonZeroU16);

impl Port {
    /// Validates a port number given as any integer (so that 0, 65536 and
    /// negative numbers are all refused with one message).
    pub fn new(port: i64) -> Result<Self, InvalidValue> {
        u16::try_from(port)
            .ok()
            .and_then(NonZeroU16::new)
            .map(Port)
            .ok_or_else(|| {
                InvalidValue::new("port", "must be between 1 and 65535", &port.to_string())
            })
    }

    /// The port number.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

impl TryFrom<u16> for Port {
    type Error = InvalidValue;
    fn try_from(port: u16) -> Result<Self, InvalidValue> {
        Port::new(i64::from(port))
    }
}

impl From<Port> for u16 {
    fn from(port: Port) -> u16 {
        port.get()
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The host part of a bind address: `*` (every address) or a host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BindHost {
    /// `*`: listen on every address.
    Any,
    /// One address or host name.
    Host(Host),
}

/// One `host:port` a frontend listens on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bind {
    /// Where to listen.
    pub host: BindHost,
    /// Which port.
    pub port: Port,
}

/// A frontend's listen addresses: 1–16 of them, parsed from the API's
/// comma-separated `host:port` list (`*:80,[::1]:8080`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<Bind>", into = "Vec<Bind>")]
pub struct Binds(Vec<Bind>);

impl Binds {
    /// Parses `host:port[,host:port]...`.
    pub fn parse(input: &str) -> Result<Self, InvalidValue> {
        let binds = input
            .split(',')
            .map(|part| {
                // Spaces around an item (`*:80, *:81`) are fine; any other
                // whitespace (a newline, a tab) is refused with the item.
                let part = part.trim_matches(' ');
                let (host, port) = part
                    .rsplit_once(':')
                    .ok_or_else(|| InvalidValue::new("bind", "expected host:port", part))?;
                let port = port
                    .parse::<i64>()
                    .map_err(|_| InvalidValue::new("bind", "port is not a number", part))
                    .and_then(Port::new)?;
                let host = match host {
                    "*" | "" => BindHost::Any,
                    bracketed if bracketed.starts_with('[') && bracketed.ends_with(']') => {
                        BindHost::Host(Host::new(&bracketed[1..bracketed.len() - 1])?)
                    }
                    plain => BindHost::Host(Host::new(plain)?),
                };
                Ok(Bind { host, port })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::try_from(binds)
    }

    /// The addresses.
    pub fn as_slice(&self) -> &[Bind] {
        &self.0
    }
}

impl TryFrom<Vec<Bind>> for Binds {
    type Error = InvalidValue;
    fn try_from(binds: Vec<Bind>) -> Result<Self, InvalidValue> {
        if binds.is_empty() || binds.len() > 16 {
            return Err(InvalidValue::new(
                "bind",
                "must list 1 to 16 addresses",
                &format!("{} addresses", binds.len()),
            ));
        }
        Ok(Binds(binds))
    }
}

impl From<Binds> for Vec<Bind> {
    fn from(binds: Binds) -> Self {
        binds.0
    }
}

impl fmt::Display for Binds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, bind) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match &bind.host {
                BindHost::Any => write!(f, "*:{}", bind.port)?,
                BindHost::Host(h) if h.as_str().contains(':') => write!(f, "[{h}]:{}", bind.port)?,
                BindHost::Host(h) => write!(f, "{h}:{}", bind.port)?,
            }
        }
        Ok(())
    }
}

/// Proxy mode.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Mode {
    /// Layer 7 (the default).
    #[default]
    Http,
    /// Layer 4.
    Tcp,
}

/// Frontend connection handling.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Keepalive {
    /// HAProxy's default (keep-alive).
    #[default]
    Default,
    /// `option httpclose`.
    Close,
    /// `option http-server-close`.
    ServerClose,
}

/// Load-balancing algorithm. Only algorithms that HAProxy accepts without
/// arguments.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum Balance {
    /// `roundrobin` (the default).
    #[default]
    Roundrobin,
    /// `static-rr`.
    StaticRr,
    /// `leastconn`.
    Leastconn,
    /// `first`.
    First,
    /// `source`.
    Source,
    /// `uri`.
    Uri,
    /// `random`.
    Random,
}

/// Whether a backend's members are listed (static) or follow registrations
/// of a service name and version (dynamic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BackendType {
    /// Members are given explicitly.
    Static,
    /// Members are the live registrations of `name`@`version`.
    Dynamic,
}

/// Which part of a request a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RuleOperation {
    /// Exact path.
    Path,
    /// Path prefix.
    PathBeg,
    /// Path regular expression.
    PathReg,
    /// Exact URL.
    Url,
    /// URL prefix.
    UrlBeg,
    /// URL regular expression.
    UrlReg,
    /// Exact header value.
    Hdr,
    /// Header value prefix.
    HdrBeg,
    /// Header value suffix.
    HdrEnd,
    /// Header value contains a domain (`hdr_dom`).
    HdrDom,
    /// Header value substring.
    HdrSub,
    /// Header value regular expression.
    HdrReg,
}

impl RuleOperation {
    /// Whether the value is a regular expression.
    pub fn is_regex(self) -> bool {
        matches!(self, Self::PathReg | Self::UrlReg | Self::HdrReg)
    }

    /// Whether the operation matches a header (and so needs a header name).
    pub fn is_header(self) -> bool {
        matches!(
            self,
            Self::Hdr | Self::HdrBeg | Self::HdrEnd | Self::HdrDom | Self::HdrSub | Self::HdrReg
        )
    }
}

/// A routing rule: requests matching it go to `backend` instead of the
/// frontend's default. `header` is present exactly for header operations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RuleParts", into = "RuleParts")]
pub struct Rule {
    operation: RuleOperation,
    header: Option<HeaderName>,
    value: AclValue,
    backend: Name,
}

#[derive(Serialize, Deserialize)]
struct RuleParts(RuleOperation, Option<HeaderName>, AclValue, Name);

impl Rule {
    /// Builds a rule, checking that a header name is given exactly when the
    /// operation matches a header.
    pub fn new(
        operation: RuleOperation,
        header: Option<HeaderName>,
        value: AclValue,
        backend: Name,
    ) -> Result<Self, InvalidValue> {
        if operation.is_header() != header.is_some() {
            return Err(InvalidValue::new(
                "rule",
                "a header name is required for header operations and only for them",
                value.as_str(),
            ));
        }
        Ok(Rule {
            operation,
            header,
            value,
            backend,
        })
    }

    /// The match operation.
    pub fn operation(&self) -> RuleOperation {
        self.operation
    }
    /// The header matched, for header operations.
    pub fn header(&self) -> Option<&HeaderName> {
        self.header.as_ref()
    }
    /// The ACL pattern.
    pub fn value(&self) -> &AclValue {
        &self.value
    }
    /// Why this rule's regular expression could stall HAProxy, if it is
    /// one that could ([`regex_hazard`]); new API writes refuse it.
    /// Decoding does not (a value that decoded once always decodes).
    pub fn regex_hazard(&self) -> Option<&'static str> {
        if self.operation.is_regex() {
            regex_hazard(self.value.as_str())
        } else {
            None
        }
    }
    /// Where matching requests go.
    pub fn backend(&self) -> &Name {
        &self.backend
    }
}

impl TryFrom<RuleParts> for Rule {
    type Error = InvalidValue;
    fn try_from(RuleParts(op, header, value, backend): RuleParts) -> Result<Self, InvalidValue> {
        Rule::new(op, header, value, backend)
    }
}

impl From<Rule> for RuleParts {
    fn from(rule: Rule) -> Self {
        RuleParts(rule.operation, rule.header, rule.value, rule.backend)
    }
}

/// A bounded list (rules, natives). Decoding refuses more than `MAX` items.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<T>", into = "Vec<T>")]
#[serde(bound(
    serialize = "T: Clone + Serialize",
    deserialize = "T: Deserialize<'de>"
))]
pub struct BoundedList<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> BoundedList<T, MAX> {
    /// The items.
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
}

impl<T, const MAX: usize> Default for BoundedList<T, MAX> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T, const MAX: usize> TryFrom<Vec<T>> for BoundedList<T, MAX> {
    type Error = InvalidValue;
    fn try_from(items: Vec<T>) -> Result<Self, InvalidValue> {
        if items.len() > MAX {
            return Err(InvalidValue::new(
                "list",
                "too many items",
                &format!("{} items, at most {MAX}", items.len()),
            ));
        }
        Ok(Self(items))
    }
}

impl<T, const MAX: usize> From<BoundedList<T, MAX>> for Vec<T> {
    fn from(list: BoundedList<T, MAX>) -> Self {
        list.0
    }
}

/// A frontend's routing rules, at most 256.
pub type Rules = BoundedList<Rule, 256>;
/// Raw HAProxy lines of a section, at most [`NATIVES_MAX`].
pub type Natives = BoundedList<NativeLine, NATIVES_MAX>;
/// Most lines one section's natives may hold (a bound of decoding).
pub const NATIVES_MAX: usize = 64;

pub use super::natives::{NativesPolicy, Refusal as NativeRefusal, Section};

impl NativeLine {
    /// Longest line, in bytes.
    pub const BYTES_MAX: usize = 512;

    /// Why this line may not be rendered into a section of `section`'s
    /// kind under `policy` ([`super::natives::check`]), if it may not: new
    /// API writes refuse it and the renderer writes it as a comment.
    /// Decoding keeps accepting every line 2.0 accepted, since peers and
    /// stores may hold some (the compatibility policy: a value that
    /// decoded once always decodes).
    pub fn refusal(&self, section: Section, policy: NativesPolicy) -> Option<NativeRefusal> {
        super::natives::check(self.as_str(), section, policy).err()
    }
}

/// HTTP method of a health check.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum HealthMethod {
    /// `GET` (the default).
    #[default]
    Get,
    /// `POST`.
    Post,
}

/// HTTP version of a health check.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum HttpVersion {
    /// `HTTP/1.0` (the default).
    #[default]
    Http10,
    /// `HTTP/1.1` (needs the backend's `host`).
    Http11,
}

/// A backend's HTTP health check.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "HealthParts", into = "HealthParts")]
pub struct Health {
    method: HealthMethod,
    uri: HttpPath,
    http_version: HttpVersion,
    interval_ms: u32,
}

#[derive(Serialize, Deserialize)]
struct HealthParts(HealthMethod, HttpPath, HttpVersion, u32);

impl Health {
    /// Smallest accepted check interval.
    pub const INTERVAL_MIN_MS: u32 = 100;
    /// Largest accepted check interval (one hour).
    pub const INTERVAL_MAX_MS: u32 = 3_600_000;

    /// Builds a health check, bounding the interval.
    pub fn new(
        method: HealthMethod,
        uri: HttpPath,
        http_version: HttpVersion,
        interval_ms: u32,
    ) -> Result<Self, InvalidValue> {
        if !(Self::INTERVAL_MIN_MS..=Self::INTERVAL_MAX_MS).contains(&interval_ms) {
            return Err(InvalidValue::new(
                "health interval",
                "must be between 100 and 3600000 ms",
                &interval_ms.to_string(),
            ));
        }
        Ok(Health {
            method,
            uri,
            http_version,
            interval_ms,
        })
    }

    /// The method.
    pub fn method(&self) -> HealthMethod {
        self.method
    }
    /// The URI.
    pub fn uri(&self) -> &HttpPath {
        &self.uri
    }
    /// The HTTP version.
    pub fn http_version(&self) -> HttpVersion {
        self.http_version
    }
    /// Milliseconds between checks.
    pub fn interval_ms(&self) -> u32 {
        self.interval_ms
    }
}

impl Default for Health {
    /// API.md's defaults: `GET / HTTP/1.0` every 2000 ms.
    fn default() -> Self {
        Health {
            method: HealthMethod::Get,
            uri: HttpPath("/".to_owned()),
            http_version: HttpVersion::Http10,
            interval_ms: 2000,
        }
    }
}

impl TryFrom<HealthParts> for Health {
    type Error = InvalidValue;
    fn try_from(HealthParts(m, u, v, i): HealthParts) -> Result<Self, InvalidValue> {
        Health::new(m, u, v, i)
    }
}

impl From<Health> for HealthParts {
    fn from(h: Health) -> Self {
        HealthParts(h.method, h.uri, h.http_version, h.interval_ms)
    }
}

/// A member's weight, 0–256 (HAProxy's range; 0 takes no new traffic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Weight(u16);

impl Weight {
    /// Validates a weight.
    pub fn new(weight: i64) -> Result<Self, InvalidValue> {
        u16::try_from(weight)
            .ok()
            .filter(|w| *w <= 256)
            .map(Weight)
            .ok_or_else(|| {
                InvalidValue::new("weight", "must be between 0 and 256", &weight.to_string())
            })
    }
    /// The weight.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl Default for Weight {
    fn default() -> Self {
        Weight(1)
    }
}

impl TryFrom<u16> for Weight {
    type Error = InvalidValue;
    fn try_from(w: u16) -> Result<Self, InvalidValue> {
        Weight::new(i64::from(w))
    }
}

impl From<Weight> for u16 {
    fn from(w: Weight) -> u16 {
        w.0
    }
}

/// A member's administrative state.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum MemberState {
    /// Takes traffic (the default).
    #[default]
    Ready,
    /// Finishes its sessions, takes no new ones.
    Drain,
    /// Out of service.
    Maint,
}

/// The peer that takes a registration's heartbeats (its gossip id): while
/// it is up, it vouches for the registration and decides its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnerId(pub u64);

/// A registration's lease: when it was last renewed (wall-clock ms of the
/// peer that took the heartbeat), for how long it lives, and which peer
/// takes its heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(
    try_from = "(u64, u32, Option<OwnerId>)",
    into = "(u64, u32, Option<OwnerId>)"
)]
pub struct Lease {
    renewed_at_ms: u64,
    ttl_ms: u32,
    owner: Option<OwnerId>,
}

impl Lease {
    /// Shortest accepted lease (one second).
    pub const TTL_MIN_MS: u32 = 1_000;
    /// Longest accepted lease (one day).
    pub const TTL_MAX_MS: u32 = 86_400_000;

    /// Builds a lease with no owner, bounding its length.
    pub fn new(renewed_at_ms: u64, ttl_ms: u32) -> Result<Self, InvalidValue> {
        if !(Self::TTL_MIN_MS..=Self::TTL_MAX_MS).contains(&ttl_ms) {
            return Err(InvalidValue::new(
                "lease",
                "must last 1 s to 1 day",
                &format!("{ttl_ms} ms"),
            ));
        }
        Ok(Lease {
            renewed_at_ms,
            ttl_ms,
            owner: None,
        })
    }
    /// The same lease, its heartbeats taken by `owner`.
    pub fn owned_by(self, owner: OwnerId) -> Lease {
        Lease {
            owner: Some(owner),
            ..self
        }
    }
    /// The same lease, renewed at `at_ms`.
    pub fn renewed_at(self, at_ms: u64) -> Lease {
        Lease {
            renewed_at_ms: at_ms,
            ..self
        }
    }
    /// Wall-clock ms of the last renewal.
    pub fn renewed_at_ms(self) -> u64 {
        self.renewed_at_ms
    }
    /// Lease length in ms.
    pub fn ttl_ms(self) -> u32 {
        self.ttl_ms
    }
    /// The peer that takes its heartbeats, if any.
    pub fn owner(self) -> Option<OwnerId> {
        self.owner
    }
    /// Wall-clock ms of the last instant the lease is live.
    pub fn expires_at_ms(self) -> u64 {
        self.renewed_at_ms.saturating_add(u64::from(self.ttl_ms))
    }
}

impl TryFrom<(u64, u32, Option<OwnerId>)> for Lease {
    type Error = InvalidValue;
    fn try_from((at, ttl, owner): (u64, u32, Option<OwnerId>)) -> Result<Self, InvalidValue> {
        Ok(Lease {
            owner,
            ..Lease::new(at, ttl)?
        })
    }
}

impl From<Lease> for (u64, u32, Option<OwnerId>) {
    fn from(l: Lease) -> Self {
        (l.renewed_at_ms, l.ttl_ms, l.owner)
    }
}

/// What this peer knows of registration owners, from membership: which are
/// up, and for the others (suspected or down) since when this peer has
/// seen them so, on its own wall clock. Only facts this peer observed
/// itself, so no two peers' clocks are compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    /// This peer (always up for itself).
    pub me: Option<OwnerId>,
    /// Peers membership holds alive.
    pub up: BTreeSet<OwnerId>,
    /// Peers suspected or down, with the wall-clock ms since which this
    /// peer has seen them so (after having seen them up).
    pub silent_since_ms: BTreeMap<OwnerId, u64>,
    /// Whether owners this peer does not know are taken as up: while it is
    /// starting and has not heard from the mesh yet, it serves what it has
    /// rather than dropping every instance of every other peer.
    pub unknown_up: bool,
}

/// Renewals of a registration's lease in the replicated state while its
/// owner is up and heartbeats arrive: at least this often. A registration
/// whose owner this peer does not know at all (it joined after the owner
/// was forgotten) is live while renewed within lease + this + skew.
pub const LEASE_RENEWAL_MS: u64 = 30_000;
/// How far two peers' wall clocks may disagree without a registration
/// flapping on a peer that judges another peer's renewal time.
pub const CLOCK_SKEW_MS: u64 = 1_000;

impl Owners {
    /// Until when (wall-clock ms, inclusive) a registration with `lease` is
    /// live here, or `None` while its owner is up and vouches for it.
    ///
    /// - owner up (or this peer): live until the owner removes it (it does
    ///   so itself when heartbeats stop: one clock, no skew);
    /// - owner suspected or down: live for one lease from when this peer
    ///   first saw it so (the instance may fail over to another peer
    ///   meanwhile; the grace is membership's time to suspect a dead peer);
    /// - owner unknown, or none: live while the last replicated renewal is
    ///   recent (renewals come every [`LEASE_RENEWAL_MS`]), or while this
    ///   peer is starting (`unknown_up`).
    pub fn live_until_ms(&self, lease: Lease) -> Option<u64> {
        let ttl = u64::from(lease.ttl_ms());
        match lease.owner() {
            Some(owner) if self.me == Some(owner) || self.up.contains(&owner) => None,
            Some(owner) if self.silent_since_ms.contains_key(&owner) => {
                Some(self.silent_since_ms[&owner].saturating_add(ttl))
            }
            _ if self.unknown_up => None,
            _ => Some(
                lease
                    .expires_at_ms()
                    .saturating_add(LEASE_RENEWAL_MS + CLOCK_SKEW_MS),
            ),
        }
    }
}

/// Identity of a registered service instance: `/name/version/host/port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RegistrationKey {
    /// Service name.
    pub service: ServiceName,
    /// Service version.
    pub version: Version,
    /// Instance host.
    pub host: Host,
    /// Instance port.
    pub port: Port,
}

impl std::fmt::Display for RegistrationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "/{}/{}/{}/{}",
            self.service, self.version, self.host, self.port
        )
    }
}

/// Identity of a static member: its backend and address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberKey {
    /// The backend it belongs to.
    pub backend: Name,
    /// Member host.
    pub host: Host,
    /// Member port.
    pub port: Port,
}

/// The key of one replicated object. Ordered: frontends, backends, members,
/// registrations, each by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ObjectKey {
    /// A frontend.
    Frontend(Name),
    /// A backend.
    Backend(Name),
    /// A static member of a backend.
    Member(MemberKey),
    /// A registered service instance.
    Registration(RegistrationKey),
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectKey::Frontend(n) => write!(f, "frontend {n}"),
            ObjectKey::Backend(n) => write!(f, "backend {n}"),
            ObjectKey::Member(m) => {
                write!(f, "member {}:{} of backend {}", m.host, m.port, m.backend)
            }
            ObjectKey::Registration(r) => write!(f, "registration {r}"),
        }
    }
}

impl ObjectKey {
    /// A key ordered before every member of `backend` and after every key
    /// that precedes them: the start of a range scan over its members.
    pub(crate) fn first_member_of(backend: &Name) -> ObjectKey {
        ObjectKey::Member(MemberKey {
            backend: backend.clone(),
            host: Host(String::new()),
            port: Port(NonZeroU16::MIN),
        })
    }

    /// A key ordered before every backend and after every frontend.
    pub(crate) fn first_backend() -> ObjectKey {
        ObjectKey::Backend(Name(String::new()))
    }

    /// A key ordered before every registration of `service` and after
    /// every key that precedes them (no valid name is empty).
    pub(crate) fn first_registration_of(service: &ServiceName) -> ObjectKey {
        ObjectKey::Registration(RegistrationKey {
            service: service.clone(),
            version: Version(String::new()),
            host: Host(String::new()),
            port: Port(NonZeroU16::MIN),
        })
    }

    /// A key ordered before every registration.
    pub(crate) fn first_registration() -> ObjectKey {
        ObjectKey::first_registration_of(&ServiceName(String::new()))
    }
}

/// A field of an object. Each object kind has a fixed set of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FieldId {
    /// Frontend: listen addresses.
    Bind,
    /// Frontend: default backend.
    DefaultBackend,
    /// Frontend and backend: proxy mode.
    Mode,
    /// Frontend: connection handling.
    Keepalive,
    /// Frontend: routing rules.
    Rules,
    /// Frontend and backend: raw HAProxy lines.
    Natives,
    /// Backend: static or dynamic.
    BackendType,
    /// Backend (dynamic): followed service name.
    Service,
    /// Backend (dynamic): followed service version.
    Version,
    /// Backend: balance algorithm.
    Balance,
    /// Backend: Host header rewrite.
    HostHeader,
    /// Backend: health check.
    Health,
    /// Member: weight.
    Weight,
    /// Member: administrative state.
    State,
    /// Registration: metadata.
    Meta,
    /// Registration: lease.
    Lease,
}

impl FieldId {
    /// Whether an object of `key`'s kind may have this field.
    pub fn allowed_in(self, key: &ObjectKey) -> bool {
        use FieldId::*;
        match key {
            ObjectKey::Frontend(_) => matches!(
                self,
                Bind | DefaultBackend | Mode | Keepalive | Rules | Natives
            ),
            ObjectKey::Backend(_) => matches!(
                self,
                BackendType | Service | Version | Balance | HostHeader | Mode | Natives | Health
            ),
            ObjectKey::Member(_) => matches!(self, Weight | State),
            ObjectKey::Registration(_) => matches!(self, Meta | Lease),
        }
    }
}

/// The value of one field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[allow(missing_docs)] // each variant is the value of the FieldId of the same name
pub enum FieldValue {
    Bind(Binds),
    DefaultBackend(Name),
    Mode(Mode),
    Keepalive(Keepalive),
    Rules(Rules),
    Natives(Natives),
    BackendType(BackendType),
    Service(ServiceName),
    Version(Version),
    Balance(Balance),
    HostHeader(Host),
    Health(Health),
    Weight(Weight),
    State(MemberState),
    Meta(Meta),
    Lease(Lease),
}

impl FieldValue {
    /// The field this value belongs to.
    pub fn field(&self) -> FieldId {
        match self {
            FieldValue::Bind(_) => FieldId::Bind,
            FieldValue::DefaultBackend(_) => FieldId::DefaultBackend,
            FieldValue::Mode(_) => FieldId::Mode,
            FieldValue::Keepalive(_) => FieldId::Keepalive,
            FieldValue::Rules(_) => FieldId::Rules,
            FieldValue::Natives(_) => FieldId::Natives,
            FieldValue::BackendType(_) => FieldId::BackendType,
            FieldValue::Service(_) => FieldId::Service,
            FieldValue::Version(_) => FieldId::Version,
            FieldValue::Balance(_) => FieldId::Balance,
            FieldValue::HostHeader(_) => FieldId::HostHeader,
            FieldValue::Health(_) => FieldId::Health,
            FieldValue::Weight(_) => FieldId::Weight,
            FieldValue::State(_) => FieldId::State,
            FieldValue::Meta(_) => FieldId::Meta,
            FieldValue::Lease(_) => FieldId::Lease,
        }
    }
}

/// A frontend as the API and the renderer see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frontend {
    /// Listen addresses.
    pub bind: Binds,
    /// Default backend.
    pub backend: Name,
    /// Proxy mode.
    pub mode: Mode,
    /// Connection handling.
    pub keepalive: Keepalive,
    /// Routing rules, in order.
    pub rules: Rules,
    /// Raw HAProxy lines.
    pub natives: Natives,
}

/// A backend as the API and the renderer see it (members included).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Static or dynamic.
    pub kind: BackendType,
    /// Followed service (dynamic).
    pub service: Option<ServiceName>,
    /// Followed version (dynamic).
    pub version: Option<Version>,
    /// Balance algorithm.
    pub balance: Balance,
    /// Host header rewrite.
    pub host: Option<Host>,
    /// Proxy mode.
    pub mode: Mode,
    /// Raw HAProxy lines.
    pub natives: Natives,
    /// Health check.
    pub health: Health,
    /// Static members by address, in address order.
    pub members: BTreeMap<(Host, Port), Member>,
}

impl Backend {
    /// Most static members the API lets one backend have. Each write of a
    /// backend is rendered and checked by `haproxy -c` while the client
    /// waits, and that grows with the members: 20,000 (what fits in the
    /// default 1 MiB body) took longer than a client's 5 s timeout; 4096
    /// take `haproxy -c` about a second (0.75–1.3 s, three runs on the
    /// 2-core test machine).
    pub const MEMBERS_MAX: usize = 4096;
}

/// A static member's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Weight.
    pub weight: Weight,
    /// Administrative state.
    pub state: MemberState,
}

/// A registered service instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The caller's metadata (JSON text).
    pub meta: Meta,
    /// Its lease.
    pub lease: Lease,
}

/// The whole configuration as every reader sees it: sorted, one value per
/// field (the deterministic winner of any concurrent writes), and only
/// complete objects. This is what the API lists and what HAProxy renders.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigView {
    /// Frontends by key.
    pub frontends: BTreeMap<Name, Frontend>,
    /// Backends by key.
    pub backends: BTreeMap<Name, Backend>,
    /// Registrations by identity.
    pub registrations: BTreeMap<RegistrationKey, Registration>,
    /// What the peer that made this view knows of registration owners
    /// (not replicated state: each peer's own membership view), which
    /// decides which registrations are live.
    #[serde(skip)]
    pub owners: Owners,
}

/// The resolved fields of every object (one winning value per field).
pub type ResolvedFields = BTreeMap<ObjectKey, BTreeMap<FieldId, FieldValue>>;

impl ConfigView {
    /// Builds the typed view from resolved fields.
    ///
    /// An object whose required fields are missing — possible after an
    /// object removal raced a field write, where the written field survives
    /// alone (DESIGN.md's remove-vs-update rule) — is left out, as is a
    /// member whose backend does not exist. The rule is a pure function of
    /// the fields, so every peer leaves out the same objects.
    pub fn from_fields(fields: &ResolvedFields) -> Self {
        let mut view = ConfigView::default();
        let mut members = Vec::new();
        for (key, f) in fields {
            macro_rules! get {
                ($variant:ident) => {
                    match f.get(&FieldId::$variant) {
                        Some(FieldValue::$variant(v)) => Some(v.clone()),
                        _ => None,
                    }
                };
            }
            match key {
                ObjectKey::Frontend(name) => {
                    let (Some(bind), Some(backend)) = (get!(Bind), get!(DefaultBackend)) else {
                        continue;
                    };
                    view.frontends.insert(
                        name.clone(),
                        Frontend {
                            bind,
                            backend,
                            mode: get!(Mode).unwrap_or_default(),
                            keepalive: get!(Keepalive).unwrap_or_default(),
                            rules: get!(Rules).unwrap_or_default(),
                            natives: get!(Natives).unwrap_or_default(),
                        },
                    );
                }
                ObjectKey::Backend(name) => {
                    let Some(kind) = get!(BackendType) else {
                        continue;
                    };
                    view.backends.insert(
                        name.clone(),
                        Backend {
                            kind,
                            service: get!(Service),
                            version: get!(Version),
                            balance: get!(Balance).unwrap_or_default(),
                            host: get!(HostHeader),
                            mode: get!(Mode).unwrap_or_default(),
                            natives: get!(Natives).unwrap_or_default(),
                            health: get!(Health).unwrap_or_default(),
                            members: BTreeMap::new(),
                        },
                    );
                }
                ObjectKey::Member(member) => {
                    let settings = Member {
                        weight: get!(Weight).unwrap_or_default(),
                        state: get!(State).unwrap_or_default(),
                    };
                    members.push((member, settings));
                }
                ObjectKey::Registration(reg) => {
                    // A registration is written whole (meta and lease); a
                    // lease alone is a renewal that raced a removal.
                    let (Some(lease), Some(meta)) = (get!(Lease), get!(Meta)) else {
                        continue;
                    };
                    view.registrations
                        .insert(reg.clone(), Registration { meta, lease });
                }
            }
        }
        for (member, settings) in members {
            if let Some(backend) = view.backends.get_mut(&member.backend) {
                backend
                    .members
                    .insert((member.host.clone(), member.port), settings);
            }
        }
        view
    }
}

/// One service version's live instances, by host and port.
type Instances<'a> = Vec<(&'a RegistrationKey, &'a Registration)>;

/// The registrations whose lease has not run out, by service and version.
pub struct LiveRegistrations<'a> {
    by_service: BTreeMap<&'a ServiceName, BTreeMap<&'a Version, Instances<'a>>>,
}

impl<'a> LiveRegistrations<'a> {
    /// Those of `view` live at wall-clock `now_ms`, by what the view's
    /// peer knows of their owners ([`Owners::live_until_ms`]).
    pub fn new(view: &'a ConfigView, now_ms: u64) -> Self {
        let owners = &view.owners;
        let mut by_service: BTreeMap<_, BTreeMap<_, Instances<'a>>> = BTreeMap::new();
        for (key, registration) in &view.registrations {
            if owners
                .live_until_ms(registration.lease)
                .is_none_or(|until| now_ms <= until)
            {
                by_service
                    .entry(&key.service)
                    .or_default()
                    .entry(&key.version)
                    .or_default()
                    .push((key, registration));
            }
        }
        LiveRegistrations { by_service }
    }

    /// The live instances of `service`@`version`, by host and port.
    pub fn of(
        &self,
        service: &ServiceName,
        version: &Version,
    ) -> &[(&'a RegistrationKey, &'a Registration)] {
        self.by_service
            .get(service)
            .and_then(|versions| versions.get(version))
            .map_or(&[], Vec::as_slice)
    }

    /// The earliest wall-clock ms after `now_ms` at which a live
    /// registration of `view` expires (when the live set next changes by
    /// itself, as long as the view's owners stay as they are).
    pub fn next_expiry(view: &ConfigView, now_ms: u64) -> Option<u64> {
        view.registrations
            .values()
            .filter_map(|registration| view.owners.live_until_ms(registration.lease))
            .filter(|&until| until >= now_ms)
            .min()
            .map(|until| until + 1)
    }

    /// Every live registration, in key order.
    pub fn all(&self) -> impl Iterator<Item = (&'a RegistrationKey, &'a Registration)> + '_ {
        self.by_service
            .values()
            .flat_map(BTreeMap::values)
            .flatten()
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_whitespace_newlines_and_leading_punctuation() {
        for bad in [
            "",
            "a b",
            "a\nb",
            "-f",
            "web\r",
            "x#y",
            &"a".repeat(65),
            "é",
        ] {
            assert!(Name::new(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["web", "api-v2", "be_live.1", "svc:8080"] {
            assert!(Name::new(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn ports_outside_1_to_65535_are_refused() {
        for bad in [0, 65536, -1] {
            assert!(Port::new(bad).is_err());
        }
        assert_eq!(Port::new(65535).unwrap().get(), 65535);
    }

    #[test]
    fn hosts_accept_addresses_and_host_names_only() {
        for good in ["10.0.0.5", "::1", "example.com", "a-b.c"] {
            assert!(Host::new(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a..b", "-a.com", "a b", "exa_mple.com", "1.2.3.4\n"] {
            assert!(Host::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn regexes_that_backtrack_exponentially_are_hazards_and_plain_ones_are_not() {
        for safe in [
            "^/api/.*$",
            "^/(v1|v2)/users$",
            "^[a-z]+@[a-z]+$",
            "(ab)+",
            "x{2,5}",
            "^/static/",
        ] {
            assert_eq!(regex_hazard(safe), None, "{safe}");
        }
        for hazard in [
            "^(a|aa)+$",
            "(a+)+",
            "(a*)*b",
            "(x?)+",
            "((ab)+)+",
            "(a|b){2,}",
            "a*b*c*d",
            "(?=x)y",
            "(a)\\1",
            "[unclosed",
        ] {
            assert!(regex_hazard(hazard).is_some(), "{hazard}");
        }
    }

    #[test]
    fn natives_lines_cannot_open_a_section_or_span_lines() {
        assert!(NativeLine::new("option forwardfor").is_ok());
        for bad in [
            "backend evil",
            "  Listen x",
            "option x\nbackend y",
            "",
            "   ",
            "\ttimeout",
        ] {
            assert!(NativeLine::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn binds_parse_and_print_round_trip() {
        let binds = Binds::parse("*:80,127.0.0.2:8080,[::1]:443").unwrap();
        assert_eq!(binds.to_string(), "*:80,127.0.0.2:8080,[::1]:443");
        assert!(Binds::parse("*:0").is_err());
        assert!(Binds::parse("nohost").is_err());
    }

    #[test]
    fn header_rules_need_a_header_name() {
        let value = AclValue::new("staged.myapp.com").unwrap();
        let backend = Name::new("staged").unwrap();
        assert!(Rule::new(RuleOperation::HdrDom, None, value.clone(), backend.clone()).is_err());
        assert!(
            Rule::new(
                RuleOperation::PathBeg,
                Some(HeaderName::new("host").unwrap()),
                value.clone(),
                backend.clone()
            )
            .is_err()
        );
        assert!(
            Rule::new(
                RuleOperation::HdrDom,
                Some(HeaderName::new("host").unwrap()),
                value,
                backend
            )
            .is_ok()
        );
    }

    #[test]
    fn decoding_a_value_runs_the_same_validation() {
        let bytes = postcard::to_stdvec(&"bad name").unwrap();
        assert!(postcard::from_bytes::<Name>(&bytes).is_err());
        let port = postcard::to_stdvec(&0u16).unwrap();
        assert!(postcard::from_bytes::<Port>(&port).is_err());
    }
}
