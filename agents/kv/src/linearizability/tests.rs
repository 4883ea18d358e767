use super::*;

fn e(op: Op, invoke: u64, complete: u64, outcome: Outcome) -> Entry {
    Entry {
        key: "/k".into(),
        client: 0,
        op,
        invoke,
        complete,
        outcome,
    }
}

fn w(v: &str, invoke: u64, complete: u64) -> Entry {
    e(Op::Write(v.into()), invoke, complete, Outcome::Written)
}

fn w_unknown(v: &str, invoke: u64) -> Entry {
    e(Op::Write(v.into()), invoke, 0, Outcome::Unknown)
}

fn r(seen: Option<&str>, invoke: u64, complete: u64) -> Entry {
    e(
        Op::Read,
        invoke,
        complete,
        Outcome::Read(seen.map(str::to_string)),
    )
}

fn cas(expect: &str, new: &str, invoke: u64, complete: u64, ok: bool) -> Entry {
    e(
        Op::Cas {
            expect: expect.into(),
            new: new.into(),
        },
        invoke,
        complete,
        Outcome::Cas(ok),
    )
}

fn rejected(h: &[Entry]) -> bool {
    match check(h) {
        Ok(()) => false,
        Err(CheckError::NotLinearizable { .. }) => true,
        Err(other) => panic!("unexpected {other}"),
    }
}

#[test]
fn sequential_and_concurrent_histories_that_are_linearizable() {
    let ok: Vec<Vec<Entry>> = vec![
        vec![],
        vec![r(None, 0, 1)],
        vec![w("1", 0, 1), r(Some("1"), 2, 3)],
        // A read concurrent with a write may see either value.
        vec![w("1", 0, 10), r(None, 1, 2), r(Some("1"), 3, 4)],
        vec![w("1", 0, 10), r(Some("1"), 1, 2), r(Some("1"), 3, 4)],
        // Two overlapping writes: reads after both agree on one of them.
        vec![
            w("1", 0, 10),
            w("2", 1, 11),
            r(Some("1"), 12, 13),
            r(Some("1"), 14, 15),
        ],
        // CAS chain, and a refused CAS that saw the value change under it.
        vec![
            w("a", 0, 1),
            cas("a", "b", 2, 3, true),
            cas("a", "c", 4, 5, false),
            r(Some("b"), 6, 7),
        ],
        // Two concurrent CAS from the same value: exactly one wins.
        vec![
            w("0", 0, 1),
            cas("0", "1", 2, 10, true),
            cas("0", "2", 3, 11, false),
            r(Some("1"), 12, 13),
        ],
        // A CAS on a missing key is refused.
        vec![cas("x", "y", 0, 1, false), r(None, 2, 3)],
        // A write that timed out may have happened late...
        vec![w_unknown("1", 0), r(None, 5, 6), r(Some("1"), 100, 101)],
        // ... or never.
        vec![w_unknown("1", 0), r(None, 100, 101)],
        // An unknown CAS that took effect.
        vec![
            w("a", 0, 1),
            e(
                Op::Cas {
                    expect: "a".into(),
                    new: "b".into(),
                },
                2,
                0,
                Outcome::Unknown,
            ),
            r(Some("b"), 50, 51),
        ],
        // A read whose answer was lost constrains nothing.
        vec![w("1", 0, 1), e(Op::Read, 2, 0, Outcome::Unknown)],
        // Completion and invocation at the same instant are concurrent.
        vec![w("1", 0, 5), r(None, 5, 6)],
    ];
    for (i, h) in ok.iter().enumerate() {
        assert_eq!(check(h), Ok(()), "history {i}: {h:?}");
    }
}

#[test]
fn stale_read_after_a_completed_write_is_rejected() {
    assert!(rejected(&[w("1", 0, 1), w("2", 2, 3), r(Some("1"), 4, 5)]));
    assert!(rejected(&[w("1", 0, 1), r(None, 2, 3)]));
}

#[test]
fn lost_cas_is_rejected() {
    // Both CAS from "0" acknowledged: one of them must have been lost.
    assert!(rejected(&[
        w("0", 0, 1),
        cas("0", "1", 2, 10, true),
        cas("0", "2", 3, 11, true),
    ]));
    // An acknowledged CAS whose value never shows up.
    assert!(rejected(&[
        w("0", 0, 1),
        cas("0", "1", 2, 3, true),
        r(Some("0"), 4, 5),
    ]));
    // A refused CAS although the value matched throughout.
    assert!(rejected(&[w("0", 0, 1), cas("0", "1", 2, 3, false)]));
}

#[test]
fn reads_from_the_future_and_flip_flops_are_rejected() {
    // The value is read before anyone started writing it.
    assert!(rejected(&[r(Some("1"), 0, 1), w("1", 2, 3)]));
    assert!(rejected(&[r(Some("1"), 0, 1), w_unknown("1", 2)]));
    // Reads go 1 then back to absent while one write is in flight.
    assert!(rejected(&[
        w("1", 0, 10),
        r(Some("1"), 1, 2),
        r(None, 3, 4)
    ]));
    // A value nobody wrote.
    assert!(rejected(&[w("1", 0, 1), r(Some("9"), 2, 3)]));
    // An acknowledged write lost after a later read saw it.
    assert!(rejected(&[
        w("1", 0, 1),
        r(Some("1"), 2, 3),
        w_unknown("2", 4),
        r(Some("1"), 10, 11),
        r(None, 12, 13),
    ]));
}

