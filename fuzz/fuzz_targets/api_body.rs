//! Arbitrary bytes as the JSON body of an API write, through the API's own
//! decoding and validation (`aqueduct::api::fuzzing`, feature `fuzzing`).
//! The first byte picks the kind of body: frontend PUT, backend PUT,
//! member PUT, registration heartbeat, A/B switch.
//!
//! Properties: decoding and validation never panic; an accepted body's
//! command applies to a replica holding one object of each kind (or is
//! refused by it as the handler would be: not found, not dynamic), and the
//! result renders with `check_render`'s properties, including a plan from
//! the rendering before.

#![no_main]

use aqueduct::api::fuzzing;
use aqueduct::crdt::model::{Host, MemberKey, Name, Port, RegistrationKey, ServiceName, Version};
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
        check_render(&replica.view(), NOW_MS, Some(&before));
    }
});
