//! Entry points for `cargo fuzz` (feature `fuzzing`, used only by `fuzz/`):
//! one per kind of request body, each the handler's own decoding
//! ([`extract::decode_body`]) and validation (`dto`), ending in the
//! [`Command`] the handler would write.
//!
//! Owns nothing but that wiring: no checks of its own, so that what the
//! fuzzer finds is in the code the API runs. Leaves out what a handler
//! checks against the peer's current view (references between objects,
//! free binds, live instances before a switch, HAProxy's `-c`): those read
//! state, not the body. Path parameters come in already validated.

use serde_json::{Map, Value};

use super::dto::{self, BackendIn, FrontendIn, MemberSettingsIn, SwitchIn};
use super::extract::decode_body;
use crate::crdt::Command;
use crate::crdt::model::{MemberKey, Name, NativesPolicy, RegistrationKey};

/// Why a body was refused: the API's error message.
pub type Refusal = String;

/// `PUT /frontends/{name}` with `body`.
pub fn frontend_put(name: &Name, body: &[u8]) -> Result<Command, Refusal> {
    let body: FrontendIn = decode_body(body).map_err(|e| e.to_string())?;
    let frontend = body
        .into_model(name, NativesPolicy::Restricted)
        .map_err(|e| e.to_string())?;
    Ok(Command::PutFrontend {
        name: name.clone(),
        frontend,
    })
}

/// `PUT /backends/{name}` with `body`.
pub fn backend_put(name: &Name, body: &[u8]) -> Result<Command, Refusal> {
    let body: BackendIn = decode_body(body).map_err(|e| e.to_string())?;
    let backend = body
        .into_model(name, NativesPolicy::Restricted)
        .map_err(|e| e.to_string())?;
    Ok(Command::PutBackend {
        name: name.clone(),
        backend,
    })
}

/// `PUT /backends/{backend}/members/{host}/{port}` with `body`.
pub fn member_put(key: &MemberKey, body: &[u8]) -> Result<Command, Refusal> {
    let body: MemberSettingsIn = decode_body(body).map_err(|e| e.to_string())?;
    Ok(Command::PutMember {
        key: key.clone(),
        member: body.into_model(),
    })
}

/// `POST /backends/{name}` (the A/B switch) with `body`.
pub fn switch(name: &Name, body: &[u8]) -> Result<Command, Refusal> {
    let body: SwitchIn = decode_body(body).map_err(|e| e.to_string())?;
    body.check_key(name).map_err(|e| e.to_string())?;
    Ok(Command::SwitchBackend {
        name: name.clone(),
        service: body.name,
        version: body.version,
    })
}

/// `PUT /registrations/{service}/{version}/{host}/{port}` with `body` (the
/// heartbeat: the body is the registration's `meta`) at wall-clock `now_ms`.
pub fn register(key: &RegistrationKey, body: &[u8], now_ms: u64) -> Result<Command, Refusal> {
    let meta: Map<String, Value> = decode_body(body).map_err(|e| e.to_string())?;
    let registration = dto::registration_from_meta(meta, now_ms).map_err(|e| e.to_string())?;
    Ok(Command::Register {
        key: key.clone(),
        registration,
    })
}
