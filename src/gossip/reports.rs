//! Peer reports: each peer's small, fast-changing status (its state's
//! digest and its HAProxy's apply counters), sent by each peer to a few
//! others every round, in turns, so that any peer can show the whole mesh,
//! and tell which peers have converged with it, without asking each one.
//!
//! Owns the report table and its merge rule: a report is taken only from
//! its subject (the transport names the sender from its certificate), of
//! the generation membership knows that peer by, and per peer the highest
//! (generation, sequence) wins, so reordered copies never roll a peer's
//! status back. Reports are not relayed: a relayed report could not be told
//! from a forged one, and one forged with the highest sequence would stand
//! for good. Must not do I/O, and must not put anything here into the
//! replicated document: reports change every round and are worth nothing
//! once stale.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crdt::Digest;

use super::{PeerId, Time};

/// Reports kept, and carried in one message, at most. A mesh larger than
/// this still works; some peers are just missing from every table.
pub const REPORTS_MAX: usize = 1024;

/// A peer's report gets a new sequence number (and spreads as news) at
/// most this often, however fast its digest changes under writes.
pub const REPORT_NEWS_EVERY: Duration = Duration::from_secs(1);

/// Peers a node sends its own report to in one round, taking the active
/// peers in turns: in a mesh of N peers, each hears from each other one
/// every (N − 1) / 4 rounds at most (every round up to five peers), for
/// four small messages per peer and round.
pub const REPORT_FANOUT: usize = 4;

/// The longest text (HAProxy's last error, the applied hash) a report
/// carries, in bytes. Longer text is cut at a character boundary by its
/// sender; a report that arrives with more is dropped.
pub const REPORT_TEXT_MAX: usize = 512;

/// What one peer says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Whose report.
    pub peer: PeerId,
    /// Its restart generation when it wrote this.
    pub generation: u32,
    /// Grows with every report of one generation.
    pub seq: u64,
    /// The digest of its replicated state.
    pub digest: Digest,
    /// Its HAProxy driver's counters, if it runs one.
    pub haproxy: Option<ApplyReport>,
}

/// A peer's HAProxy apply status, reduced to what the mesh view shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Whether the peer runs an HAProxy (false: render only).
    pub managed: bool,
    /// Whether its HAProxy is running.
    pub running: bool,
    /// Hash of the configuration its HAProxy runs.
    pub applied_hash: Option<String>,
    /// Reloads done.
    pub reloads: u64,
    /// Reloads that failed.
    pub reload_failures: u64,
    /// Member changes applied without a reload.
    pub runtime_changes: u64,
    /// Configurations HAProxy refused.
    pub rejected: u64,
    /// Times HAProxy was restarted after dying.
    pub restarts: u64,
    /// The last error, until the next success.
    pub last_error: Option<String>,
}

impl ApplyReport {
    /// This report with its texts cut to [`REPORT_TEXT_MAX`] bytes.
    pub fn bounded(mut self) -> ApplyReport {
        for text in [&mut self.applied_hash, &mut self.last_error]
            .into_iter()
            .flatten()
        {
            if text.len() > REPORT_TEXT_MAX {
                let mut end = REPORT_TEXT_MAX;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
        }
        self
    }

    fn within_bounds(&self) -> bool {
        [&self.applied_hash, &self.last_error]
            .into_iter()
            .flatten()
            .all(|text| text.len() <= REPORT_TEXT_MAX)
    }
}

/// What became of a reports message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReportsMerged {
    /// It broke a bound, or its sender's report was of another generation
    /// than membership knows: dropped whole.
    Refused,
    /// The sender's own report was taken (if newer); reports it carried
    /// about other peers were ignored.
    Taken {
        /// How many.
        about_others: usize,
    },
}

/// A report and when this node last heard something new from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardReport {
    /// The report.
    pub report: PeerReport,
    /// When this report arrived (the first copy; repeats of it do not
    /// count).
    pub heard_at: Time,
}

