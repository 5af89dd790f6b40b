//! `GET /metrics`: Prometheus metrics (OpenMetrics text), built from the
//! peer's [`Status`] and the HAProxy driver's status at scrape time.
//!
//! Owns metric names, help texts and units, all prefixed `aqueduct_`. Must
//! not keep state between scrapes: the peer holds the counters.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use super::AppState;
use super::error::ApiError;
use super::quota::Quota;
use super::refusals::Refusals;
use super::server::{ConnectionCounts, ConnectionStats};
use crate::gossip::PeerState;
use crate::haproxy::driver::{ApplyStatus, Driver};
use crate::peer::Status;
use crate::tls_reload::Reloads;

/// What `prometheus_client`'s text encoder produces.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`. The connection series come from the server, when the
/// router is served by one.
pub(crate) async fn scrape(
    State(state): State<AppState>,
    connections: Option<Extension<Arc<ConnectionStats>>>,
) -> Result<Response, ApiError> {
    let status = state.handle.status().await?;
    let haproxy = state.haproxy.as_ref().map(Driver::status);
    let quota_refusals: Vec<(Quota, u64)> = state.quotas.refusals().collect();
    let connections = connections.map(|Extension(stats)| stats.read());
    Ok((
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        render(
            &status,
            haproxy.as_ref(),
            &state.refusals,
            &quota_refusals,
            connections,
        ),
    )
        .into_response())
}

