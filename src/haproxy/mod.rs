//! The HAProxy driver. [`render`] is part of the deterministic core: the
//! configuration view → `haproxy.cfg` and the plan that moves a running
//! HAProxy to it. The rest (behind the `shell` feature) runs HAProxy:
//! its process, its runtime API, its stats, and the task that applies each
//! new configuration.

pub mod render;
