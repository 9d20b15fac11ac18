//! Entries are stored in runs: consecutive entries of one group commit (at most [`RUN`] and
//! [`RUN_BYTES`]) under one key, the sequence number of the first. sled copies a node on
//! every insert, so one insert per run rather than per entry is most of what the writer
//! saves. Within a run each entry
//! is its stored bytes (`prev_hash ‖ hash ‖ record JSON`) behind a 4-byte length, so the
//! hash chain is exactly what it would be with a key per entry.

use crate::keys;

/// Most entries in one run, so a point read never walks a huge value.
pub const RUN: usize = 256;

/// Most bytes in one run (entries and their length prefixes); an entry bigger than this is a
/// run of its own.
///
/// Durability, not speed: sled 0.34 writes any page bigger than a quarter of its 512 KiB
/// segment as a blob file of its own and never fsyncs blob files (only its main log file),
/// so a power cut could take an acknowledged entry with it. A leaf splits only past 16
/// keys, so runs of at most 6 KiB keep every leaf of the log, 17 runs at most, under that
/// 128 KiB threshold. Runs of 8 entries measured as fast as runs of 256 (BENCHMARKS.md).
pub const RUN_BYTES: usize = 6 * 1024;

/// A group's entries cut into runs, in order: each at most [`RUN`] entries and
/// [`RUN_BYTES`] bytes, and never empty.
pub fn cut(entries: &[Vec<u8>]) -> impl Iterator<Item = &[Vec<u8>]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let n = rest
            .iter()
            .take(RUN)
            .take_while(|e| {
                bytes += e.len() + 4;
                bytes <= RUN_BYTES
            })
            .count()
            .max(1);
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

pub fn encode(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 4).sum());
    for e in entries {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// The entries of a run, in order; `Err` names the index of the first malformed one.
pub fn split(run: &[u8]) -> impl Iterator<Item = Result<&[u8], usize>> {
    let mut rest = run;
    let mut index = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let item = if rest.len() < 4 {
            Err(index)
        } else {
            let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if rest.len() < 4 + len {
                Err(index)
            } else {
                let (entry, tail) = rest[4..].split_at(len);
                rest = tail;
                Ok(entry)
            }
        };
        if item.is_err() {
            rest = &[];
        }
        index += 1;
        Some(item)
    })
}

/// The first sequence number of a run, from its key.
pub fn first_seq(key: &[u8]) -> u64 {
    keys::u64_of(&key[1..])
}

/// The run that holds `seq`, if any: the last run starting at or before it.
pub fn holding(tree: &sled::Tree, seq: u64) -> sled::Result<Option<(sled::IVec, sled::IVec)>> {
    tree.range(keys::entry(1)..=keys::entry(seq))
        .next_back()
        .transpose()
}

/// Reads entries at rising positions, each run once for all the positions it holds.
/// People registered or changed together have their entries in the same runs, so reading
/// many people's entries in log order costs a lookup per run rather than one per entry
/// (each lookup is a reverse range read of a large tree).
pub struct Cursor<'t> {
    tree: &'t sled::Tree,
    /// The run last read: its first position, its value and how many entries it holds.
    run: Option<(u64, sled::IVec, u64)>,
}

impl<'t> Cursor<'t> {
    pub fn new(tree: &'t sled::Tree) -> Cursor<'t> {
        Cursor { tree, run: None }
    }

    /// The stored bytes of the entry at `seq` (`Err`: its run is malformed there), if a run
    /// holds it. Asked at rising positions, a run is read once.
    pub fn at(&mut self, seq: u64) -> sled::Result<Option<Result<&[u8], usize>>> {
        let held = |run: &Option<(u64, sled::IVec, u64)>| {
            run.as_ref()
                .is_some_and(|(first, _, n)| (*first..first + n).contains(&seq))
        };
        if !held(&self.run) {
            self.run = holding(self.tree, seq)?.map(|(k, v)| {
                let n = split(&v).count() as u64;
                (first_seq(&k), v, n)
            });
        }
        Ok(match &self.run {
            Some((first, v, _)) if held(&self.run) => split(v).nth((seq - first) as usize),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_back_into_their_entries() {
        let entries = vec![b"one".to_vec(), Vec::new(), b"three".to_vec()];
        let run = encode(&entries);
        let back: Vec<&[u8]> = split(&run).map(Result::unwrap).collect();
        assert_eq!(back, vec![&b"one"[..], &b""[..], &b"three"[..]]);
    }

    #[test]
    fn a_cursor_reads_each_position_from_the_run_that_holds_it() {
        let tree = sled::Config::new().temporary(true).open().unwrap();
        let tree = tree.open_tree("log").unwrap();
        // Runs at 1 (three entries), 4 (one) and 7 (two): 5 and 6 are held by no run.
        for (first, entries) in [
            (1u64, vec!["a", "b", "c"]),
            (4, vec!["d"]),
            (7, vec!["g", "h"]),
        ] {
            let run: Vec<Vec<u8>> = entries.iter().map(|e| e.as_bytes().to_vec()).collect();
            tree.insert(keys::entry(first), encode(&run)).unwrap();
        }
        let mut cursor = Cursor::new(&tree);
        let mut read = Vec::new();
        for seq in [1, 3, 4, 5, 6, 8, 9] {
            let got = cursor
                .at(seq)
                .unwrap()
                .map(|b| String::from_utf8(b.unwrap().to_vec()).unwrap());
            read.push((seq, got));
        }
        let want = |s: &str| Some(s.to_owned());
        assert_eq!(
            read,
            vec![
                (1, want("a")),
                (3, want("c")),
                (4, want("d")),
                (5, None),
                (6, None),
                (8, want("h")),
                (9, None)
            ]
        );
    }

    #[test]
    fn a_truncated_run_names_the_broken_entry() {
        let run = encode(&[b"one".to_vec(), b"three".to_vec()]);
        let cut = &run[..run.len() - 2];
        let items: Vec<_> = split(cut).collect();
        assert_eq!(items, vec![Ok(&b"one"[..]), Err(1)]);
    }

    #[test]
    fn a_group_is_cut_into_runs_within_both_bounds_and_in_order() {
        let sized = |n: usize| vec![7u8; n];
        let mut entries: Vec<Vec<u8>> = (0..40).map(|i| sized(300 + i * 10)).collect();
        entries.push(sized(3 * RUN_BYTES)); // bigger than a run: alone
        entries.extend((0..600).map(|_| sized(1)));
        let runs: Vec<&[Vec<u8>]> = cut(&entries).collect();
        assert_eq!(runs.concat(), entries, "every entry, once, in order");
        for run in &runs {
            let bytes: usize = run.iter().map(|e| e.len() + 4).sum();
            assert!(!run.is_empty() && run.len() <= RUN);
            assert!(
                bytes <= RUN_BYTES || run.len() == 1,
                "{bytes} bytes in {}",
                run.len()
            );
        }
        assert!(runs
            .iter()
            .any(|r| r.len() == 1 && r[0].len() == 3 * RUN_BYTES));
        assert!(
            runs.iter().any(|r| r.len() == RUN),
            "small entries fill a run by count"
        );
        assert!(cut(&[]).next().is_none());
    }
}
