//! Staged rollout: each machine gets a stable bucket 0..99 per release, and a release is offered
//! to it once the channel's current wave covers its bucket.
//!
//! The bucket hashes the machine id *with the version*, so the machines in the first wave differ
//! from release to release (no machine is always the guinea pig), while a given machine's answer
//! for one release never changes: once eligible, it stays eligible as later waves only widen.

use crust_channels::def::{next_wave, percent_at, Wave};
use crust_channels::Version;
use sha2::{Digest, Sha256};

/// The machine's bucket (0..=99) for `version`.
pub fn bucket(machine_id: &str, version: &Version) -> u8 {
    let d = Sha256::digest(format!("crust-rollout\n{}\n{version}", machine_id.trim()).as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(b) % 100) as u8
}

/// Whether the release is offered to this machine now, and if not, when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    Eligible,
    /// Not yet; the next wave opens at this Unix time (None: never, the waves stop short of
    /// this bucket).
    Wait(Option<u64>),
}

pub fn decide(
    machine_id: &str,
    version: &Version,
    published: u64,
    waves: &[Wave],
    now: u64,
) -> Rollout {
    let elapsed = now.saturating_sub(published);
    if bucket(machine_id, version) < percent_at(waves, elapsed) {
        Rollout::Eligible
    } else {
        Rollout::Wait(next_wave(waves, elapsed).map(|a| published + a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{:032x}", i as u128 * 0x9e37_79b9_7f4a_7c15))
            .collect()
    }

    #[test]
    fn buckets_are_stable_in_range_and_spread_evenly() {
        let machines = ids(20_000);
        let mut counts = [0u32; 100];
        for m in &machines {
            let b = bucket(m, &v("1.2.3"));
            assert!(b < 100);
            assert_eq!(b, bucket(m, &v("1.2.3")));
            assert_eq!(
                b,
                bucket(&format!("{m}\n"), &v("1.2.3")),
                "machine-id file's newline ignored"
            );
            counts[b as usize] += 1;
        }
        // 200 expected per bucket; a broken hash or modulo would leave buckets empty or piled up.
        assert!(
            counts.iter().all(|&c| (130..=270).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn versions_reshuffle_the_first_wave() {
        let machines = ids(1000);
        let first = |ver: &str| -> Vec<&String> {
            machines
                .iter()
                .filter(|m| bucket(m, &v(ver)) < 10)
                .collect()
        };
        let a = first("1.2.3");
        let b = first("1.2.4");
        assert!((60..=140).contains(&a.len()), "{}", a.len());
        let both = a.iter().filter(|m| b.contains(m)).count();
        assert!(
            both < a.len() / 3,
            "{both} of {} in both first waves",
            a.len()
        );
    }

    #[test]
    fn waves_only_widen() {
        let waves = [
            Wave {
                after: 0,
                percent: 10,
            },
            Wave {
                after: 3600,
                percent: 50,
            },
            Wave {
                after: 7200,
                percent: 100,
            },
        ];
        let machines = ids(2000);
        let published = 1_000_000;
        let mut share = Vec::new();
        for t in [0, 3599, 3600, 7199, 7200] {
            let n = machines
                .iter()
                .filter(|m| {
                    decide(m, &v("3.0.0"), published, &waves, published + t) == Rollout::Eligible
                })
                .count();
            share.push(n);
        }
        assert!(share.windows(2).all(|w| w[0] <= w[1]), "{share:?}");
        assert!((120..=280).contains(&share[0]), "{share:?}");
        assert!((850..=1150).contains(&share[2]), "{share:?}");
        assert_eq!(share[4], 2000);
        // A waiting machine is told when the next wave opens; a clock before publication counts as 0.
        let late = machines
            .iter()
            .find(|m| bucket(m, &v("3.0.0")) >= 50)
            .unwrap();
        assert_eq!(
            decide(late, &v("3.0.0"), published, &waves, published + 10),
            Rollout::Wait(Some(published + 3600))
        );
        assert_eq!(
            decide(late, &v("3.0.0"), published, &waves, 5),
            Rollout::Wait(Some(published + 3600))
        );
        let short = [Wave {
            after: 0,
            percent: 0,
        }];
        assert_eq!(
            decide(late, &v("3.0.0"), published, &short, published),
            Rollout::Wait(None)
        );
        assert_eq!(
            decide(late, &v("3.0.0"), published, &[], published),
            Rollout::Eligible
        );
    }
}
