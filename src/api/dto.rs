//! The API's JSON shapes and their mapping to and from `crdt::model`.
//!
//! Owns field names and spellings (the original's: `server-close`,
//! `hdr_dom`, `HTTP/1.1`, camelCase), defaults, and the checks that span
//! fields (a rule's type against its operation, dynamic against static).
//! Single values are checked by the model's newtypes while decoding, so an
//! error carries the JSON path of the value. Must not reach the peer or
//! read the clock: handlers pass the view and the time in.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::crdt::Digest;
use crate::crdt::model::{
    AclValue, Backend, BackendType, Balance, Binds, BoundedList, Frontend, HeaderName, Health,
    HealthMethod, Host, HttpPath, HttpVersion, InvalidValue, Keepalive, Lease, LiveRegistrations,
    Member, MemberState, Meta, Mode, Name, Natives, NativesPolicy, Port, Registration,
    RegistrationKey, Rule, RuleOperation, Rules, Section, ServiceName, Version, Weight,
};
use crate::gossip::ApplyReport;
use crate::peer::{PeerStatus, Status};

// The JSON spelling of each model enum. `remote` makes serde check that
// the variants match the model's, so a new model variant fails to build
// here instead of failing to encode at run time.

#[derive(Serialize, Deserialize)]
#[serde(remote = "Mode", rename_all = "lowercase")]
enum ModeJson {
    Http,
    Tcp,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Keepalive", rename_all = "kebab-case")]
enum KeepaliveJson {
    Default,
    Close,
    ServerClose,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Balance", rename_all = "kebab-case")]
enum BalanceJson {
    Roundrobin,
    StaticRr,
    Leastconn,
    First,
    Source,
    Uri,
    Random,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "BackendType", rename_all = "lowercase")]
enum BackendTypeJson {
    Static,
    Dynamic,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "RuleOperation", rename_all = "snake_case")]
enum RuleOperationJson {
    Path,
    PathBeg,
    PathReg,
    Url,
    UrlBeg,
    UrlReg,
    Hdr,
    HdrBeg,
    HdrEnd,
    HdrDom,
    HdrSub,
    HdrReg,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "HealthMethod", rename_all = "UPPERCASE")]
enum HealthMethodJson {
    Get,
    Post,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "HttpVersion")]
enum HttpVersionJson {
    #[serde(rename = "HTTP/1.0")]
    Http10,
    #[serde(rename = "HTTP/1.1")]
    Http11,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "MemberState", rename_all = "lowercase")]
enum MemberStateJson {
    Ready,
    Drain,
    Maint,
}

/// The family of a rule's operation, the original's `type` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RuleType {
    Path,
    Url,
    Header,
}

impl RuleType {
    fn of(operation: RuleOperation) -> RuleType {
        use RuleOperation::*;
        match operation {
            Path | PathBeg | PathReg => RuleType::Path,
            Url | UrlBeg | UrlReg => RuleType::Url,
            Hdr | HdrBeg | HdrEnd | HdrDom | HdrSub | HdrReg => RuleType::Header,
        }
    }
}

impl fmt::Display for RuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleType::Path => "path",
            RuleType::Url => "url",
            RuleType::Header => "header",
        })
    }
}

/// A path parameter as a model value; `field` names it in the error.
pub(crate) fn path_value<T>(
    field: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
) -> Result<T, ApiError> {
    parse(raw).map_err(|error| ApiError::invalid(field, error))
}

/// A port given as text (a path parameter, or a member's port sent as a
/// string as the original allowed).
pub(crate) fn parse_port(raw: &str) -> Result<Port, InvalidValue> {
    // Any integer goes to the model, so 0 and 70000 get its message; a
    // non-number is out of range as well, reported with its text.
    let number = raw.parse::<i64>().unwrap_or(-1);
    Port::new(number).map_err(|error| InvalidValue {
        input: raw.chars().take(64).collect(),
        ..error
    })
}

