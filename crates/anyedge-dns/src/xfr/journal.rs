//! The journal: a bounded chain of differences for answering IXFR.

use std::collections::VecDeque;
use std::sync::Arc;

use super::Diff;

/// A bounded chain of consecutive differences ending at the current version
/// of one zone, for answering IXFR.
#[derive(Debug, Clone)]
pub struct Journal {
    diffs: VecDeque<Arc<Diff>>,
    records: usize,
    max_diffs: usize,
    max_records: usize,
}

impl Journal {
    /// At most `max_diffs` differences and `max_records` records in all;
    /// the oldest go first.
    pub fn new(max_diffs: usize, max_records: usize) -> Journal {
        Journal {
            diffs: VecDeque::new(),
            records: 0,
            max_diffs: max_diffs.max(1),
            max_records,
        }
    }

    /// Appends the next difference. One that does not start where the chain
    /// ends restarts the chain; one larger than the whole budget empties it
    /// (an IXFR that big is no better than an AXFR). Returns whether it was
    /// kept.
    pub fn push(&mut self, d: Arc<Diff>) -> bool {
        if d.records() > self.max_records {
            self.clear();
            return false;
        }
        if self
            .diffs
            .back()
            .is_some_and(|last| last.to_serial() != d.from_serial())
        {
            self.clear();
        }
        self.records += d.records();
        self.diffs.push_back(d);
        while self.diffs.len() > self.max_diffs || self.records > self.max_records {
            match self.diffs.pop_front() {
                Some(old) => self.records -= old.records(),
                None => break,
            }
        }
        true
    }

    /// The differences leading from serial `from` to serial `to`, if the
    /// journal has all of them.
    pub fn chain(&self, from: u32, to: u32) -> Option<Vec<Arc<Diff>>> {
        let start = self.diffs.iter().position(|d| d.from_serial() == from)?;
        let v: Vec<Arc<Diff>> = self.diffs.iter().skip(start).cloned().collect();
        (v.last()?.to_serial() == to).then_some(v)
    }

    pub fn clear(&mut self) {
        self.diffs.clear();
        self.records = 0;
    }
    pub fn len(&self) -> usize {
        self.diffs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.diffs.is_empty()
    }
    /// Oldest serial an IXFR can start from.
    pub fn oldest_serial(&self) -> Option<u32> {
        self.diffs.front().map(|d| d.from_serial())
    }
}