fn render(
    status: &Status,
    haproxy: Option<&ApplyStatus>,
    refusals: &Refusals,
    quota_refusals: &[(Quota, u64)],
    connections: Option<ConnectionCounts>,
) -> String {
    let mut registry = Registry::with_prefix("aqueduct");
    let counters = &status.counters;
    let node = &status.node;
    let counter = |value: u64| ConstCounter::new(value);

    registry.register(
        "writes_acknowledged",
        "Writes acknowledged to API clients (durable)",
        counter(counters.writes_acknowledged),
    );
    registry.register(
        "registry_heartbeats",
        "Registry heartbeats taken",
        counter(counters.heartbeats),
    );
    registry.register(
        "registry_heartbeats_written",
        "Heartbeats written to the replicated state (new or changed registrations)",
        counter(counters.heartbeats_written),
    );
    registry.register(
        "registry_lease_writes",
        "Lease renewals (batched) and expiries written for instances this peer owns",
        counter(counters.lease_writes),
    );
    registry.register(
        "writes_refused",
        "Writes refused by the replica",
        counter(counters.writes_refused),
    );
    registry.register(
        "remote_changes_applied",
        "Changes from other peers applied to the state",
        counter(counters.remote_changes_applied),
    );
    registry.register(
        "store_commits",
        "Store transactions committed (one fsync each)",
        counter(counters.store_commits),
    );
    registry.register(
        "send_queue_drops",
        "Messages dropped: a peer's queue was full, it was unreachable, or its address unknown",
        counter(counters.send_queue_drops),
    );
    registry.register(
        "connections_refused",
        "Connections refused or closed because of the peer's certificate",
        counter(counters.connections_refused),
    );
    registry.register(
        "gossip_frames_refused",
        "Received frames that broke the framing (over the size limit, stalled or cut short); each closed its connection",
        counter(counters.frames_refused),
    );
    registry.register(
        "connections_revoked",
        "Connections closed because a revocation arrived that covers the peer's certificate",
        counter(counters.connections_revoked),
    );
    registry.register(
        "gossip_revoked_messages_dropped",
        "Received messages dropped because their sender's certificate was revoked before they were handled",
        counter(counters.revoked_messages_dropped),
    );
    registry.register(
        "gossip_revocations_refused",
        "Revocations refused: malformed, not signed by the cluster CA, or beyond the bound on revoked names",
        counter(node.revocations_refused),
    );
    registry.register(
        "gossip_revocations_ignored",
        "Revocation messages not read because their sender sent a refused revocation within the last 30 s",
        counter(node.revocations_ignored),
    );
    registry.register(
        "gossip_messages_sent",
        "Gossip messages sent",
        counter(node.messages_sent),
    );
    registry.register(
        "gossip_messages_received",
        "Gossip messages received",
        counter(node.messages_received),
    );
    registry.register_with_unit(
        "gossip_sent",
        "Gossip bytes sent",
        Unit::Bytes,
        counter(node.bytes_sent),
    );
    registry.register_with_unit(
        "gossip_received",
        "Gossip bytes received",
        Unit::Bytes,
        counter(node.bytes_received),
    );
    registry.register(
        "gossip_garbage_dropped",
        "Received messages that did not decode (dropped)",
        counter(node.garbage_dropped),
    );
    registry.register(
        "gossip_messages_too_large",
        "Gossip messages not sent because they would exceed the message size limit",
        counter(node.too_large),
    );
    registry.register(
        "gossip_sync_chunks_cut",
        "Anti-entropy answers cut short at the chunk size (the peer asks for the rest)",
        counter(node.sync_chunks_cut),
    );
    registry.register(
        "gossip_sync_chunks_asked",
        "Requests this peer sent for the next part of an anti-entropy answer",
        counter(node.sync_chunks_asked),
    );
    registry.register(
        "gossip_deltas_refused",
        "Received deltas that failed validation (dropped)",
        counter(node.deltas_refused),
    );
    registry.register(
        "gossip_reports_refused",
        "Received peer-report messages over the bounds, or of a generation membership does not know (dropped)",
        counter(node.reports_refused),
    );
    // What a member may claim but an honest one never does: each kind is
    // listed, seen or not, so that a rate over the series starts from zero.
    let claims = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (kind, count) in [
        ("implausible_dot", node.deltas_implausible_dots),
        ("ahead_of_clock", node.deltas_ahead_of_clock),
        ("data_from_non_member", node.data_from_non_members),
        ("report_about_another_peer", node.reports_about_others),
        (
            "down_declared_by_another_peer",
            node.swim_downs_taken_as_suspicion,
        ),
        ("identity_from_another_peer", node.swim_identities_refused),
    ] {
        claims.get_or_create(&[("kind", kind)]).inc_by(count);
    }
    registry.register(
        "gossip_claims_refused",
        "Peer messages or parts refused for what they claim: a dot no replica can have issued, a stamp \
         or lease renewal beyond the allowed clock skew (the delta is dropped), data from a peer that is \
         not a member, a report about another peer (ignored), another peer declared down (taken as a \
         suspicion), a known peer given another identity by someone else (ignored)",
        claims,
    );
    registry.register(
        "gossip_own_dots_claimed",
        "Remote deltas joined that claimed dots of this peer's replica it never issued: forged, or a \
         copy of this peer's data directory runs elsewhere (its counter moved past them)",
        counter(node.own_dots_claimed),
    );
    registry.register(
        "gossip_dot_conflicts_resolved",
        "Entries of remote deltas under another replica's dot this peer held with another value \
         (a value forged under that dot): each resolved alike on every peer, and the winner passed on \
         so that the dot's replica removes the dot",
        counter(node.dot_conflicts_resolved),
    );

    // Every quota is listed, refused or not, so that a rate over the
    // series starts from zero.
    let by_quota = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (quota, count) in quota_refusals {
        by_quota
            .get_or_create(&[("quota", quota.name())])
            .inc_by(*count);
    }
    registry.register(
        "api_quota_refusals",
        "API writes refused by a quota (nothing written), by quota",
        by_quota,
    );

    let peers = Family::<[(&'static str, &'static str); 1], Gauge>::default();
    for state in [PeerState::Alive, PeerState::Suspect, PeerState::Down] {
        let count = status.peers.iter().filter(|p| p.state == state).count();
        peers
            .get_or_create(&[("state", state.as_str())])
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register("peers", "Peers known to SWIM, by state", peers);

    let refused = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (refusal, count) in refusals.counts() {
        refused
            .get_or_create(&[("reason", refusal.label())])
            .inc_by(count);
    }
    registry.register(
        "api_requests_refused",
        "API requests refused before any handler: no or unknown token, a read token on a write, \
         a foreign Host or Origin, a write body not declared JSON",
        refused,
    );

    // Absent until a digest exchange has found this peer in sync: a
    // missing series, not a made-up number.
    if let Some(lag) = status.convergence_lag_seconds {
        registry.register_with_unit(
            "convergence_lag",
            "Time since a digest exchange last found this peer in sync with another",
            Unit::Seconds,
            ConstGauge::new(lag),
        );
    }
    registry.register_with_unit(
        "document",
        "The document's size: the encoded size of its live entries (what the document quota bounds)",
        Unit::Bytes,
        ConstGauge::new(i64::try_from(status.document_bytes).unwrap_or(i64::MAX)),
    );
    registry.register_with_unit(
        "uptime",
        "Time since the peer started",
        Unit::Seconds,
        ConstGauge::new(status.uptime_seconds),
    );
    register_tls(&mut registry, status);

    if let Some(haproxy) = haproxy {
        register_haproxy(&mut registry, haproxy);
    }
    if let Some(connections) = connections {
        register_connections(&mut registry, connections);
    }

    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

/// Certificates and gossip connections, prefixed `aqueduct_tls_` and
/// `aqueduct_gossip_`.
fn register_tls(registry: &mut Registry, status: &Status) {
    let tls = &status.tls;
    let counters = &status.counters;
    registry.register_with_unit(
        "tls_certificate_expiry_timestamp",
        "When this peer's certificate (the one new handshakes present) expires, in Unix time",
        Unit::Seconds,
        ConstGauge::new(tls.certificate.not_after),
    );
    // One series per connected peer (bounded by the peers SWIM knows);
    // gone once its connection is.
    let peers = Family::<[(&'static str, String); 1], Gauge>::default();
    for peer in &status.peers {
        if let (Some(name), Some(not_after)) = (&peer.name, peer.certificate_not_after) {
            peers
                .get_or_create(&[("peer", name.clone())])
                .set(not_after);
        }
    }
    registry.register_with_unit(
        "tls_peer_certificate_expiry_timestamp",
        "When the certificate each connected peer presented for its connection expires, \
         in Unix time",
        Unit::Seconds,
        peers,
    );
    registry.register(
        "tls_reloads",
        "Replacements of this peer's certificate and key (SIGHUP or changed files): taken (ok) \
         or refused, the previous pair kept",
        reloads_by_result(tls.reloads),
    );
    if let Some(api) = &tls.api {
        registry.register_with_unit(
            "api_tls_certificate_expiry_timestamp",
            "When the API's HTTPS certificate (the one new handshakes present) expires, in Unix \
             time",
            Unit::Seconds,
            ConstGauge::new(api.not_after),
        );
        registry.register(
            "api_tls_reloads",
            "Replacements of the API's HTTPS certificate and key (SIGHUP or changed files): taken \
             (ok) or refused, the previous pair kept",
            reloads_by_result(api.reloads),
        );
    }
    registry.register(
        "gossip_connections_established",
        "Gossip connections established (handshake done, identity accepted), by who dialled",
        counters_by(
            "side",
            [
                ("dialled", counters.connections_dialled),
                ("accepted", counters.connections_accepted),
            ],
        ),
    );
}

fn reloads_by_result(reloads: Reloads) -> Family<[(&'static str, &'static str); 1], Counter> {
    counters_by("result", [("ok", reloads.ok), ("refused", reloads.refused)])
}

/// A family of counters with one label: a series per value.
fn counters_by<const N: usize>(
    label: &'static str,
    counts: [(&'static str, u64); N],
) -> Family<[(&'static str, &'static str); 1], Counter> {
    let family = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (value, count) in counts {
        family.get_or_create(&[(label, value)]).inc_by(count);
    }
    family
}

/// The HAProxy driver's series, prefixed `aqueduct_haproxy_`.
fn register_haproxy(registry: &mut Registry, status: &ApplyStatus) {
    let registry = registry.sub_registry_with_prefix("haproxy");
    let counter = |value: u64| ConstCounter::new(value);
    registry.register(
        "up",
        "Whether this peer's HAProxy is running (0 when render-only)",
        ConstGauge::new(i64::from(status.running)),
    );
    registry.register(
        "reloads",
        "Reloads done (structure changes)",
        counter(status.reloads),
    );
    registry.register(
        "reload_failures",
        "Reloads HAProxy failed; the previous configuration kept serving",
        counter(status.reload_failures),
    );
    registry.register(
        "runtime_changes",
        "Member changes applied through the runtime API, without a reload",
        counter(status.runtime_changes),
    );
    registry.register(
        "runtime_failures",
        "Runtime-API commands HAProxy refused (each followed by a reload)",
        counter(status.runtime_failures),
    );
    registry.register(
        "config_rejected",
        "Configurations haproxy -c refused (never activated)",
        counter(status.rejected),
    );
    registry.register(
        "restarts",
        "Times HAProxy died and was started again",
        counter(status.restarts),
    );
    registry.register(
        "servers",
        "Servers in the applied configuration",
        ConstGauge::new(i64::try_from(status.servers).unwrap_or(i64::MAX)),
    );
    if let Some(ms) = status.last_reload_ms {
        registry.register_with_unit(
            "last_reload",
            "Duration of the last reload, from the command to the new worker confirmed",
            Unit::Seconds,
            ConstGauge::new(ms / 1000.0),
        );
    }
}

/// The API server's connection series, prefixed `aqueduct_api_`.
fn register_connections(registry: &mut Registry, counts: ConnectionCounts) {
    let registry = registry.sub_registry_with_prefix("api");
    registry.register(
        "connections_open",
        "API connections open now",
        ConstGauge::new(i64::try_from(counts.open).unwrap_or(i64::MAX)),
    );
    let refused = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (reason, value) in [
        ("global", counts.refused_global),
        ("per_ip", counts.refused_per_ip),
    ] {
        refused.get_or_create(&[("reason", reason)]).inc_by(value);
    }
    registry.register(
        "connections_refused",
        "API connections closed at once because a cap was reached (reason: global or per_ip)",
        refused,
    );
    let timed_out = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (reason, value) in [
        ("header", counts.timed_out_header),
        ("idle", counts.timed_out_idle),
    ] {
        timed_out.get_or_create(&[("reason", reason)]).inc_by(value);
    }
    registry.register(
        "connections_timed_out",
        "API connections closed for not sending a request head or TLS handshake in time \
         (reason: header) or for moving no byte for the idle timeout (reason: idle)",
        timed_out,
    );
}