/// A body's optional `key` must agree with the path's.
fn check_body_key(body_key: Option<&str>, path_key: &Name) -> Result<(), ApiError> {
    match body_key {
        Some(key) if key != path_key.as_str() => Err(ApiError::invalid(
            "key",
            format!(
                "the body says {key:?} but the path says {:?}",
                path_key.as_str()
            ),
        )),
        _ => Ok(()),
    }
}

fn binds_from_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Binds, D::Error> {
    let text = String::deserialize(deserializer)?;
    Binds::parse(&text).map_err(de::Error::custom)
}

/// A member's port as a number or, as the original accepted, a string of
/// digits.
fn port_from_number_or_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Port, D::Error> {
    struct PortVisitor;
    impl Visitor<'_> for PortVisitor {
        type Value = Port;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a port number")
        }
        fn visit_i64<E: de::Error>(self, port: i64) -> Result<Port, E> {
            Port::new(port).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, port: u64) -> Result<Port, E> {
            Port::new(i64::try_from(port).unwrap_or(i64::MAX)).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, port: &str) -> Result<Port, E> {
            parse_port(port).map_err(E::custom)
        }
    }
    deserializer.deserialize_any(PortVisitor)
}

/// A nested object of a request body, taken only in its JSON object form.
/// serde's derived structs also read their fields in order from an array
/// (`"health": ["GET", "/", "HTTP/1.0", 2000]`): a second, undocumented
/// spelling of every object, refused here. (The body itself is checked to
/// be an object before it is decoded.)
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(StructAsMap(deserializer)).map(Object)
    }
}

/// A deserializer that reads a struct as a map only (what JSON calls an
/// object) and everything else as `D` does.
struct StructAsMap<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for StructAsMap<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A frontend routing rule, as sent and as shown.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleJson {
    #[serde(rename = "type")]
    kind: RuleType,
    #[serde(skip_serializing_if = "Option::is_none")]
    header: Option<HeaderName>,
    #[serde(with = "RuleOperationJson")]
    operation: RuleOperation,
    value: AclValue,
    backend: Name,
}

impl RuleJson {
    fn new(rule: &Rule) -> Self {
        RuleJson {
            kind: RuleType::of(rule.operation()),
            header: rule.header().cloned(),
            operation: rule.operation(),
            value: rule.value().clone(),
            backend: rule.backend().clone(),
        }
    }

    /// The model rule; `index` is its place in `rules`, for errors.
    fn into_model(self, index: usize) -> Result<Rule, ApiError> {
        if RuleType::of(self.operation) != self.kind {
            return Err(ApiError::invalid(
                format!("rules[{index}].operation"),
                format!("not an operation of rule type {}", self.kind),
            ));
        }
        let rule = Rule::new(self.operation, self.header, self.value, self.backend)
            .map_err(|error| ApiError::invalid(format!("rules[{index}].header"), error))?;
        match rule.regex_hazard() {
            Some(why) => Err(ApiError::invalid(format!("rules[{index}].value"), why)),
            None => Ok(rule),
        }
    }
}

/// `PUT /frontends/{key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FrontendIn {
    key: Option<String>,
    #[serde(deserialize_with = "binds_from_text")]
    bind: Binds,
    backend: Name,
    #[serde(default, with = "ModeJson")]
    mode: Mode,
    #[serde(default, with = "KeepaliveJson")]
    keepalive: Keepalive,
    #[serde(default)]
    rules: Vec<Object<RuleJson>>,
    #[serde(default)]
    natives: Natives,
}

