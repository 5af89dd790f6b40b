//! Hybrid logical clock: the stamp that orders concurrent writes to one field.
//!
//! Owns [`Hlc`]. Wall time is always passed in by the caller; this module
//! never reads a clock.

use serde::{Deserialize, Serialize};

/// A hybrid logical timestamp: wall-clock milliseconds, then a logical
/// counter for events within the same millisecond (or while the wall clock
/// lags behind a timestamp already seen). Ordered by `(wall_ms, logical)`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "(u64, u32)", into = "(u64, u32)")]
pub struct Hlc {
    /// Milliseconds since the Unix epoch, as the issuing peer saw them.
    pub wall_ms: u64,
    /// Tie-breaker within one millisecond.
    pub logical: u32,
}

impl Hlc {
    /// The latest wall time a stamp may carry: the year 10000. A peer's
    /// stamp beyond it is refused on decoding, and [`Hlc::next`] never goes
    /// beyond it, so every stamp issued here stays decodable everywhere.
    pub const WALL_MS_MAX: u64 = 253_402_300_800_000;

    /// The stamp for a new local event: later than `last` (everything this
    /// replica has issued or observed) and no earlier than `now_ms`, so a
    /// causally later write always carries a larger stamp even when the
    /// local wall clock runs behind another peer's. At the very end of
    /// representable time (`WALL_MS_MAX`, logical `u32::MAX`) stamps stop
    /// growing and concurrent writes are ordered by their dots alone.
    pub fn next(last: Hlc, now_ms: u64) -> Hlc {
        let now_ms = now_ms.min(Self::WALL_MS_MAX);
        if now_ms > last.wall_ms {
            Hlc {
                wall_ms: now_ms,
                logical: 0,
            }
        } else if last.logical < u32::MAX {
            Hlc {
                wall_ms: last.wall_ms,
                logical: last.logical + 1,
            }
        } else if last.wall_ms < Self::WALL_MS_MAX {
            Hlc {
                wall_ms: last.wall_ms + 1,
                logical: 0,
            }
        } else {
            last
        }
    }
}

impl TryFrom<(u64, u32)> for Hlc {
    type Error = super::DecodeError;
    fn try_from((wall_ms, logical): (u64, u32)) -> Result<Self, Self::Error> {
        if wall_ms > Hlc::WALL_MS_MAX {
            return Err(super::DecodeError::StampTooLate(wall_ms));
        }
        Ok(Hlc { wall_ms, logical })
    }
}

impl From<Hlc> for (u64, u32) {
    fn from(hlc: Hlc) -> Self {
        (hlc.wall_ms, hlc.logical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_follows_the_wall_clock_when_it_moves_forward() {
        let last = Hlc {
            wall_ms: 100,
            logical: 7,
        };
        assert_eq!(
            Hlc::next(last, 150),
            Hlc {
                wall_ms: 150,
                logical: 0
            }
        );
    }

    #[test]
    fn next_stays_ahead_of_a_stamp_from_a_faster_clock() {
        let seen = Hlc {
            wall_ms: 1_000,
            logical: 3,
        };
        let stamp = Hlc::next(seen, 400);
        assert!(stamp > seen);
        assert_eq!(
            stamp,
            Hlc {
                wall_ms: 1_000,
                logical: 4
            }
        );
    }
}
