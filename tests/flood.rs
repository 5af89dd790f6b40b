//! A write flood against real peers: clients write to one peer of three as
//! fast as they can (`aqueduct bench flood`, for `AQUEDUCT_FLOOD_SECONDS`,
//! 5 by default; `scripts/bench-flood.sh` runs it for 30 s and reports the
//! numbers). Every write is answered, the API keeps answering a separate
//! client, the mesh converges once the flood stops, and memory stays
//! bounded. Timings are printed, not asserted.

mod support;

use serde_json::Value;

/// Writing clients: well under the API's limit of requests in progress,
/// so none may be refused.
const CLIENTS: &str = "8";
/// The writes cycle through 1,000 backends, a state of a few MiB: a peer
/// whose memory went past this while the state stayed that size would be
/// buffering without bound.
const RSS_MAX_MIB: f64 = 128.0;

#[test]
fn a_write_flood_is_answered_and_converges_while_memory_stays_bounded() {
    let seconds = std::env::var("AQUEDUCT_FLOOD_SECONDS").unwrap_or_else(|_| "5".to_owned());
    let out = support::aqueduct(&[
        "bench",
        "--json",
        "flood",
        "--seconds",
        &seconds,
        "--clients",
        CLIENTS,
    ]);
    let report: Value = serde_json::from_str(out.trim()).expect("one JSON report");
    println!("{report}");
    assert!(report["writes_accepted"].as_u64() > Some(0), "{report}");
    assert_eq!(report["writes_failed"], 0, "{report}");
    assert_eq!(report["writes_refused"], 0, "{report}");
    // The separate client's /health and /frontends were always answered.
    assert_eq!(report["probe_failures"], 0, "{report}");
    // The benchmark fails unless all three peers converged afterwards.
    assert!(report["converged_after_flood_ms"].is_number(), "{report}");
    for rss in report["rss_mib"]["max"].as_array().expect("per peer") {
        let rss = rss.as_f64().expect("MiB");
        assert!(rss < RSS_MAX_MIB, "a peer reached {rss} MiB: {report}");
    }
}