impl FrontendIn {
    /// The frontend to store under `key` (from the path), its `natives`
    /// held to `natives`.
    pub(crate) fn into_model(
        self,
        key: &Name,
        natives: NativesPolicy,
    ) -> Result<Frontend, ApiError> {
        check_body_key(self.key.as_deref(), key)?;
        let rules = self
            .rules
            .into_iter()
            .enumerate()
            .map(|(index, Object(rule))| rule.into_model(index))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Frontend {
            bind: self.bind,
            backend: self.backend,
            mode: self.mode,
            keepalive: self.keepalive,
            rules: Rules::try_from(rules).map_err(|error| ApiError::invalid("rules", error))?,
            natives: accepted_natives(self.natives, Section::Frontend, natives)?,
        })
    }
}

/// `natives` if every line may be written into a section of `section`'s
/// kind under `policy`; else a 400 naming the first line that may not
/// ([`crate::crdt::natives::check`] says why).
fn accepted_natives(
    natives: Natives,
    section: Section,
    policy: NativesPolicy,
) -> Result<Natives, ApiError> {
    let refused = natives
        .as_slice()
        .iter()
        .enumerate()
        .find_map(|(index, line)| Some((index, line.refusal(section, policy)?)));
    if let Some((index, refusal)) = refused {
        return Err(ApiError::invalid(format!("natives[{index}]"), refusal));
    }
    let servers: Option<usize> = natives
        .as_slice()
        .iter()
        .map(|line| crate::crdt::natives::servers_declared(line.as_str()))
        .sum();
    if policy == NativesPolicy::Restricted
        && servers.is_none_or(|servers| servers > crate::crdt::natives::SERVERS_MAX)
    {
        return Err(ApiError::invalid(
            "natives",
            format!(
                "declares more than {} servers (server lines and server-template ranges \
                 together): HAProxy's parse time grows with the square of a backend's servers",
                crate::crdt::natives::SERVERS_MAX
            ),
        ));
    }
    Ok(natives)
}

/// A frontend as shown.
#[derive(Serialize)]
pub(crate) struct FrontendOut {
    key: Name,
    bind: String,
    backend: Name,
    #[serde(with = "ModeJson")]
    mode: Mode,
    #[serde(with = "KeepaliveJson")]
    keepalive: Keepalive,
    rules: Vec<RuleJson>,
    natives: Natives,
}

impl FrontendOut {
    pub(crate) fn new(key: &Name, frontend: &Frontend) -> Self {
        FrontendOut {
            key: key.clone(),
            bind: frontend.bind.to_string(),
            backend: frontend.backend.clone(),
            mode: frontend.mode,
            keepalive: frontend.keepalive,
            rules: frontend
                .rules
                .as_slice()
                .iter()
                .map(RuleJson::new)
                .collect(),
            natives: frontend.natives.clone(),
        }
    }
}

/// A backend's health check, as sent (every field optional, defaults of
/// API.md) and as shown.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
struct HealthJson {
    #[serde(with = "HealthMethodJson")]
    method: HealthMethod,
    uri: HttpPath,
    #[serde(with = "HttpVersionJson")]
    http_version: HttpVersion,
    /// Milliseconds between checks.
    interval: u32,
}

impl Default for HealthJson {
    fn default() -> Self {
        HealthJson::new(&Health::default())
    }
}

impl HealthJson {
    fn new(health: &Health) -> Self {
        HealthJson {
            method: health.method(),
            uri: health.uri().clone(),
            http_version: health.http_version(),
            interval: health.interval_ms(),
        }
    }
}

/// A static member, as sent in a backend's `members` and as shown.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberJson {
    host: Host,
    #[serde(deserialize_with = "port_from_number_or_text")]
    port: Port,
    #[serde(default)]
    weight: Weight,
    #[serde(default, with = "MemberStateJson")]
    state: MemberState,
}

impl MemberJson {
    pub(crate) fn new(host: &Host, port: Port, member: Member) -> Self {
        MemberJson {
            host: host.clone(),
            port,
            weight: member.weight,
            state: member.state,
        }
    }
}

/// `PUT /backends/{key}/members/{host}/{port}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MemberSettingsIn {
    #[serde(default)]
    weight: Weight,
    #[serde(default, with = "MemberStateJson")]
    state: MemberState,
}

