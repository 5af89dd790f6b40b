//! Handlers for frontends, backends, their members and the A/B switch.
//!
//! Owns the checks against this peer's view that a single object cannot
//! make (references between frontends and backends, live instances before
//! a switch). Must not build model values from JSON itself: that is
//! `dto`'s job.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::dto::{
    self, BackendIn, BackendOut, FrontendIn, FrontendOut, MemberJson, MemberOut, MemberSettingsIn,
    SwitchIn,
};
use super::error::ApiError;
use super::extract::{JsonBody, PathParams};
use super::quota::Quota;
use crate::crdt::model::{
    Backend, BackendType, BindHost, ConfigView, Frontend, Host, LiveRegistrations, MemberKey, Name,
    Section, ServiceName,
};
use crate::crdt::natives;
use crate::crdt::{Command, CommandError, Counted, ViewPart};
use crate::peer::wall_clock_ms;

/// The entry of `map` under the path key `key`; a key that is not a valid
/// name cannot be there.
fn find<'a, T>(map: &'a BTreeMap<Name, T>, key: &str) -> Option<(&'a Name, &'a T)> {
    map.get_key_value(&Name::new(key).ok()?)
}

/// A path key for an object that a write may create.
fn key_to_create(key: &str) -> Result<Name, ApiError> {
    dto::path_value("key", key, Name::new)
}

/// A path key for an object that must exist already.
fn existing_key(kind: &str, key: &str) -> Result<Name, ApiError> {
    Name::new(key).map_err(|_| ApiError::NotFound(format!("{kind} {key}")))
}

/// The view of backend `name` with, for a dynamic one, the registrations
/// of its service (and of `also`, a service about to be followed).
async fn backend_view(
    state: &AppState,
    name: &Name,
    also: Option<&ServiceName>,
) -> Result<Arc<ConfigView>, ApiError> {
    let mut parts = vec![ViewPart::Backend(name.clone())];
    let view = state.handle.view_of(parts.clone()).await?;
    let followed = view.backends.get(name).and_then(|b| b.service.as_ref());
    parts.extend(
        followed
            .into_iter()
            .chain(also)
            .cloned()
            .map(ViewPart::Service),
    );
    if parts.len() == 1 {
        return Ok(view);
    }
    Ok(state.handle.view_of(parts).await?)
}

/// `GET /frontends`.
pub(crate) async fn list_frontends(
    State(state): State<AppState>,
) -> Result<Json<Vec<FrontendOut>>, ApiError> {
    let view = state.handle.view_of(vec![ViewPart::Frontends]).await?;
    Ok(Json(
        view.frontends
            .iter()
            .map(|(key, frontend)| FrontendOut::new(key, frontend))
            .collect(),
    ))
}

/// `GET /frontends/{key}`.
pub(crate) async fn get_frontend(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
) -> Result<Json<FrontendOut>, ApiError> {
    let Ok(name) = Name::new(&key) else {
        return Err(ApiError::NotFound(format!("frontend {key}")));
    };
    let view = state.handle.view_of(vec![ViewPart::Frontend(name)]).await?;
    let (key, frontend) =
        find(&view.frontends, &key).ok_or_else(|| ApiError::NotFound(format!("frontend {key}")))?;
    Ok(Json(FrontendOut::new(key, frontend)))
}

