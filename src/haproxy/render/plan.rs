//! Planning: what it takes to move a running HAProxy from one rendered
//! configuration to the next — nothing, runtime-API commands, or a reload.
//!
//! Owns the rule that member changes never reload: adding, removing,
//! draining, enabling, disabling and re-weighting servers of a backend whose
//! structure is unchanged become runtime commands; anything else reloads.
//! Pure: it produces command lines and the replies that mean success, and
//! never talks to HAProxy.

use super::{BackendSection, Rendered, Server, ServerName};
use crate::crdt::model::{MemberState, Name};

/// How to get from the active configuration to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// The same configuration: nothing to do.
    Unchanged,
    /// Only servers changed: apply these through the runtime API (and
    /// write the new file, without reloading).
    Runtime(Vec<ServerChange>),
    /// The structure changed: write the file and reload.
    Reload,
}

/// One server to change at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerChange {
    /// Its backend.
    pub backend: Name,
    /// Its name.
    pub server: ServerName,
    /// What happens to it.
    pub change: Change,
}

/// What happens to a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// It is new.
    Add(Server),
    /// Its weight or state changed.
    Update(Server),
    /// It is gone: it stops taking new requests, and is deleted once its
    /// connections have finished.
    Remove,
}

/// One runtime-API command and the reply that means it worked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeCommand {
    /// The command line (no newline).
    pub line: String,
    /// HAProxy's whole reply on success, trimmed (empty for most commands).
    pub success: &'static str,
    /// The start of HAProxy's reply when the command's effect is already
    /// there (the server exists, or is already gone): as good as success,
    /// so that re-applying a change is harmless.
    pub already_done: Option<&'static str>,
    /// The start of HAProxy's reply that means "not yet": the command is
    /// retried later (a server is deleted only once its connections are
    /// done).
    pub retry_on: Option<&'static str>,
}

impl RuntimeCommand {
    fn new(line: String, success: &'static str) -> RuntimeCommand {
        RuntimeCommand {
            line,
            success,
            already_done: None,
            retry_on: None,
        }
    }

    /// What HAProxy's `reply` means for this command.
    pub fn outcome(&self, reply: &str) -> Outcome {
        let reply = reply.trim();
        if reply == self.success || self.already_done.is_some_and(|p| reply.starts_with(p)) {
            Outcome::Done
        } else if self.retry_on.is_some_and(|p| reply.starts_with(p)) {
            Outcome::NotYet
        } else {
            Outcome::Refused
        }
    }
}

/// What a runtime command's reply means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The command's effect is in place.
    Done,
    /// Try again later.
    NotYet,
    /// HAProxy refused it.
    Refused,
}

impl ServerChange {
    /// The runtime-API commands that make the change, in order.
    pub fn commands(&self) -> Vec<RuntimeCommand> {
        let target = format!("{}/{}", self.backend, self.server);
        match &self.change {
            Change::Add(server) => {
                // A server added at run time starts in maintenance with its
                // checks off; it is enabled only after its checks are on.
                let mut commands = vec![
                    RuntimeCommand {
                        already_done: Some("Already exists a server with the same name"),
                        ..RuntimeCommand::new(
                            format!(
                                "add server {target} {} {}",
                                server.address(),
                                server.options(server.weight.get())
                            ),
                            "New server registered.",
                        )
                    },
                    RuntimeCommand::new(format!("enable health {target}"), ""),
                ];
                if server.state != MemberState::Maint {
                    commands.push(state_command(&target, server.state));
                }
                commands
            }
            Change::Update(server) => vec![
                RuntimeCommand::new(
                    format!("set server {target} weight {}", server.weight.get()),
                    "",
                ),
                state_command(&target, server.state),
            ],
            Change::Remove => vec![
                RuntimeCommand {
                    already_done: Some("No such server"),
                    ..state_command(&target, MemberState::Maint)
                },
                RuntimeCommand {
                    already_done: Some("No such server"),
                    retry_on: Some("Server still has connections attached to it"),
                    ..RuntimeCommand::new(format!("del server {target}"), "Server deleted.")
                },
            ],
        }
    }
}

fn state_command(target: &str, state: MemberState) -> RuntimeCommand {
    let state = match state {
        MemberState::Ready => "ready",
        MemberState::Drain => "drain",
        MemberState::Maint => "maint",
    };
    RuntimeCommand::new(format!("set server {target} state {state}"), "")
}

/// Plans the move from `active` (what HAProxy runs) to `next`.
pub fn plan(active: &Rendered, next: &Rendered) -> Plan {
    if active == next {
        return Plan::Unchanged;
    }
    if active.preamble != next.preamble
        || active.frontends != next.frontends
        || !active.backends.keys().eq(next.backends.keys())
    {
        return Plan::Reload;
    }
    let mut changes = Vec::new();
    for ((name, before), after) in active.backends.iter().zip(next.backends.values()) {
        if before == after {
            continue;
        }
        if before.head != after.head || !before.runtime_servers || !after.runtime_servers {
            return Plan::Reload;
        }
        match server_changes(name, before, after) {
            Some(mut backend_changes) => changes.append(&mut backend_changes),
            None => return Plan::Reload,
        }
    }
    Plan::Runtime(changes)
}

/// The server changes of one backend, or `None` if one of them needs a
/// reload (a new server named by host name, or a changed check interval).
fn server_changes(
    backend: &Name,
    before: &BackendSection,
    after: &BackendSection,
) -> Option<Vec<ServerChange>> {
    let mut changes = Vec::new();
    // Removals go last: a backend whose members are all replaced (an A/B
    // switch) never passes through having none.
    let mut removals = Vec::new();
    let change = |server: &ServerName, change| ServerChange {
        backend: backend.clone(),
        server: server.clone(),
        change,
    };
    for (name, old) in &before.servers {
        match after.servers.get(name) {
            None => removals.push(change(name, Change::Remove)),
            Some(new) if new == old => {}
            Some(new) if new.check_inter_ms != old.check_inter_ms => return None,
            Some(new) => changes.push(change(name, Change::Update(new.clone()))),
        }
    }
    let added = after
        .servers
        .iter()
        .filter(|(name, _)| !before.servers.contains_key(*name));
    for (name, new) in added {
        if !new.addable_at_runtime() {
            return None;
        }
        changes.push(change(name, Change::Add(new.clone())));
    }
    changes.append(&mut removals);
    Some(changes)
}
