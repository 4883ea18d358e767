//! locksmith's reboot semaphore: a JSON value in etcd,
//! `{"semaphore":N,"max":M,"holders":["machine-id",...]}` at
//! `coreos.com/updateengine/rebootlock/semaphore` (or
//! `coreos.com/updateengine/rebootlock/groups/GROUP/semaphore`), changed only by
//! compare-and-swap on the key's `modifiedIndex`, so two machines can never both take the last
//! slot.

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

pub const KEY: &str = "coreos.com/updateengine/rebootlock/semaphore";

/// The semaphore key of a locksmith group (`LOCKSMITHD_GROUP`), or the global one.
pub fn key(group: Option<&str>) -> String {
    match group.filter(|g| !g.is_empty()) {
        Some(g) => format!("coreos.com/updateengine/rebootlock/groups/{g}/semaphore"),
        None => KEY.to_string(),
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Semaphore {
    /// Slots still free: `max - holders` (negative after lowering max below the holders).
    pub semaphore: i64,
    pub max: i64,
    /// locksmith (Go) writes `null` for no holders.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub holders: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SemError {
    #[error("{id} already holds the reboot lock")]
    AlreadyHeld { id: String },
    #[error("the reboot lock is full ({max} holder(s) allowed, held by {holders:?}); waiting for one of them to release it")]
    Full { max: i64, holders: Vec<String> },
    #[error("{id} does not hold the reboot lock")]
    NotHeld { id: String },
    #[error("max must be at least 0, got {0}")]
    BadMax(i64),
}

impl Default for Semaphore {
    /// What locksmith initialises a missing key with: one holder at a time.
    fn default() -> Semaphore {
        Semaphore {
            semaphore: 1,
            max: 1,
            holders: Vec::new(),
        }
    }
}

impl Semaphore {
    pub fn lock(&mut self, id: &str) -> Result<(), SemError> {
        if self.holders.iter().any(|h| h == id) {
            return Err(SemError::AlreadyHeld { id: id.into() });
        }
        if self.semaphore <= 0 {
            return Err(SemError::Full {
                max: self.max,
                holders: self.holders.clone(),
            });
        }
        self.semaphore -= 1;
        self.holders.push(id.to_string());
        Ok(())
    }

    pub fn unlock(&mut self, id: &str) -> Result<(), SemError> {
        let i = self
            .holders
            .iter()
            .position(|h| h == id)
            .ok_or_else(|| SemError::NotHeld { id: id.into() })?;
        self.holders.remove(i);
        self.semaphore += 1;
        Ok(())
    }

    /// Changes the number of holders allowed; current holders keep their slots.
    pub fn set_max(&mut self, max: i64) -> Result<(), SemError> {
        if max < 0 {
            return Err(SemError::BadMax(max));
        }
        self.semaphore -= self.max - max;
        self.max = max;
        Ok(())
    }

    pub fn holds(&self, id: &str) -> bool {
        self.holders.iter().any(|h| h == id)
    }
}

/// A value and the index a compare-and-swap must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: String,
    pub index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("the key changed since it was read")]
    Conflict,
    #[error("the key already exists")]
    Exists,
    #[error("{0}")]
    Other(String),
}

