//! Arbitrary bytes as the JSON body of an API write, through the API's own
//! decoding and validation (`aqueduct::api::fuzzing`, feature `fuzzing`).
//! The first byte picks the kind of body: frontend PUT, backend PUT,
//! member PUT, registration heartbeat, A/B switch.
//!
//! Properties: decoding and validation never panic; an accepted body's
//! command applies to a replica holding one object of each kind (or is
//! refused by it as the handler would be: not found, not dynamic), and the
//! view then shows what the command wrote, as written, and renders with
//! `check_render`'s properties, including a plan from the rendering before.

#![no_main]

use aqueduct::api::fuzzing;
use aqueduct::crdt::Command;
use aqueduct::crdt::model::{
    ConfigView, Host, MemberKey, Name, Port, RegistrationKey, ServiceName, Version,
};
use aqueduct_fuzz::{NOW_MS, check_render, populated};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&kind, body)) = input.split_first() else {
        return;
    };
    let name = |n: &str| Name::new(n).expect("a valid name");
    let command = match kind % 5 {
        // `static` and `dyn` exist in `populated`; `new` does not.
        0 => fuzzing::frontend_put(&name("web"), body),
        1 => fuzzing::backend_put(&name(if kind & 0x80 == 0 { "static" } else { "new" }), body),
        2 => fuzzing::member_put(
            &MemberKey {
                backend: name("static"),
                host: Host::new("10.0.0.3").expect("a valid host"),
                port: Port::new(80).expect("a valid port"),
            },
            body,
        ),
        3 => fuzzing::register(
            &RegistrationKey {
                service: ServiceName::new("app").expect("a valid service"),
                version: Version::new("2.0.0").expect("a valid version"),
                host: Host::new("10.0.0.4").expect("a valid host"),
                port: Port::new(9000).expect("a valid port"),
            },
            body,
            NOW_MS,
        ),
        _ => fuzzing::switch(&name(if kind & 0x80 == 0 { "dyn" } else { "static" }), body),
    };
    let Ok(command) = command else {
        return;
    };
    let mut replica = populated(1);
    let before = check_render(&replica.view(), NOW_MS, None);
    if replica.execute(&command, NOW_MS).is_ok() {
        let view = replica.view();
        assert_written(&command, &view);
        check_render(&view, NOW_MS, Some(&before));
    }
});

/// The view shows what an applied command wrote, as it was written.
fn assert_written(command: &Command, view: &ConfigView) {
    match command {
        Command::PutFrontend { name, frontend } => {
            assert_eq!(view.frontends.get(name), Some(frontend));
        }
        Command::PutBackend { name, backend } => {
            assert_eq!(view.backends.get(name), Some(backend));
        }
        Command::PutMember { key, member } => {
            let backend = &view.backends[&key.backend];
            assert_eq!(
                backend.members.get(&(key.host.clone(), key.port)),
                Some(member)
            );
        }
        Command::Register { key, registration } => {
            assert_eq!(view.registrations.get(key), Some(registration));
        }
        Command::SwitchBackend {
            name,
            service,
            version,
        } => {
            let backend = &view.backends[name];
            assert_eq!(backend.version.as_ref(), Some(version));
            if let Some(service) = service {
                assert_eq!(backend.service.as_ref(), Some(service));
            }
        }
        _ => unreachable!("no body makes {command:?}"),
    }
}