impl MemberSettingsIn {
    pub(crate) fn into_model(self) -> Member {
        Member {
            weight: self.weight,
            state: self.state,
        }
    }
}

/// `PUT /backends/{key}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackendIn {
    key: Option<String>,
    #[serde(rename = "type", with = "BackendTypeJson")]
    kind: BackendType,
    name: Option<ServiceName>,
    version: Option<Version>,
    #[serde(default, with = "BalanceJson")]
    balance: Balance,
    host: Option<Host>,
    #[serde(default, with = "ModeJson")]
    mode: Mode,
    #[serde(default)]
    members: BoundedList<Object<MemberJson>, { Backend::MEMBERS_MAX }>,
    #[serde(default)]
    natives: Natives,
    health: Option<Object<HealthJson>>,
}

impl BackendIn {
    /// The backend to store under `key` (from the path), its `natives`
    /// held to `natives`.
    pub(crate) fn into_model(
        self,
        key: &Name,
        natives: NativesPolicy,
    ) -> Result<Backend, ApiError> {
        check_body_key(self.key.as_deref(), key)?;
        match self.kind {
            BackendType::Static => {
                let reason = "a static backend follows no service; list its members instead";
                if self.name.is_some() {
                    return Err(ApiError::invalid("name", reason));
                }
                if self.version.is_some() {
                    return Err(ApiError::invalid("version", reason));
                }
            }
            BackendType::Dynamic => {
                let reason = "a dynamic backend needs the service name and version it follows";
                if self.name.is_none() {
                    return Err(ApiError::invalid("name", reason));
                }
                if self.version.is_none() {
                    return Err(ApiError::invalid("version", reason));
                }
                if !self.members.as_slice().is_empty() {
                    return Err(ApiError::invalid(
                        "members",
                        "the members of a dynamic backend are its service's live registrations",
                    ));
                }
            }
        }
        let health = match self.health {
            None => Health::default(),
            Some(_) if self.mode == Mode::Tcp => {
                return Err(ApiError::invalid(
                    "health",
                    "health checks apply to http mode only",
                ));
            }
            Some(Object(health)) => {
                if health.http_version == HttpVersion::Http11 && self.host.is_none() {
                    return Err(ApiError::invalid(
                        "health.httpVersion",
                        "an HTTP/1.1 health check needs the backend's host",
                    ));
                }
                Health::new(
                    health.method,
                    health.uri,
                    health.http_version,
                    health.interval,
                )
                .map_err(|error| ApiError::invalid("health.interval", error))?
            }
        };
        let mut by_address = BTreeMap::new();
        for (index, Object(member)) in Vec::from(self.members).into_iter().enumerate() {
            let settings = Member {
                weight: member.weight,
                state: member.state,
            };
            if by_address
                .insert((member.host, member.port), settings)
                .is_some()
            {
                return Err(ApiError::invalid(
                    format!("members[{index}]"),
                    "this host and port are listed twice",
                ));
            }
        }
        Ok(Backend {
            kind: self.kind,
            service: self.name,
            version: self.version,
            balance: self.balance,
            host: self.host,
            mode: self.mode,
            natives: accepted_natives(self.natives, Section::Backend, natives)?,
            health,
            members: by_address,
        })
    }
}

/// A backend as shown, members included.
#[derive(Serialize)]
pub(crate) struct BackendOut {
    key: Name,
    #[serde(rename = "type", with = "BackendTypeJson")]
    kind: BackendType,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<ServiceName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<Version>,
    #[serde(with = "BalanceJson")]
    balance: Balance,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<Host>,
    #[serde(with = "ModeJson")]
    mode: Mode,
    members: Vec<MemberOut>,
    natives: Natives,
    /// Absent in tcp mode, where no HTTP check runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<HealthJson>,
}