/// `PUT /frontends/{key}`: create or replace; every backend it names must
/// exist.
pub(crate) async fn put_frontend(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
    JsonBody(body): JsonBody<FrontendIn>,
) -> Result<Json<FrontendOut>, ApiError> {
    let name = key_to_create(&key)?;
    let frontend = body.into_model(&name, state.natives())?;
    state.quotas.natives(&frontend.natives)?;
    // The backends it routes to, and any its natives name (`use_backend
    // x if ...`): HAProxy checks those references too.
    let referenced = std::iter::once(frontend.backend.clone())
        .chain(
            frontend
                .rules
                .as_slice()
                .iter()
                .map(|r| r.backend().clone()),
        )
        .chain(native_words(&frontend))
        .map(ViewPart::Backend)
        .chain(std::iter::once(ViewPart::Frontends))
        .collect();
    let mut would_be = state.handle.view_of(referenced).await?.as_ref().clone();
    check_backends_exist(&frontend, &would_be)?;
    check_binds_are_free(&name, &frontend, &would_be)?;
    let old = would_be.frontends.get(&name);
    let usage = state.handle.usage(Some(Counted::Frontends)).await?;
    let added = usize::from(old.is_none());
    state.quotas.count(
        Quota::Frontends,
        usage.objects,
        usage.objects + added,
        "frontends",
    )?;
    state
        .quotas
        .document(usage.document_bytes, &name, old, &frontend)?;
    // Other frontends are not part of what this write changes.
    would_be.frontends = BTreeMap::from([(name.clone(), frontend.clone())]);
    state
        .check_with_haproxy(&would_be, (Section::Frontend, &name))
        .await?;
    state
        .handle
        .write(Command::PutFrontend {
            name: name.clone(),
            frontend: frontend.clone(),
        })
        .await?;
    Ok(Json(FrontendOut::new(&name, &frontend)))
}

/// The words of a frontend's natives that could name a backend, as
/// HAProxy reads them (quotes removed).
fn native_words(frontend: &Frontend) -> impl Iterator<Item = Name> + '_ {
    frontend
        .natives
        .as_slice()
        .iter()
        .flat_map(|line| natives::words(line.as_str()).unwrap_or_default())
        .filter_map(|word| Name::new(&word).ok())
}