/// The three operations locksmith needs from etcd.
pub trait LockStore {
    fn get(&mut self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Creates `key` only if it does not exist (`prevExist=false`).
    fn create(&mut self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Replaces `key` only if its modifiedIndex is still `prev_index`.
    fn cas(&mut self, key: &str, value: &str, prev_index: u64) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LockError {
    #[error(transparent)]
    Sem(#[from] SemError),
    #[error("etcd: {0}")]
    Store(StoreError),
    #[error("the semaphore at {key} is not locksmith JSON ({why}); fix it with `crustctl locksmith set-max N` after removing the key")]
    Json { key: String, why: String },
    #[error("the semaphore kept changing under {0} attempts; try again")]
    Contended(u32),
}

const ATTEMPTS: u32 = 16;

/// The semaphore of one key, changed by read-modify-compare-and-swap.
pub struct Locker<S: LockStore> {
    pub store: S,
    pub key: String,
}

impl<S: LockStore> Locker<S> {
    pub fn new(store: S, group: Option<&str>) -> Locker<S> {
        Locker {
            store,
            key: key(group),
        }
    }

    /// The current semaphore (the default one when the key does not exist yet).
    pub fn get(&mut self) -> Result<Semaphore, LockError> {
        match self.store.get(&self.key).map_err(LockError::Store)? {
            None => Ok(Semaphore::default()),
            Some(v) => self.parse(&v.value),
        }
    }

    fn parse(&self, s: &str) -> Result<Semaphore, LockError> {
        serde_json::from_str(s).map_err(|e| LockError::Json {
            key: self.key.clone(),
            why: e.to_string(),
        })
    }

    /// Applies `f` atomically, retrying when another machine changed the key in between.
    pub fn update(
        &mut self,
        f: impl Fn(&mut Semaphore) -> Result<(), SemError>,
    ) -> Result<Semaphore, LockError> {
        for _ in 0..ATTEMPTS {
            let current = self.store.get(&self.key).map_err(LockError::Store)?;
            let mut sem = match &current {
                None => Semaphore::default(),
                Some(v) => self.parse(&v.value)?,
            };
            f(&mut sem)?;
            let json = serde_json::to_string(&sem).unwrap_or_default();
            let r = match current {
                None => self.store.create(&self.key, &json),
                Some(v) => self.store.cas(&self.key, &json, v.index),
            };
            match r {
                Ok(()) => return Ok(sem),
                Err(StoreError::Conflict | StoreError::Exists) => continue,
                Err(e) => return Err(LockError::Store(e)),
            }
        }
        Err(LockError::Contended(ATTEMPTS))
    }

    pub fn lock(&mut self, id: &str) -> Result<Semaphore, LockError> {
        self.update(|s| s.lock(id))
    }
    pub fn unlock(&mut self, id: &str) -> Result<Semaphore, LockError> {
        self.update(|s| s.unlock(id))
    }
    pub fn set_max(&mut self, max: i64) -> Result<Semaphore, LockError> {
        self.update(|s| s.set_max(max))
    }
}

/// An in-memory etcd for tests (the same compare-and-swap rules and index bumps).
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub keys: std::collections::BTreeMap<String, Versioned>,
    pub index: u64,
    /// Test hook: the next N compare-and-swaps fail as if another machine wrote first.
    pub interfere: u32,
}

impl LockStore for MemStore {
    fn get(&mut self, key: &str) -> Result<Option<Versioned>, StoreError> {
        Ok(self.keys.get(key).cloned())
    }
    fn create(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        if self.keys.contains_key(key) {
            return Err(StoreError::Exists);
        }
        self.index += 1;
        self.keys.insert(
            key.into(),
            Versioned {
                value: value.into(),
                index: self.index,
            },
        );
        Ok(())
    }
    fn cas(&mut self, key: &str, value: &str, prev_index: u64) -> Result<(), StoreError> {
        if self.interfere > 0 {
            self.interfere -= 1;
            self.index += 1;
            if let Some(v) = self.keys.get_mut(key) {
                v.index = self.index;
            }
            return Err(StoreError::Conflict);
        }
        match self.keys.get(key) {
            Some(v) if v.index == prev_index => {
                self.index += 1;
                self.keys.insert(
                    key.into(),
                    Versioned {
                        value: value.into(),
                        index: self.index,
                    },
                );
                Ok(())
            }
            Some(_) => Err(StoreError::Conflict),
            None => Err(StoreError::Other("key not found".into())),
        }
    }
}

/// The shared test suite every `LockStore` must pass (run against the fake here and against a
/// real etcd in `tests/locksmith_etcd.rs`).
pub fn conformance<S: LockStore>(store: S, group: Option<&str>) -> Result<(), String> {
    let mut l = Locker::new(store, group);
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
    check(
        l.get().map_err(|e| e.to_string())? == Semaphore::default(),
        "a missing key reads as the default semaphore",
    )?;
    let s = l.lock("m1").map_err(|e| e.to_string())?;
    check(
        s.semaphore == 0 && s.holders == ["m1"],
        "m1 takes the only slot",
    )?;
    check(
        matches!(l.lock("m2"), Err(LockError::Sem(SemError::Full { .. }))),
        "m2 finds it full",
    )?;
    check(
        matches!(
            l.lock("m1"),
            Err(LockError::Sem(SemError::AlreadyHeld { .. }))
        ),
        "m1 cannot take it twice",
    )?;
    let s = l.set_max(2).map_err(|e| e.to_string())?;
    check(s.semaphore == 1 && s.max == 2, "set-max 2 frees one slot")?;
    l.lock("m2").map_err(|e| e.to_string())?;
    check(
        matches!(
            l.unlock("m3"),
            Err(LockError::Sem(SemError::NotHeld { .. }))
        ),
        "m3 holds nothing",
    )?;
    l.unlock("m1").map_err(|e| e.to_string())?;
    let s = l.get().map_err(|e| e.to_string())?;
    check(
        s == Semaphore {
            semaphore: 1,
            max: 2,
            holders: vec!["m2".into()],
        },
        "the stored JSON after unlock",
    )?;
    let s = l.set_max(0).map_err(|e| e.to_string())?;
    check(
        s.semaphore == -1,
        "lowering max below the holders goes negative, as in locksmith",
    )?;
    check(
        matches!(l.lock("m4"), Err(LockError::Sem(SemError::Full { .. }))),
        "nobody new gets in",
    )?;
    Ok(())
}

impl<S: LockStore + ?Sized> LockStore for &mut S {
    fn get(&mut self, key: &str) -> Result<Option<Versioned>, StoreError> {
        (**self).get(key)
    }
    fn create(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        (**self).create(key, value)
    }
    fn cas(&mut self, key: &str, value: &str, prev_index: u64) -> Result<(), StoreError> {
        (**self).cas(key, value, prev_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memstore_passes_the_suite() {
        conformance(MemStore::default(), None).unwrap();
        conformance(MemStore::default(), Some("workers")).unwrap();
    }

    #[test]
    fn reads_locksmiths_json_and_keys() {
        let s: Semaphore =
            serde_json::from_str(r#"{"semaphore":1,"max":1,"holders":null}"#).unwrap();
        assert_eq!(s, Semaphore::default());
        let s: Semaphore =
            serde_json::from_str(r#"{"semaphore":0,"max":1,"holders":["abc"]}"#).unwrap();
        assert!(s.holds("abc"));
        assert_eq!(
            serde_json::to_string(&Semaphore::default()).unwrap(),
            r#"{"semaphore":1,"max":1,"holders":[]}"#
        );
        assert_eq!(key(None), "coreos.com/updateengine/rebootlock/semaphore");
        assert_eq!(
            key(Some("db")),
            "coreos.com/updateengine/rebootlock/groups/db/semaphore"
        );
        assert_eq!(key(Some("")), KEY);
    }

    #[test]
    fn compare_and_swap_retries_and_never_double_grants() {
        let mut l = Locker::new(
            MemStore {
                interfere: 3,
                ..MemStore::default()
            },
            None,
        );
        l.lock("m1").unwrap(); // created (no CAS) — interference applies to later swaps
        l.unlock("m1").unwrap(); // three conflicts, then success
        assert_eq!(l.get().unwrap().holders, Vec::<String>::new());
        l.store.interfere = 100;
        assert!(matches!(l.lock("m1"), Err(LockError::Contended(16))));
        // Two machines racing on a stale read: the second swap must fail.
        let mut store = MemStore::default();
        Locker::new(&mut store, None).set_max(1).unwrap();
        let v = store.get(KEY).unwrap().unwrap();
        let mut a: Semaphore = serde_json::from_str(&v.value).unwrap();
        let mut b = a.clone();
        a.lock("a").unwrap();
        b.lock("b").unwrap();
        store
            .cas(KEY, &serde_json::to_string(&a).unwrap(), v.index)
            .unwrap();
        assert_eq!(
            store.cas(KEY, &serde_json::to_string(&b).unwrap(), v.index),
            Err(StoreError::Conflict)
        );
        let mut l = Locker::new(&mut store, None);
        assert!(matches!(
            l.lock("b"),
            Err(LockError::Sem(SemError::Full { .. }))
        ));
        assert!(matches!(
            Locker::new(MemStore::default(), None).set_max(-1),
            Err(LockError::Sem(SemError::BadMax(-1)))
        ));
    }
}
