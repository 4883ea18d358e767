//! A linearizability checker for histories of register operations (read, write,
//! compare-and-swap) on keys, as recorded by the fault tests.
//!
//! Pure: it takes a finished history and does no I/O. Keys are independent registers, so each
//! key's sub-history is checked on its own (linearizability is compositional), which keeps
//! every search small. The search is Wing & Gong's, with Lowe's memoisation: a state is the set
//! of operations already linearized plus the register's value, and a state seen once is never
//! explored again. Unknown operations get one refinement: a state is also skipped when one
//! with the same known operations and value, but a subset of its unknown operations, was
//! explored (having left more unknown operations unused, that state could do everything this
//! one can); and known operations are tried before unknown ones. Without it, a few dozen
//! timed-out writes on one key make the search exponential.
//!
//! Operations whose outcome the client could not learn (a timeout, a dropped connection after
//! the request was sent, a server error that does not say whether the write was applied) are
//! [`Outcome::Unknown`]: they may take effect at any point after their invocation, or never.

use std::collections::HashMap;
use std::fmt;

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// A linearizable read (`quorum=true`).
    Read,
    /// An unconditional write of the value.
    Write(String),
    /// Replace `expect` with `new` (`prevValue=expect`).
    Cas { expect: String, new: String },
}

/// What the client learnt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The value read (`None`: the key did not exist).
    Read(Option<String>),
    /// The write was acknowledged.
    Written,
    /// The CAS was applied (`true`) or refused because the value differed (`false`).
    Cas(bool),
    /// No answer that says whether the operation took effect.
    Unknown,
}

/// One operation of a history. Times are in any unit shared by the whole history (e.g.
/// nanoseconds since the test started); `complete` is ignored for [`Outcome::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub client: usize,
    pub op: Op,
    pub invoke: u64,
    pub complete: u64,
    pub outcome: Outcome,
}

/// Why a history could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// No order of the operations on `key` explains what the clients saw.
    #[error("history of key {key:?} is not linearizable: {detail}")]
    NotLinearizable { key: String, detail: String },
    /// An entry contradicts itself (a read answered as a write, completion before invocation).
    #[error("entry {index} of key {key:?} is malformed: {why}; fix the recorder")]
    Malformed {
        key: String,
        index: usize,
        why: &'static str,
    },
    /// The search gave up; split the history into smaller ones.
    #[error("history of key {key:?} needs more than {budget} search states; record fewer operations per key")]
    TooLarge { key: String, budget: usize },
}

/// How many search states one key may use before [`check`] gives up.
pub const STATE_BUDGET: usize = 2_000_000;

/// Checks every key's history against a register that starts absent.
pub fn check(history: &[Entry]) -> Result<(), CheckError> {
    let mut keys: Vec<&str> = history.iter().map(|e| e.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let ops: Vec<&Entry> = history.iter().filter(|e| e.key == key).collect();
        check_key(key, &ops, None, STATE_BUDGET)?;
    }
    Ok(())
}

/// Checks one key's operations against a register that starts at `initial`.
pub fn check_key(
    key: &str,
    ops: &[&Entry],
    initial: Option<&str>,
    budget: usize,
) -> Result<(), CheckError> {
    let mut calls = Vec::with_capacity(ops.len());
    for (index, e) in ops.iter().enumerate() {
        let malformed = |why| CheckError::Malformed {
            key: key.to_string(),
            index,
            why,
        };
        let known = match (&e.op, &e.outcome) {
            // A read with no answer constrains nothing.
            (Op::Read, Outcome::Unknown) => continue,
            (_, Outcome::Unknown) => false,
            (Op::Read, Outcome::Read(_))
            | (Op::Write(_), Outcome::Written)
            | (Op::Cas { .. }, Outcome::Cas(_)) => true,
            _ => return Err(malformed("the outcome does not belong to the operation")),
        };
        if known && e.complete < e.invoke {
            return Err(malformed("it completes before it is invoked"));
        }
        calls.push(Call {
            op: &e.op,
            outcome: &e.outcome,
            invoke: e.invoke,
            complete: if known { e.complete } else { u64::MAX },
            known,
        });
    }
    // The search takes the earliest-invoked candidates first and stops scanning at the first
    // call invoked after the earliest pending completion.
    calls.sort_by_key(|c| (c.invoke, c.complete));
    let value = initial.map(str::to_string);
    let mut known = Bits::new(calls.len());
    for (i, c) in calls.iter().enumerate() {
        if c.known {
            known.flip(i);
        }
    }
    let mut search = Search {
        calls: &calls,
        initial: value.clone(),
        known,
        seen: HashMap::new(),
        states: 0,
        budget,
        deepest: 0,
        deepest_prefix: Vec::new(),
    };
    let mut done = Bits::new(calls.len());
    let mut path = Vec::new();
    match search.explore(&mut done, value, false, &mut path) {
        Found::Yes => Ok(()),
        Found::No => Err(CheckError::NotLinearizable {
            key: key.to_string(),
            detail: search.explain(),
        }),
        Found::GaveUp => Err(CheckError::TooLarge {
            key: key.to_string(),
            budget,
        }),
    }
}

struct Call<'a> {
    op: &'a Op,
    outcome: &'a Outcome,
    invoke: u64,
    /// `u64::MAX` when unknown: such a call may be linearized at any point after its invocation.
    complete: u64,
    known: bool,
}