/// Two frontends listening on one port of one address would share its
/// connections at random (HAProxy binds with SO_REUSEPORT, so nothing else
/// refuses it): a 400 naming the other frontend. `*` overlaps every address.
fn check_binds_are_free(
    name: &Name,
    frontend: &Frontend,
    view: &ConfigView,
) -> Result<(), ApiError> {
    for (other_name, other) in view.frontends.iter().filter(|(key, _)| *key != name) {
        for bind in frontend.bind.as_slice() {
            let taken = other.bind.as_slice().iter().any(|o| {
                o.port == bind.port
                    && (o.host == bind.host
                        || o.host == BindHost::Any
                        || bind.host == BindHost::Any)
            });
            if taken {
                return Err(ApiError::invalid(
                    "bind",
                    format!(
                        "port {} is already bound by frontend {other_name}",
                        bind.port
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_backends_exist(frontend: &Frontend, view: &ConfigView) -> Result<(), ApiError> {
    let missing = |field: String, backend: &Name| {
        ApiError::invalid(
            field,
            format!("backend {backend} does not exist; create it first"),
        )
    };
    let check = |field: String, backend: &Name| match view.backends.get(backend) {
        None => Err(missing(field, backend)),
        Some(b) if b.mode != frontend.mode => Err(ApiError::invalid(
            "mode",
            format!(
                "backend {backend} is in the other mode; a frontend and its backends share one mode"
            ),
        )),
        Some(_) => Ok(()),
    };
    check("backend".to_owned(), &frontend.backend)?;
    for (index, rule) in frontend.rules.as_slice().iter().enumerate() {
        check(format!("rules[{index}].backend"), rule.backend())?;
    }
    Ok(())
}

/// `DELETE /frontends/{key}`.
pub(crate) async fn delete_frontend(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let name = existing_key("frontend", &key)?;
    state.handle.write(Command::DeleteFrontend { name }).await?;
    Ok(Json(json!({})))
}

/// `GET /backends`.
pub(crate) async fn list_backends(
    State(state): State<AppState>,
) -> Result<Json<Vec<BackendOut>>, ApiError> {
    let view = state.handle.view().await?;
    let live = LiveRegistrations::new(&view, wall_clock_ms());
    Ok(Json(
        view.backends
            .iter()
            .map(|(key, backend)| BackendOut::new(key, backend, &live))
            .collect(),
    ))
}

/// `GET /backends/{key}`.
pub(crate) async fn get_backend(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
) -> Result<Json<BackendOut>, ApiError> {
    let name = existing_key("backend", &key)?;
    let view = backend_view(&state, &name, None).await?;
    let (key, backend) =
        find(&view.backends, &key).ok_or_else(|| ApiError::NotFound(format!("backend {key}")))?;
    let live = LiveRegistrations::new(&view, wall_clock_ms());
    Ok(Json(BackendOut::new(key, backend, &live)))
}

/// `GET /backends/{key}/members`.
pub(crate) async fn list_members(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
) -> Result<Json<Vec<MemberOut>>, ApiError> {
    let name = existing_key("backend", &key)?;
    let view = backend_view(&state, &name, None).await?;
    let (_, backend) =
        find(&view.backends, &key).ok_or_else(|| ApiError::NotFound(format!("backend {key}")))?;
    let live = LiveRegistrations::new(&view, wall_clock_ms());
    Ok(Json(dto::members_out(backend, &live)))
}

/// `PUT /backends/{key}`: create or replace (static members included).
pub(crate) async fn put_backend(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
    JsonBody(body): JsonBody<BackendIn>,
) -> Result<Json<BackendOut>, ApiError> {
    let name = key_to_create(&key)?;
    let backend = body.into_model(&name, state.natives())?;
    state.quotas.natives(&backend.natives)?;
    let frontends = state.handle.view_of(vec![ViewPart::Frontends]).await?;
    let other_mode = frontends
        .frontends
        .iter()
        .find(|(_, frontend)| frontend.mode != backend.mode && routes_to(frontend, &name));
    if let Some((user, _)) = other_mode {
        return Err(ApiError::invalid(
            "mode",
            format!(
                "frontend {user} routes here in the other mode; a frontend and its backends share one mode"
            ),
        ));
    }
    check_backend_quotas(&state, &name, &backend).await?;
    let would_be = ConfigView {
        backends: BTreeMap::from([(name.clone(), backend.clone())]),
        ..ConfigView::default()
    };
    state
        .check_with_haproxy(&would_be, (Section::Backend, &name))
        .await?;
    state
        .handle
        .write(Command::PutBackend {
            name: name.clone(),
            backend: backend.clone(),
        })
        .await?;
    // Read back for the members of a dynamic backend (its registrations).
    // The write is done: should the read fail (the peer stopping), the
    // answer still says so, without members.
    let view = backend_view(&state, &name, None).await.unwrap_or_default();
    let live = LiveRegistrations::new(&view, wall_clock_ms());
    Ok(Json(BackendOut::new(&name, &backend, &live)))
}

/// The quotas a PUT of backend `name` must fit in, against what is stored
/// under its name: the members it adds, one more backend if it is new, and
/// the document's size.
async fn check_backend_quotas(
    state: &AppState,
    name: &Name,
    backend: &Backend,
) -> Result<(), ApiError> {
    let stored = state
        .handle
        .view_of(vec![ViewPart::Backend(name.clone())])
        .await?;
    let old = stored.backends.get(name);
    state.quotas.count(
        Quota::MembersPerBackend,
        old.map_or(0, |old| old.members.len()),
        backend.members.len(),
        format_args!("members in backend {name}"),
    )?;
    let usage = state.handle.usage(Some(Counted::Backends)).await?;
    let added = usize::from(old.is_none());
    state.quotas.count(
        Quota::Backends,
        usage.objects,
        usage.objects + added,
        "backends",
    )?;
    state
        .quotas
        .document(usage.document_bytes, name, old, backend)
}

/// `DELETE /backends/{key}`: refused while a frontend routes to it.
pub(crate) async fn delete_backend(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let name = existing_key("backend", &key)?;
    let view = state.handle.view_of(vec![ViewPart::Frontends]).await?;
    let users: Vec<Name> = view
        .frontends
        .iter()
        .filter(|(_, frontend)| routes_to(frontend, &name))
        .map(|(key, _)| key.clone())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::BackendInUse {
            backend: name,
            frontends: users,
        });
    }
    state.handle.write(Command::DeleteBackend { name }).await?;
    Ok(Json(json!({})))
}

/// Whether `frontend` sends any request to `backend` (its default, a
/// rule, or a word of its natives).
fn routes_to(frontend: &Frontend, backend: &Name) -> bool {
    frontend.backend == *backend
        || frontend
            .rules
            .as_slice()
            .iter()
            .any(|rule| rule.backend() == backend)
        || native_words(frontend).any(|word| word == *backend)
}

/// `POST /backends/{key}`: the A/B switch of a dynamic backend to another
/// version, refused (409) when no instance of it is live unless forced.
pub(crate) async fn switch_backend(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
    JsonBody(body): JsonBody<SwitchIn>,
) -> Result<Json<BackendOut>, ApiError> {
    let name = existing_key("backend", &key)?;
    body.check_key(&name)?;
    let view = backend_view(&state, &name, body.name.as_ref()).await?;
    let backend = view
        .backends
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("backend {name}")))?;
    if backend.kind != BackendType::Dynamic {
        return Err(CommandError::NotDynamic(name).into());
    }
    let service = body
        .name
        .as_ref()
        .or(backend.service.as_ref())
        .ok_or_else(|| ApiError::invalid("name", "the backend follows no service; name one"))?;
    let live = LiveRegistrations::new(&view, wall_clock_ms());
    if !body.force && live.of(service, &body.version).is_empty() {
        return Err(ApiError::NoLiveInstances {
            service: service.clone(),
            version: body.version,
        });
    }
    // The answer is the backend as switched, built from what was read
    // before: the write is durable, and a read after it could only fail
    // (the peer stopping) or race a concurrent delete.
    let mut switched = backend.clone();
    switched.service = body.name.clone().or(switched.service);
    switched.version = Some(body.version.clone());
    let answer = BackendOut::new(&name, &switched, &live);
    state
        .handle
        .write(Command::SwitchBackend {
            name: name.clone(),
            service: body.name,
            version: body.version,
        })
        .await?;
    Ok(Json(answer))
}

/// `PUT /backends/{key}/members/{host}/{port}`: add or update one static
/// member without replacing the backend.
pub(crate) async fn put_member(
    State(state): State<AppState>,
    PathParams((key, host, port)): PathParams<(String, String, String)>,
    JsonBody(body): JsonBody<MemberSettingsIn>,
) -> Result<Json<MemberJson>, ApiError> {
    let name = existing_key("backend", &key)?;
    let host = dto::path_value("host", &host, Host::new)?;
    let port = dto::path_value("port", &port, dto::parse_port)?;
    let view = state
        .handle
        .view_of(vec![ViewPart::Backend(name.clone())])
        .await?;
    let backend = view
        .backends
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("backend {name}")))?;
    if backend.kind == BackendType::Dynamic {
        return Err(ApiError::invalid(
            "key",
            format!("backend {name} is dynamic; its members are its service's live registrations"),
        ));
    }
    let member = body.into_model();
    // The quota on a backend's `members` holds for members added one by
    // one too.
    let address = (host.clone(), port);
    let old = backend.members.get(&address);
    let held = backend.members.len();
    state.quotas.count(
        Quota::MembersPerBackend,
        held,
        held + usize::from(old.is_none()),
        format_args!("members in backend {name}"),
    )?;
    let usage = state.handle.usage(None).await?;
    state
        .quotas
        .document(usage.document_bytes, &address, old, &member)?;
    let answer = MemberJson::new(&host, port, member);
    let key = MemberKey {
        backend: name,
        host,
        port,
    };
    state
        .handle
        .write(Command::PutMember { key, member })
        .await?;
    Ok(Json(answer))
}

/// `DELETE /backends/{key}/members/{host}/{port}`.
pub(crate) async fn delete_member(
    State(state): State<AppState>,
    PathParams((key, host, port)): PathParams<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound(format!("member {host}:{port} of backend {key}"));
    let key = MemberKey {
        backend: Name::new(&key).map_err(|_| not_found())?,
        host: Host::new(&host).map_err(|_| not_found())?,
        port: dto::parse_port(&port).map_err(|_| not_found())?,
    };
    state.handle.write(Command::DeleteMember { key }).await?;
    Ok(Json(json!({})))
}