#[test]
fn keys_are_checked_separately_and_the_error_names_the_key() {
    let mut h = vec![w("1", 0, 1), r(Some("1"), 2, 3)];
    let mut other = vec![w("a", 0, 1), r(None, 2, 3)];
    for x in &mut other {
        x.key = "/other".into();
    }
    h.extend(other);
    match check(&h) {
        Err(CheckError::NotLinearizable { key, detail }) => {
            assert_eq!(key, "/other");
            assert!(detail.contains("write \"a\" ok"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_entries_are_refused() {
    let bad = e(Op::Read, 0, 1, Outcome::Written);
    assert!(matches!(check(&[bad]), Err(CheckError::Malformed { .. })));
    let backwards = w("1", 5, 4);
    assert!(matches!(
        check(&[backwards]),
        Err(CheckError::Malformed { .. })
    ));
}

#[test]
fn the_budget_stops_the_search() {
    // Many concurrent writes followed by a read of a value nobody wrote: every order is
    // tried before the answer is no.
    let mut h: Vec<Entry> = (0..12).map(|i| w(&i.to_string(), 0, 100)).collect();
    h.push(r(Some("x"), 200, 201));
    let refs: Vec<&Entry> = h.iter().collect();
    assert!(matches!(
        check_key("/k", &refs, None, 100),
        Err(CheckError::TooLarge { .. })
    ));
    assert!(matches!(
        check_key("/k", &refs, None, STATE_BUDGET),
        Err(CheckError::NotLinearizable { .. })
    ));
}

/// A small deterministic generator (xorshift) so the random tests replay exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A history made by running random operations one after the other on a register, each
/// taking effect at `100 * k`, with invocation and completion spread around that point by up
/// to `spread` (so neighbours overlap), and some outcomes lost.
fn sequential_history(r: &mut Rng, n: usize, spread: u64, lose_one_in: u64) -> Vec<Entry> {
    let mut value: Option<String> = None;
    let mut h = Vec::new();
    for k in 0..n {
        let at = 1000 + 100 * k as u64;
        let v = format!("v{}", r.below(4));
        let (op, outcome) = match r.below(3) {
            0 => (Op::Read, Outcome::Read(value.clone())),
            1 => {
                value = Some(v.clone());
                (Op::Write(v), Outcome::Written)
            }
            _ => {
                let expect = format!("v{}", r.below(4));
                let ok = value.as_deref() == Some(expect.as_str());
                if ok {
                    value = Some(v.clone());
                }
                (Op::Cas { expect, new: v }, Outcome::Cas(ok))
            }
        };
        let outcome = if lose_one_in > 0 && r.below(lose_one_in) == 0 {
            Outcome::Unknown
        } else {
            outcome
        };
        h.push(Entry {
            key: "/k".into(),
            client: k % 5,
            op,
            invoke: at - r.below(spread + 1),
            complete: at + r.below(spread + 1),
            outcome,
        });
    }
    h
}

#[test]
fn histories_of_a_sequential_execution_are_always_accepted() {
    for seed in 1..=300u64 {
        let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let h = sequential_history(&mut r, 60, 250, if seed % 2 == 0 { 8 } else { 0 });
        assert_eq!(check(&h), Ok(()), "seed {seed}: {h:?}");
    }
}

#[test]
fn a_changed_answer_in_a_strictly_sequential_history_is_rejected() {
    for seed in 1..=300u64 {
        let mut r = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        // No overlap and no lost outcomes: the only order is the real one.
        let mut h = sequential_history(&mut r, 40, 0, 0);
        let answered: Vec<usize> = (0..h.len())
            .filter(|&i| !matches!(h[i].op, Op::Write(_)))
            .collect();
        if answered.is_empty() {
            continue;
        }
        let i = answered[r.below(answered.len() as u64) as usize];
        h[i].outcome = match &h[i].outcome {
            Outcome::Read(Some(v)) if r.below(2) == 0 => Outcome::Read(Some(format!("{v}x"))),
            Outcome::Read(Some(_)) => Outcome::Read(None),
            Outcome::Read(None) => Outcome::Read(Some("v0".into())),
            Outcome::Cas(ok) => Outcome::Cas(!ok),
            other => other.clone(),
        };
        assert!(rejected(&h), "seed {seed}: entry {i} changed: {h:?}");
    }
}

#[test]
fn two_hundred_operations_with_five_clients_check_quickly_enough() {
    // The size the fault tests record per key, with lost outcomes: must finish within the
    // state budget (a TooLarge error fails the test).
    for seed in 1..=10u64 {
        let mut r = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let h = sequential_history(&mut r, 200, 300, 8);
        assert_eq!(check(&h), Ok(()), "seed {seed}");
    }
}

#[test]
fn many_lost_outcomes_stay_checkable() {
    // Half the outcomes lost, as when a member hangs and every client times out on it.
    for seed in 1..=10u64 {
        let mut r = Rng(seed.wrapping_mul(0xA076_1D64_78BD_642F));
        let h = sequential_history(&mut r, 200, 300, 2);
        assert_eq!(check(&h), Ok(()), "seed {seed}");
    }
    // And a stale read among 60 unknown writes is still found, not given up on.
    let mut h: Vec<Entry> = (0..60)
        .map(|i| w_unknown(&format!("u{i}"), 10 * i as u64))
        .collect();
    h.push(w("1", 1000, 1001));
    h.push(w("2", 1002, 1003));
    h.push(r(Some("1"), 1004, 1005));
    assert!(rejected(&h));
}