impl Call<'_> {
    /// Applies the call to `value`; `None` when what the client saw contradicts `value`.
    fn step(&self, value: &Option<String>) -> Option<Option<String>> {
        match (self.op, self.outcome) {
            (Op::Read, Outcome::Read(seen)) => (seen == value).then(|| value.clone()),
            (Op::Write(v), _) => Some(Some(v.clone())),
            (Op::Cas { expect, new }, Outcome::Cas(true) | Outcome::Unknown) => {
                (value.as_deref() == Some(expect.as_str())).then(|| Some(new.clone()))
            }
            (Op::Cas { expect, .. }, Outcome::Cas(false)) => {
                (value.as_deref() != Some(expect.as_str())).then(|| value.clone())
            }
            _ => None,
        }
    }
}

impl fmt::Display for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            Op::Read => write!(f, "read")?,
            Op::Write(v) => write!(f, "write {v:?}")?,
            Op::Cas { expect, new } => write!(f, "cas {expect:?}->{new:?}")?,
        }
        match self.outcome {
            Outcome::Read(v) => write!(f, " = {v:?}")?,
            Outcome::Written => write!(f, " ok")?,
            Outcome::Cas(ok) => write!(f, " {}", if *ok { "ok" } else { "refused" })?,
            Outcome::Unknown => write!(f, " unknown")?,
        }
        if self.known {
            write!(f, " [{}, {}]", self.invoke, self.complete)
        } else {
            write!(f, " [{}, ?]", self.invoke)
        }
    }
}

/// A fixed-size bit set: which calls are linearized.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn flip(&mut self, i: usize) {
        self.0[i / 64] ^= 1 << (i % 64);
    }
    /// `(self & mask, self & !mask)`.
    fn split(&self, mask: &Bits) -> (Bits, Bits) {
        let inside = self.0.iter().zip(&mask.0).map(|(a, m)| a & m).collect();
        let outside = self.0.iter().zip(&mask.0).map(|(a, m)| a & !m).collect();
        (Bits(inside), Bits(outside))
    }
    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

enum Found {
    Yes,
    No,
    GaveUp,
}

struct Search<'a> {
    calls: &'a [Call<'a>],
    initial: Option<String>,
    /// Which calls have a known outcome.
    known: Bits,
    /// Explored states: (known calls linearized, value) -> the sets of unknown calls
    /// linearized with them.
    seen: HashMap<(Bits, Option<String>), Vec<Bits>>,
    states: usize,
    budget: usize,
    /// The longest linearized prefix found, for the error message.
    deepest: usize,
    deepest_prefix: Vec<usize>,
}

impl Search<'_> {
    /// `after_blind`: the last call placed was an unknown write.
    fn explore(
        &mut self,
        done: &mut Bits,
        value: Option<String>,
        after_blind: bool,
        path: &mut Vec<usize>,
    ) -> Found {
        // Every call whose completion was observed is placed: the rest are unknown and may
        // never have happened.
        let pending_known = (0..self.calls.len()).any(|i| !done.get(i) && self.calls[i].known);
        if !pending_known {
            return Found::Yes;
        }
        let (known, unknown) = done.split(&self.known);
        let explored = self.seen.entry((known, value.clone())).or_default();
        if explored.iter().any(|u| u.is_subset_of(&unknown)) {
            return Found::No;
        }
        explored.push(unknown);
        self.states += 1;
        if self.states > self.budget {
            return Found::GaveUp;
        }
        if path.len() > self.deepest || self.deepest_prefix.is_empty() {
            self.deepest = path.len();
            self.deepest_prefix = path.clone();
        }
        // A call can go next only if no other pending call completed before it was invoked.
        let horizon = (0..self.calls.len())
            .filter(|&i| !done.get(i))
            .map(|i| self.calls[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        let candidates = (0..self.calls.len()).take_while(|&i| self.calls[i].invoke <= horizon);
        let (known, unknown): (Vec<usize>, Vec<usize>) =
            candidates.partition(|&i| self.calls[i].known);
        for i in known.into_iter().chain(unknown) {
            let call = &self.calls[i];
            let blind = !call.known && matches!(call.op, Op::Write(_));
            // Two unknown writes in a row leave the value of the second: placing the second
            // alone reaches the same value with one more unknown call unused, which the
            // parent state tries anyway.
            if done.get(i) || (after_blind && blind) {
                continue;
            }
            let Some(next) = call.step(&value) else {
                continue;
            };
            done.flip(i);
            path.push(i);
            let found = self.explore(done, next, blind, path);
            path.pop();
            done.flip(i);
            match found {
                Found::No => {}
                other => return other,
            }
        }
        Found::No
    }

    /// The longest order found, and the calls that could have come next but contradict it.
    fn explain(&self) -> String {
        let mut out = String::from("longest linearizable prefix:");
        let mut value = self.initial.clone();
        let mut done = Bits::new(self.calls.len());
        for &i in &self.deepest_prefix {
            out.push_str(&format!("\n  {}", self.calls[i]));
            value = self.calls[i].step(&value).unwrap_or(None);
            done.flip(i);
        }
        out.push_str(&format!(
            "\nthen the value is {value:?} and none of these fits:"
        ));
        let horizon = (0..self.calls.len())
            .filter(|&i| !done.get(i))
            .map(|i| self.calls[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        for (i, call) in self.calls.iter().enumerate() {
            if !done.get(i) && call.invoke <= horizon {
                out.push_str(&format!("\n  {call}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
