//! Fault rules between the switch's ports, without I/O: who may reach whom, what is lost, what
//! is late. The daemon asks [`Faults::decide`] once per (frame, destination port).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// A small deterministic PRNG (SplitMix64): the same seed gives the same drops, so a test that
/// loses frames loses the same ones on every run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A stable seed from a name (FNV-1a), so each cluster has its own repeatable loss pattern.
pub fn seed_from(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What happens to one frame on its way to one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Deliver {
        delay: Duration,
    },
    /// The ports are on different sides of a partition, or one of them is isolated.
    Cut,
    /// Dropped by the loss rate.
    Lost,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("node index {index} is out of range; the cluster has nodes 0 to {last}")]
    NoSuchNode { index: usize, last: usize },
    #[error("node index {0} is in more than one partition set; name each node once")]
    Repeated(usize),
    #[error("a partition set is empty; give at least one node per set")]
    EmptySet,
    #[error("loss {0}% is over 100%")]
    Loss(u8),
}

/// The active rules, as the control socket reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Sets of node indices that can reach each other; nodes in no set are cut off from all.
    /// `None`: no partition.
    pub partition: Option<Vec<Vec<usize>>>,
    /// Nodes that reach nobody (on top of any partition).
    pub isolated: Vec<usize>,
    pub loss_percent: u8,
    /// Added to every frame.
    pub delay_ms: u32,
    /// Added to every frame a node sends or receives.
    pub node_delay_ms: BTreeMap<usize, u32>,
}

/// Rules plus the PRNG for a fixed number of ports.
#[derive(Debug, Clone)]
pub struct Faults {
    ports: usize,
    rules: Rules,
    /// Partition set of each port (index into `rules.partition`), `None` if in no set.
    side: Vec<Option<usize>>,
    seed: u64,
    rng: Rng,
}