/// The reports of other peers that one node knows. See the module
/// documentation.
#[derive(Debug, Default)]
pub(super) struct Reports {
    others: BTreeMap<PeerId, HeardReport>,
    /// This node's latest report (`None` before the first round).
    own: Option<PeerReport>,
    /// When `own` was made.
    own_made_at: Time,
    /// This node's HAProxy status, as the shell last set it.
    own_haproxy: Option<ApplyReport>,
}

impl Reports {
    pub(super) fn set_own_haproxy(&mut self, report: Option<ApplyReport>) {
        self.own_haproxy = report.map(ApplyReport::bounded);
    }

    pub(super) fn others(&self) -> impl Iterator<Item = &HeardReport> {
        self.others.values()
    }

    /// This node's report for a round: a new one if its digest or HAProxy
    /// status changed, at most every [`REPORT_NEWS_EVERY`].
    pub(super) fn own(
        &mut self,
        now: Time,
        me: PeerId,
        generation: u32,
        digest: Digest,
    ) -> PeerReport {
        let changed = self.own.as_ref().is_none_or(|own| {
            own.generation != generation || own.digest != digest || own.haproxy != self.own_haproxy
        });
        let due = self.own.is_none() || now >= self.own_made_at + REPORT_NEWS_EVERY;
        if changed && due {
            let seq = self.own.as_ref().map_or(0, |own| own.seq + 1);
            self.own = Some(PeerReport {
                peer: me,
                generation,
                seq,
                digest,
                haproxy: self.own_haproxy.clone(),
            });
            self.own_made_at = now;
        }
        self.own.clone().expect("made above when missing")
    }

    /// Takes the report of `from`, of generation `generation` (what
    /// membership knows it by), out of a message it sent. Reports about
    /// other peers (a peer of 2.1 relays them; a forger makes them) are
    /// ignored. Returns what became of the message, for the caller to
    /// count; a refused message changes nothing.
    pub(super) fn merge(
        &mut self,
        now: Time,
        from: PeerId,
        generation: Option<u32>,
        incoming: Vec<PeerReport>,
    ) -> ReportsMerged {
        let within_bounds = incoming.len() <= REPORTS_MAX
            && incoming
                .iter()
                .all(|r| r.haproxy.as_ref().is_none_or(ApplyReport::within_bounds));
        if !within_bounds {
            return ReportsMerged::Refused;
        }
        let about_others = incoming.iter().filter(|r| r.peer != from).count();
        let Some(report) = incoming.into_iter().find(|r| r.peer == from) else {
            return ReportsMerged::Taken { about_others };
        };
        if Some(report.generation) != generation {
            return ReportsMerged::Refused;
        }
        let newer = self.others.get(&from).is_none_or(|known| {
            (report.generation, report.seq) > (known.report.generation, known.report.seq)
        });
        if newer {
            if !self.others.contains_key(&from) && self.others.len() >= REPORTS_MAX {
                self.forget_stalest();
            }
            self.others.insert(
                from,
                HeardReport {
                    report,
                    heard_at: now,
                },
            );
        }
        ReportsMerged::Taken { about_others }
    }

    fn forget_stalest(&mut self) {
        let stalest = self
            .others
            .iter()
            .min_by_key(|(peer, heard)| (heard.heard_at, **peer))
            .map(|(peer, _)| *peer);
        if let Some(peer) = stalest {
            self.others.remove(&peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_long_text_at_a_character_boundary() {
        let long = "é".repeat(REPORT_TEXT_MAX); // two bytes each
        let report = ApplyReport {
            last_error: Some(long),
            applied_hash: Some("abc".to_owned()),
            ..ApplyReport::default()
        }
        .bounded();
        let error = report.last_error.as_deref().expect("kept");
        assert_eq!(error.len(), REPORT_TEXT_MAX);
        assert!(error.chars().all(|c| c == 'é'));
        assert_eq!(report.applied_hash.as_deref(), Some("abc"));
        assert!(report.within_bounds());
    }
}
