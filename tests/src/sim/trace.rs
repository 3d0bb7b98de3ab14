//! The trace of a run: one line per event (an operation and its outcome, a
//! fault, a check), folded into a 64-bit FNV-1a hash. Two runs of one seed
//! must print the same hash; a failure prints the last lines.

use std::collections::VecDeque;

/// Lines kept for a failure report.
const KEPT_LINES: usize = 60;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Trace {
    hash: u64,
    lines: u64,
    recent: VecDeque<String>,
    verbose: bool,
}

impl Trace {
    /// An empty trace; `verbose` also prints every line.
    pub fn new(verbose: bool) -> Self {
        Trace { hash: 0xcbf2_9ce4_8422_2325, lines: 0, recent: VecDeque::new(), verbose }
    }

    /// Adds one event.
    pub fn line(&mut self, text: String) {
        for byte in text.bytes().chain(std::iter::once(b'\n')) {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.lines += 1;
        if self.verbose {
            println!("{text}");
        }
        if self.recent.len() == KEPT_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(text);
    }

    /// The hash of every line so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Lines so far.
    pub fn len(&self) -> u64 {
        self.lines
    }

    /// Whether nothing was traced.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The last lines, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = &String> {
        self.recent.iter()
    }
}