impl Faults {
    pub fn new(ports: usize, seed: u64) -> Self {
        Faults {
            ports,
            rules: Rules::default(),
            side: vec![Some(0); ports],
            seed,
            rng: Rng::new(seed),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    fn check(&self, index: usize) -> Result<(), FaultError> {
        if index >= self.ports {
            return Err(FaultError::NoSuchNode {
                index,
                last: self.ports.saturating_sub(1),
            });
        }
        Ok(())
    }

    /// Frames only pass between ports of the same set; a port named in no set is cut off.
    /// Replaces an earlier partition; isolation, loss and delay stay.
    pub fn partition(&mut self, sets: &[Vec<usize>]) -> Result<(), FaultError> {
        let mut side = vec![None; self.ports];
        for (i, set) in sets.iter().enumerate() {
            if set.is_empty() {
                return Err(FaultError::EmptySet);
            }
            for &n in set {
                self.check(n)?;
                if side[n].is_some() {
                    return Err(FaultError::Repeated(n));
                }
                side[n] = Some(i);
            }
        }
        self.side = side;
        self.rules.partition = Some(sets.to_vec());
        Ok(())
    }

    pub fn isolate(&mut self, node: usize) -> Result<(), FaultError> {
        self.check(node)?;
        if !self.rules.isolated.contains(&node) {
            self.rules.isolated.push(node);
            self.rules.isolated.sort_unstable();
        }
        Ok(())
    }

    /// Drops `percent` of frames between nodes. Setting it restarts the PRNG from the cluster's
    /// seed, so the same sequence of frames after the same call loses the same frames.
    pub fn set_loss(&mut self, percent: u8) -> Result<(), FaultError> {
        if percent > 100 {
            return Err(FaultError::Loss(percent));
        }
        self.rules.loss_percent = percent;
        self.rng = Rng::new(self.seed);
        Ok(())
    }

    /// Delay for every frame (`node: None`) or for frames from and to one node.
    pub fn set_delay(&mut self, node: Option<usize>, ms: u32) -> Result<(), FaultError> {
        match node {
            None => self.rules.delay_ms = ms,
            Some(n) => {
                self.check(n)?;
                if ms == 0 {
                    self.rules.node_delay_ms.remove(&n);
                } else {
                    self.rules.node_delay_ms.insert(n, ms);
                }
            }
        }
        Ok(())
    }

    /// Back to a perfect network: no partition, isolation, loss or delay.
    pub fn heal(&mut self) {
        *self = Faults::new(self.ports, self.seed);
    }

    /// The fate of one frame from port `src` to port `dst`.
    pub fn decide(&mut self, src: usize, dst: usize) -> Verdict {
        let iso = &self.rules.isolated;
        if iso.contains(&src) || iso.contains(&dst) {
            return Verdict::Cut;
        }
        let side = |p: usize| self.side.get(p).copied().flatten();
        match (side(src), side(dst)) {
            (Some(a), Some(b)) if a == b => {}
            _ => return Verdict::Cut,
        }
        if self.rules.loss_percent > 0
            && self.rng.next_u64() % 100 < u64::from(self.rules.loss_percent)
        {
            return Verdict::Lost;
        }
        let node = |p: usize| self.rules.node_delay_ms.get(&p).copied().unwrap_or(0);
        let ms = u64::from(self.rules.delay_ms) + u64::from(node(src)) + u64::from(node(dst));
        Verdict::Deliver {
            delay: Duration::from_millis(ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Verdict = Verdict::Deliver {
        delay: Duration::ZERO,
    };

    fn matrix(f: &mut Faults) -> Vec<Vec<char>> {
        (0..f.ports)
            .map(|s| {
                (0..f.ports)
                    .map(|d| match f.decide(s, d) {
                        Verdict::Deliver { .. } => 'y',
                        Verdict::Cut => '-',
                        Verdict::Lost => 'l',
                    })
                    .collect()
            })
            .collect()
    }

    fn rows(s: &[&str]) -> Vec<Vec<char>> {
        s.iter().map(|r| r.chars().collect()).collect()
    }

    #[test]
    fn reachability_table() {
        type Setup = fn(&mut Faults) -> Result<(), FaultError>;
        let cases: &[(&str, Setup, &[&str])] = &[
            ("healthy", |_| Ok(()), &["yyyy", "yyyy", "yyyy", "yyyy"]),
            (
                "isolate 1",
                |f| f.isolate(1),
                &["y-yy", "----", "y-yy", "y-yy"],
            ),
            (
                "partition 0 | 1,2 (3 unnamed)",
                |f| f.partition(&[vec![0], vec![1, 2]]),
                &["y---", "-yy-", "-yy-", "----"],
            ),
            (
                "partition 0,3 | 1,2",
                |f| f.partition(&[vec![0, 3], vec![1, 2]]),
                &["y--y", "-yy-", "-yy-", "y--y"],
            ),
            (
                "partition then isolate",
                |f| {
                    f.partition(&[vec![0, 1], vec![2, 3]])?;
                    f.isolate(3)
                },
                &["yy--", "yy--", "--y-", "----"],
            ),
            (
                "a later partition replaces the earlier",
                |f| {
                    f.partition(&[vec![0], vec![1, 2, 3]])?;
                    f.partition(&[vec![0, 1, 2, 3]])
                },
                &["yyyy", "yyyy", "yyyy", "yyyy"],
            ),
            (
                "heal",
                |f| {
                    f.partition(&[vec![0], vec![1]])?;
                    f.isolate(2)?;
                    f.set_loss(100)?;
                    f.heal();
                    Ok(())
                },
                &["yyyy", "yyyy", "yyyy", "yyyy"],
            ),
            (
                "all lost",
                |f| f.set_loss(100),
                &["llll", "llll", "llll", "llll"],
            ),
        ];
        for (name, setup, want) in cases {
            let mut f = Faults::new(4, 1);
            setup(&mut f).expect(name);
            assert_eq!(matrix(&mut f), rows(want), "{name}");
        }
    }

    #[test]
    fn bad_requests_change_nothing() {
        let mut f = Faults::new(3, 1);
        assert_eq!(
            f.isolate(3),
            Err(FaultError::NoSuchNode { index: 3, last: 2 })
        );
        assert_eq!(
            f.partition(&[vec![0], vec![0, 1]]),
            Err(FaultError::Repeated(0))
        );
        assert_eq!(f.partition(&[vec![0], vec![]]), Err(FaultError::EmptySet));
        assert_eq!(
            f.partition(&[vec![7]]),
            Err(FaultError::NoSuchNode { index: 7, last: 2 })
        );
        assert_eq!(f.set_loss(101), Err(FaultError::Loss(101)));
        assert_eq!(
            f.set_delay(Some(5), 10),
            Err(FaultError::NoSuchNode { index: 5, last: 2 })
        );
        assert_eq!(f.rules(), &Rules::default());
        assert_eq!(f.decide(0, 2), NOW);
    }

    #[test]
    fn delays_add_up() {
        let mut f = Faults::new(3, 1);
        f.set_delay(None, 10).expect("global");
        f.set_delay(Some(1), 100).expect("node");
        let ms = |f: &mut Faults, s, d| match f.decide(s, d) {
            Verdict::Deliver { delay } => delay.as_millis(),
            v => panic!("{v:?}"),
        };
        assert_eq!(ms(&mut f, 0, 2), 10);
        assert_eq!(ms(&mut f, 0, 1), 110);
        assert_eq!(ms(&mut f, 1, 2), 110);
        f.set_delay(Some(2), 1000).expect("node");
        assert_eq!(ms(&mut f, 1, 2), 1110);
        f.set_delay(Some(1), 0).expect("clear");
        assert_eq!(f.rules().node_delay_ms.len(), 1);
        assert_eq!(ms(&mut f, 0, 1), 10);
    }

    #[test]
    fn loss_is_repeatable_and_near_its_rate() {
        let run = |seed| {
            let mut f = Faults::new(2, seed);
            f.set_loss(30).expect("loss");
            (0..10_000)
                .map(|_| f.decide(0, 1) == Verdict::Lost)
                .collect::<Vec<_>>()
        };
        let a = run(seed_from("default"));
        assert_eq!(a, run(seed_from("default")), "same seed, same drops");
        assert_ne!(a, run(seed_from("other")), "another cluster, other drops");
        let lost = a.iter().filter(|&&l| l).count();
        assert!((2700..3300).contains(&lost), "{lost} of 10000 lost at 30%");
        // Setting the rate again restarts the sequence.
        let mut f = Faults::new(2, 9);
        f.set_loss(50).expect("loss");
        let first: Vec<_> = (0..64).map(|_| f.decide(0, 1)).collect();
        f.set_loss(50).expect("loss");
        let again: Vec<_> = (0..64).map(|_| f.decide(0, 1)).collect();
        assert_eq!(first, again);
    }
}