impl BackendOut {
    pub(crate) fn new(key: &Name, backend: &Backend, live: &LiveRegistrations<'_>) -> Self {
        BackendOut {
            key: key.clone(),
            kind: backend.kind,
            name: backend.service.clone(),
            version: backend.version.clone(),
            balance: backend.balance,
            host: backend.host.clone(),
            mode: backend.mode,
            members: members_out(backend, live),
            natives: backend.natives.clone(),
            health: (backend.mode == Mode::Http).then(|| HealthJson::new(&backend.health)),
        }
    }
}

/// A member as shown: a static member's settings, or (dynamic backends,
/// as in the original) the registration it comes from.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum MemberOut {
    Static(MemberJson),
    Registered(RegistrationOut),
}

/// The members of `backend`: its static members, or the live
/// registrations of the service version it follows.
pub(crate) fn members_out(backend: &Backend, live: &LiveRegistrations<'_>) -> Vec<MemberOut> {
    match (backend.kind, &backend.service, &backend.version) {
        (BackendType::Static, _, _) => backend
            .members
            .iter()
            .map(|((host, port), member)| MemberOut::Static(MemberJson::new(host, *port, *member)))
            .collect(),
        (BackendType::Dynamic, Some(service), Some(version)) => live
            .of(service, version)
            .iter()
            .map(|(key, registration)| {
                MemberOut::Registered(RegistrationOut::new(key, registration))
            })
            .collect(),
        // A dynamic backend that lost its service or version to a
        // concurrent write follows nothing.
        (BackendType::Dynamic, _, _) => Vec::new(),
    }
}

/// `POST /backends/{key}`: the A/B switch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SwitchIn {
    key: Option<String>,
    /// The version to follow.
    pub(crate) version: Version,
    /// A new service name to follow, if it changes.
    pub(crate) name: Option<ServiceName>,
    /// Switch even if no instance of the version is live.
    #[serde(default)]
    pub(crate) force: bool,
}

impl SwitchIn {
    /// Checks the body's `key` against the path's.
    pub(crate) fn check_key(&self, key: &Name) -> Result<(), ApiError> {
        check_body_key(self.key.as_deref(), key)
    }
}

/// A registration as shown (the original registry's shape).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegistrationOut {
    id: String,
    name: ServiceName,
    version: Version,
    host: Host,
    port: Port,
    /// When the lease was last renewed, ms since the epoch.
    last_known: u64,
    meta: Value,
}

impl RegistrationOut {
    pub(crate) fn new(key: &RegistrationKey, registration: &Registration) -> Self {
        RegistrationOut {
            id: key.to_string(),
            name: key.service.clone(),
            version: key.version.clone(),
            host: key.host.clone(),
            port: key.port,
            last_known: registration.lease.renewed_at_ms(),
            // The API only stores JSON objects; text that is not one came
            // from elsewhere and is shown as it is rather than dropped.
            meta: serde_json::from_str(registration.meta.as_str())
                .unwrap_or_else(|_| Value::String(registration.meta.as_str().to_owned())),
        }
    }
}

/// Lease length when the body has no `secondsToExpire` (the original
/// registry's default).
const SECONDS_TO_EXPIRE_DEFAULT: f64 = 10.0;

/// The registration a heartbeat body makes at wall-clock `now_ms`: the
/// body is the `meta`, and its `secondsToExpire` the lease.
pub(crate) fn registration_from_meta(
    meta: Map<String, Value>,
    now_ms: u64,
) -> Result<Registration, ApiError> {
    let seconds = match meta.get("secondsToExpire") {
        None => SECONDS_TO_EXPIRE_DEFAULT,
        Some(value) => value
            .as_f64()
            .filter(|seconds| *seconds > 0.0)
            .ok_or_else(|| {
                ApiError::invalid("secondsToExpire", "must be a positive number of seconds")
            })?,
    };
    // Saturating float-to-int conversion: a huge lease becomes u32::MAX
    // and is refused by the model's bound.
    let ttl_ms = (seconds * 1000.0).round() as u32;
    let lease =
        Lease::new(now_ms, ttl_ms).map_err(|error| ApiError::invalid("secondsToExpire", error))?;
    let text = Value::Object(meta).to_string();
    let meta = Meta::new(&text).map_err(|error| ApiError::invalid("meta", error))?;
    Ok(Registration { meta, lease })
}

