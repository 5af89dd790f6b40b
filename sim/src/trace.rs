//! A bounded, readable event trace: the last lines before a failure.

use std::collections::VecDeque;

use aqueduct::gossip::Time;

/// The last `capacity` trace lines.
pub struct Trace {
    lines: VecDeque<String>,
    capacity: usize,
}

impl Trace {
    /// An empty trace keeping `capacity` lines.
    pub fn new(capacity: usize) -> Trace {
        Trace {
            lines: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
        }
    }

    /// Appends a line stamped with simulated time.
    pub fn log(&mut self, now: Time, line: impl FnOnce() -> String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(format!(
            "{:>12.3} ms  {}",
            now.as_micros() as f64 / 1000.0,
            line()
        ));
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &String> {
        self.lines.iter()
    }
}
