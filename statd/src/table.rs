//! The counters themselves (spec/mail.md §5.2 "Entry"): a sorted map of key to entry,
//! changed only by whole transactions. Pure: times are passed in, nothing is written.

use std::collections::BTreeMap;

use common::pattern::{literal_prefix, matches_case};
use common::stats::Flag;

use crate::record::{Op, Record};

/// One counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its value; arithmetic saturates at the i64 bounds.
    pub value: i64,
    /// Persistent or volatile, chosen when it was created.
    pub flag: Flag,
    /// Creation time, Unix seconds (UTC).
    pub created: i64,
    /// Last change, Unix seconds (UTC).
    pub modified: i64,
}

/// Why a transaction was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It would create keys beyond `max_keys`.
    #[error("would create keys beyond max_keys ({0})")]
    TooManyKeys(usize),
}

/// All counters, sorted by key.
#[derive(Debug, Default)]
pub struct Table {
    entries: BTreeMap<String, Entry>,
    max_keys: usize,
}

fn has_wildcard(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

impl Table {
    /// An empty table that refuses to grow beyond `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        Self { entries: BTreeMap::new(), max_keys }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `key`.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Every entry, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Puts an entry as it was saved (snapshot loading); no limit applies.
    pub fn restore(&mut self, key: String, entry: Entry) {
        self.entries.insert(key, entry);
    }

    /// The keys matching `pattern` (case-sensitive `*`/`?`; without wildcards, at most
    /// that key), sorted.
    pub fn matching(&self, pattern: &str) -> Vec<String> {
        if !has_wildcard(pattern) {
            return self.entries.get_key_value(pattern).map(|(k, _)| k.clone()).into_iter().collect();
        }
        let prefix = literal_prefix(pattern);
        self.entries
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| matches_case(pattern, k))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The entries matching `pattern`, sorted by key.
    pub fn list(&self, pattern: &str) -> Vec<(String, Entry)> {
        self.matching(pattern).into_iter().filter_map(|k| self.entries.get(&k).map(|e| (k, *e))).collect()
    }

    /// Applies a transaction at time `now` (Unix seconds): all records, in order, or
    /// none. `limited` = false lets mmstatd's own keys past `max_keys`.
    ///
    /// # Errors
    /// [`Refused`]; the table is then unchanged.
    pub fn apply(&mut self, records: &[Record], now: i64, limited: bool) -> Result<u64, Refused> {
        if limited {
            let mut new: Vec<&str> = records
                .iter()
                .filter(|r| matches!(r.op, Op::Update | Op::Set) && !self.entries.contains_key(&r.key))
                .map(|r| r.key.as_str())
                .collect();
            new.sort_unstable();
            new.dedup();
            if !new.is_empty() && self.entries.len() + new.len() > self.max_keys {
                return Err(Refused::TooManyKeys(self.max_keys));
            }
        }
        let mut touched = 0;
        for r in records {
            touched += self.apply_one(r, now);
        }
        Ok(touched)
    }

    /// Applies one record; returns how many keys it touched.
    fn apply_one(&mut self, r: &Record, now: i64) -> u64 {
        let fresh = Entry { value: 0, flag: r.flag, created: now, modified: now };
        match r.op {
            Op::Update => {
                let e = self.entries.entry(r.key.clone()).or_insert(fresh);
                e.value = e.value.saturating_add(r.value);
                e.modified = now;
                1
            }
            Op::Set => {
                let e = self.entries.entry(r.key.clone()).or_insert(fresh);
                e.value = r.value;
                e.modified = now;
                1
            }
            Op::Reset => {
                let keys = self.matching(&r.key);
                for k in &keys {
                    if let Some(e) = self.entries.get_mut(k) {
                        e.value = 0;
                        e.modified = now;
                    }
                }
                keys.len() as u64
            }
            Op::Delete => {
                let keys = self.matching(&r.key);
                for k in &keys {
                    self.entries.remove(k);
                }
                keys.len() as u64
            }
        }
    }

    /// The delete records that would remove every volatile key (`mmstat
    /// delete-volatile`), so the journal can replay them.
    pub fn volatile_deletions(&self) -> Vec<Record> {
        self.entries
            .iter()
            .filter(|(_, e)| e.flag == Flag::Volatile)
            .map(|(k, _)| Record { op: Op::Delete, flag: Flag::Volatile, value: 0, key: k.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::parse_datagram;

    fn apply(t: &mut Table, d: &str) -> Result<u64, Refused> {
        t.apply(&parse_datagram(d.as_bytes()).unwrap(), 100, true)
    }

    #[test]
    fn updates_sets_resets_and_deletes() {
        let mut t = Table::new(100);
        apply(&mut t, "U P 1 a|total|x\nU P 2 a|total|x\nU V 1 a|who|1.2.3.4\nS V 7 a|current|c").unwrap();
        assert_eq!(t.get("a|total|x").unwrap().value, 3);
        assert_eq!(t.get("a|who|1.2.3.4").unwrap().flag, Flag::Volatile);
        assert_eq!(apply(&mut t, "R P 0 a|*").unwrap(), 3);
        assert_eq!(t.get("a|current|c").unwrap().value, 0);
        assert_eq!(apply(&mut t, "D V 0 a|who|*").unwrap(), 1);
        assert_eq!(t.len(), 2);
        // Without wildcards R and D touch that key only.
        apply(&mut t, "U P 1 a|total|xy").unwrap();
        assert_eq!(apply(&mut t, "D P 0 a|total|x").unwrap(), 1);
        assert!(t.get("a|total|xy").is_some());
        // Case-sensitive, anchored.
        assert_eq!(t.matching("A|*"), Vec::<String>::new());
        assert_eq!(t.matching("a|total|?y"), vec!["a|total|xy".to_owned()]);
        assert_eq!(t.matching("*y"), vec!["a|total|xy".to_owned()]);
    }

    #[test]
    fn arithmetic_saturates() {
        let mut t = Table::new(10);
        apply(&mut t, "S P 9223372036854775800 k\nU P 100 k").unwrap();
        assert_eq!(t.get("k").unwrap().value, i64::MAX);
        apply(&mut t, "S P -9223372036854775800 k\nU P -100 k").unwrap();
        assert_eq!(t.get("k").unwrap().value, i64::MIN);
    }

    #[test]
    fn a_transaction_over_max_keys_changes_nothing() {
        let mut t = Table::new(3);
        apply(&mut t, "U P 1 a\nU P 1 b").unwrap();
        assert_eq!(apply(&mut t, "U P 1 a\nU P 1 c\nU P 1 d"), Err(Refused::TooManyKeys(3)));
        assert_eq!(t.get("a").unwrap().value, 1);
        assert_eq!(t.len(), 2);
        // Existing keys can still change, and one more fits.
        apply(&mut t, "U P 1 a\nU P 1 c\nU P 1 c").unwrap();
        assert_eq!(t.get("c").unwrap().value, 2);
        assert!(t.apply(&parse_datagram(b"U P 1 mmstatd|x").unwrap(), 1, false).is_ok());
    }
}