/// `GET /mesh`: this peer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MeshOut {
    name: String,
    peer_id: String,
    generation: u32,
    replica_id: String,
    gossip_addr: SocketAddr,
    digest: String,
    version_vector: BTreeMap<String, u64>,
    convergence_lag_seconds: Option<f64>,
    uptime_seconds: f64,
    document_bytes: u64,
    first_sync: &'static str,
}

impl MeshOut {
    pub(crate) fn new(status: &Status) -> Self {
        MeshOut {
            name: status.name.clone(),
            peer_id: status.peer_id.to_string(),
            generation: status.generation,
            replica_id: status.replica_id.to_string(),
            gossip_addr: status.gossip_addr,
            digest: status.digest.to_string(),
            version_vector: status
                .version_vector
                .iter()
                .map(|(replica, counter)| (replica.to_string(), *counter))
                .collect(),
            convergence_lag_seconds: status.convergence_lag_seconds,
            uptime_seconds: status.uptime_seconds,
            document_bytes: status.document_bytes,
            first_sync: status.first_sync.as_str(),
        }
    }
}

/// `GET /mesh/peers`: one peer as this one sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PeerOut {
    peer_id: String,
    name: Option<String>,
    addr: SocketAddr,
    generation: u32,
    state: &'static str,
    connected: bool,
    /// What the peer last reported of itself (`None` until a report
    /// reached this peer).
    report: Option<ReportOut>,
    /// Whether a revocation covers its certificate.
    revoked: bool,
    /// When that revocation was signed (Unix seconds).
    revoked_at: Option<u64>,
}

/// A peer's latest report.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReportOut {
    /// Its digest when it wrote the report.
    digest: String,
    /// Whether that digest is this peer's.
    converged: bool,
    /// Seconds since the report arrived.
    age_seconds: f64,
    /// Its HAProxy's apply status, if it has a driver.
    haproxy: Option<HaproxyReportOut>,
}

/// A peer's HAProxy as its report tells it (the API's shape, kept apart
/// from the wire's).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HaproxyReportOut {
    managed: bool,
    running: bool,
    applied_hash: Option<String>,
    reloads: u64,
    reload_failures: u64,
    runtime_changes: u64,
    rejected: u64,
    restarts: u64,
    last_error: Option<String>,
}

impl From<&ApplyReport> for HaproxyReportOut {
    fn from(report: &ApplyReport) -> Self {
        HaproxyReportOut {
            managed: report.managed,
            running: report.running,
            applied_hash: report.applied_hash.clone(),
            reloads: report.reloads,
            reload_failures: report.reload_failures,
            runtime_changes: report.runtime_changes,
            rejected: report.rejected,
            restarts: report.restarts,
            last_error: report.last_error.clone(),
        }
    }
}

impl PeerOut {
    /// `peer` as seen by a peer whose digest is `mine`.
    pub(crate) fn new(peer: &PeerStatus, mine: Digest) -> Self {
        PeerOut {
            peer_id: peer.peer_id.to_string(),
            name: peer.name.clone(),
            addr: peer.addr,
            generation: peer.generation,
            state: peer.state.as_str(),
            connected: peer.connected,
            report: peer.report.as_ref().map(|(report, age_seconds)| ReportOut {
                digest: report.digest.to_string(),
                converged: report.digest == mine,
                age_seconds: *age_seconds,
                haproxy: report.haproxy.as_ref().map(HaproxyReportOut::from),
            }),
            revoked: peer.revoked_at.is_some(),
            revoked_at: peer.revoked_at,
        }
    }
}
