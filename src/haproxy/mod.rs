//! The HAProxy driver: pure, deterministic rendering of `haproxy.cfg` from
//! the configuration view (askama templates in `templates/`), and the
//! process and runtime-API side that applies it.
//!
//! Not built yet: this module is the home of issue 4 (the HAProxy driver).
