//! The HAProxy driver.
//!
//! [`render`] is part of the deterministic core: the configuration view →
//! `haproxy.cfg`, and the plan (runtime-API commands or a reload) that
//! moves a running HAProxy to it. The rest, behind the `shell` feature, runs
//! HAProxy and decides nothing about content: [`process`] checks
//! configurations (`haproxy -c`) and runs, reloads and stops one
//! master-worker process; [`privileges`] decides whom its workers run as
//! (never root) and prepares their chroot; [`socket`] talks to the runtime API and the
//! master CLI; [`stats`] parses `show stat`; [`driver`] is the task that
//! applies each new configuration, supervises HAProxy and reports.

pub mod render;

#[cfg(feature = "shell")]
pub mod driver;
#[cfg(feature = "shell")]
pub mod privileges;
#[cfg(feature = "shell")]
pub mod process;
#[cfg(feature = "shell")]
pub mod socket;
#[cfg(feature = "shell")]
pub mod stats;
