//! A sorted run in a file of its own, read with `pread`: how the id index ([`crate::ids`])
//! and the projector's identity registry keep their runs.
//!
//! In sled, every chunk a lookup read came back as a deserialised leaf that stayed in the
//! process until sled's cache and its epochs let it go (BENCHMARKS.md, session 16: 71 MB of
//! a repeated million-row import's peak), and every run written was thousands of inserts that
//! sled's segment cleaner copied again. Read from a file, a chunk is a buffer dropped after
//! the lookup and the cache is the operating system's, outside the process; a run is written
//! once, in order.
//!
//! # Layout
//! `records ‖ fences ‖ filter ‖ footer`:
//! - records: the run's fixed-size records in key order, chunk `i` at `i × per_chunk ×
//!   record` bytes;
//! - fences: the key of each chunk's first record;
//! - filter: the run's Bloom filter ([`Filter::to_bytes`]);
//! - footer: the [`Shape`]'s magic, then the number of records, of chunks and the filter's
//!   bytes, each a big-endian u64.
//!
//! # Crash safety
//! A run is written under a temporary name, synced, renamed and its directory synced, so a
//! run's file is whole or absent; its user names it in a manifest only after [`write`]
//! returns, and deletes it only once no durable manifest names it. Files no manifest names
//! are the user's to remove at open ([`stored`]).

use crate::sorted::{Filter, RunError};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const FOOTER: usize = 8 + 3 * 8;

/// What one kind of run is made of.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Bytes a record.
    pub record: usize,
    /// Its key: the first bytes of a record, which fences hold.
    pub key: usize,
    /// Records a chunk: what one lookup reads.
    pub per_chunk: usize,
    /// Marks a file as a run of this kind.
    pub magic: [u8; 8],
    /// What the filter is asked for a record: 16 uniform bytes of its key.
    pub probe: fn(&[u8]) -> &[u8; 16],
}

fn io(path: &Path, e: std::io::Error) -> RunError {
    RunError::Io(format!("{}: {e}", path.display()))
}

/// Run `no`'s file in `dir`.
pub fn path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016x}.run"))
}

fn temporary(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016x}.run.part"))
}

/// The run numbers of the files in `dir`, creating it if need be; a run whose writing was
/// cut short (its temporary file) is removed.
pub fn stored(dir: &Path) -> Result<Vec<u64>, RunError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let e = e.map_err(|e| io(dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".run.part") {
            std::fs::remove_file(e.path()).map_err(|err| io(&e.path(), err))?;
        }
        out.extend(
            name.strip_suffix(".run")
                .and_then(|n| u64::from_str_radix(n, 16).ok()),
        );
    }
    Ok(out)
}

/// Deletes run `no`'s file, if it is there.
pub fn remove(dir: &Path, no: u64) -> Result<(), RunError> {
    let path = path(dir, no);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
        _ => Ok(()),
    }
}

/// The first key of each chunk, in order.
pub struct Fences {
    key: usize,
    bytes: Vec<u8>,
}

impl Fences {
    pub fn len(&self) -> usize {
        self.bytes.len() / self.key
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn at(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.key..(i + 1) * self.key]
    }

    /// The chunks that may hold records with `key`: the last one starting below it (its
    /// tail may), and every one starting with it.
    pub fn chunks_for(&self, key: &[u8]) -> std::ops::Range<u32> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.at(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let with = (lo..self.len()).take_while(|i| self.at(*i) == key).count();
        lo.saturating_sub(1) as u32..(lo + with) as u32
    }
}

/// A run's file, open for lookups; it stays readable after a merge deletes it, until the
/// last lookup holding it is done.
pub struct RunFile {
    file: File,
    no: u64,
    count: u64,
    shape: Shape,
}

/// A live run: its file, and its filter and fences in memory.
pub struct Run {
    pub no: u64,
    /// Where its user's merges put it ([`crate::sorted::level_of`]); 0 until it says.
    pub level: u32,
    pub file: RunFile,
    pub filter: Filter,
    pub fences: Fences,
}

impl Run {
    fn new(file: File, no: u64, count: u64, shape: Shape, filter: Filter, fences: Vec<u8>) -> Run {
        Run {
            no,
            level: 0,
            file: RunFile {
                file,
                no,
                count,
                shape,
            },
            filter,
            fences: Fences {
                key: shape.key,
                bytes: fences,
            },
        }
    }

    /// The run at `level`.
    pub fn at(mut self, level: u32) -> Run {
        self.level = level;
        self
    }

    pub fn count(&self) -> u64 {
        self.file.count
    }
}

impl RunFile {
    pub fn no(&self) -> u64 {
        self.no
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Chunks the run holds.
    pub fn chunks(&self) -> u32 {
        self.count.div_ceil(self.shape.per_chunk as u64) as u32
    }

    /// The bytes chunk `chunk` holds: full chunks but the last.
    pub fn chunk_len(&self, chunk: u32) -> usize {
        let per = self.shape.per_chunk as u64;
        (self.count.saturating_sub(chunk as u64 * per).min(per)) as usize * self.shape.record
    }

    fn offset(&self, chunk: u32) -> u64 {
        chunk as u64 * (self.shape.per_chunk * self.shape.record) as u64
    }

    /// Chunk `chunk` into `buf`, whose allocation a caller reading many reuses.
    pub fn read_chunk_into(&self, chunk: u32, buf: &mut Vec<u8>) -> Result<(), RunError> {
        buf.resize(self.chunk_len(chunk), 0);
        self.file
            .read_exact_at(buf, self.offset(chunk))
            .map_err(|e| RunError::Io(format!("run {}, chunk {chunk}: {e}", self.no)))
    }

    /// Chunk `chunk`, as stored.
    pub fn read_chunk(&self, chunk: u32) -> Result<Vec<u8>, RunError> {
        let mut buf = Vec::new();
        self.read_chunk_into(chunk, &mut buf)?;
        Ok(buf)
    }

    /// Writes each `(chunk, bytes)` over its chunk, at its length (the rest filled with
    /// `pad`), then syncs the file once: erasure's rewrites of chunks without someone, in
    /// place. A chunk that already holds them is left alone, so writing the same rewrites
    /// again (as every open does) neither writes nor syncs.
    pub fn overwrite(&self, dir: &Path, chunks: &[(u32, &[u8])], pad: u8) -> Result<(), RunError> {
        let mut changed = Vec::new();
        let mut stored = Vec::new();
        for (chunk, bytes) in chunks {
            let len = self.chunk_len(*chunk);
            if bytes.len() > len {
                return Err(RunError::File("a rewritten chunk is longer than the chunk"));
            }
            let mut padded = bytes.to_vec();
            padded.resize(len, pad);
            self.read_chunk_into(*chunk, &mut stored)?;
            if stored != padded {
                changed.push((*chunk, padded));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let path = path(dir, self.no);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        for (chunk, padded) in &changed {
            file.write_all_at(padded, self.offset(*chunk))
                .map_err(|e| io(&path, e))?;
        }
        file.sync_data().map_err(|e| io(&path, e))
    }
}

/// Writes run `no` of `records` (in key order) to `dir`, whole and synced with its name.
/// `None` if `stop` says so first (a merge at shutdown): nothing is left but a temporary
/// file, which the next [`stored`] removes.
pub fn write<R, E>(
    dir: &Path,
    no: u64,
    shape: Shape,
    capacity: u64,
    records: impl Iterator<Item = Result<R, E>>,
    stop: impl Fn() -> bool,
) -> Result<Option<Run>, E>
where
    R: AsRef<[u8]>,
    E: From<RunError>,
{
    let part = temporary(dir, no);
    let file = File::create(&part).map_err(|e| io(&part, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let mut filter = Filter::with_capacity(capacity);
    let mut fences = Vec::new();
    let mut count = 0u64;
    for r in records {
        let r = r?;
        let r = r.as_ref();
        if r.len() != shape.record {
            return Err(RunError::File("a record of the wrong size").into());
        }
        filter.insert((shape.probe)(r));
        if count.is_multiple_of(shape.per_chunk as u64) {
            if stop() {
                return Ok(None);
            }
            fences.extend_from_slice(&r[..shape.key]);
        }
        out.write_all(r).map_err(|e| io(&part, e))?;
        count += 1;
    }
    let filter_bytes = filter.to_bytes();
    let mut footer = Vec::with_capacity(FOOTER);
    footer.extend_from_slice(&shape.magic);
    let chunks = (fences.len() / shape.key) as u64;
    for n in [count, chunks, filter_bytes.len() as u64] {
        footer.extend_from_slice(&n.to_be_bytes());
    }
    out.write_all(&fences)
        .and_then(|_| out.write_all(&filter_bytes))
        .and_then(|_| out.write_all(&footer))
        .and_then(|_| out.flush())
        .map_err(|e| io(&part, e))?;
    drop(out);
    file.sync_data().map_err(|e| io(&part, e))?;
    drop(file);
    let path = path(dir, no);
    std::fs::rename(&part, &path).map_err(|e| io(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))?;
    fences.shrink_to_fit();
    let file = File::open(&path).map_err(|e| io(&path, e))?;
    Ok(Some(Run::new(file, no, count, shape, filter, fences)))
}

/// Opens run `no`, which its manifest says holds `count` records; refuses a file that is
/// short, long, or not a run of this shape.
pub fn open(dir: &Path, no: u64, shape: Shape, count: u64) -> Result<Run, RunError> {
    let path = path(dir, no);
    let file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RunError::File("its file is missing"),
        _ => io(&path, e),
    })?;
    let len = file.metadata().map_err(|e| io(&path, e))?.len();
    let refused = RunError::File("its file is truncated or not a run");
    if len < FOOTER as u64 {
        return Err(refused);
    }
    let mut footer = [0u8; FOOTER];
    file.read_exact_at(&mut footer, len - FOOTER as u64)
        .map_err(|e| io(&path, e))?;
    let n = |i: usize| u64::from_be_bytes(footer[8 + i * 8..16 + i * 8].try_into().expect("8"));
    let (stored, chunks, filter_len) = (n(0), n(1), n(2));
    if footer[..8] != shape.magic
        || stored != count
        || chunks != count.div_ceil(shape.per_chunk as u64)
    {
        return Err(refused);
    }
    let records_len = count
        .checked_mul(shape.record as u64)
        .ok_or(RunError::File("its file is truncated or not a run"))?;
    let fences_len = chunks * shape.key as u64;
    let whole = [fences_len, filter_len, FOOTER as u64]
        .into_iter()
        .try_fold(records_len, u64::checked_add);
    if whole != Some(len) {
        return Err(refused);
    }
    let mut fences = vec![0u8; fences_len as usize];
    let mut filter = vec![0u8; filter_len as usize];
    file.read_exact_at(&mut fences, records_len)
        .and_then(|_| file.read_exact_at(&mut filter, records_len + fences_len))
        .map_err(|e| io(&path, e))?;
    let filter = Filter::from_bytes(&filter)?;
    Ok(Run::new(file, no, count, shape, filter, fences))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: Shape = Shape {
        record: 24,
        key: 8,
        per_chunk: 10,
        magic: *b"PXTEST01",
        probe: |r| r[8..24].try_into().expect("16 bytes"),
    };

    fn record(i: u64) -> [u8; 24] {
        let mut r = [0u8; 24];
        r[..8].copy_from_slice(&(i * 2).to_be_bytes());
        r[8..16].copy_from_slice(&(i * 2).to_be_bytes());
        r[16..].copy_from_slice(&i.to_le_bytes());
        r
    }

    #[test]
    fn a_run_reads_back_by_chunk_with_its_fences_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let records = (0..95).map(|i| Ok::<_, RunError>(record(i)));
        let written = write(dir.path(), 3, SHAPE, 95, records, || false)
            .unwrap()
            .unwrap();
        let opened = open(dir.path(), 3, SHAPE, 95).unwrap();
        for run in [&written, &opened] {
            assert_eq!(run.file.chunks(), 10);
            assert_eq!(run.fences.len(), 10);
            assert_eq!(run.file.chunk_len(9), 5 * 24, "the last chunk is short");
            assert_eq!(run.file.read_chunk(4).unwrap()[..24], record(40));
            assert!(run.filter.may_contain((SHAPE.probe)(&record(77))));
            // Key 41 lies inside chunk 2's span; key 40 starts chunk 2 (and may end chunk 1).
            assert_eq!(run.fences.chunks_for(&41u64.to_be_bytes()), 2..3);
            assert_eq!(run.fences.chunks_for(&40u64.to_be_bytes()), 1..3);
            assert_eq!(run.fences.chunks_for(&0u64.to_be_bytes()), 0..1);
        }
        assert_eq!(stored(dir.path()).unwrap(), vec![3]);
    }

    #[test]
    fn a_file_cut_short_a_count_that_differs_or_another_shape_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let records = (0..30).map(|i| Ok::<_, RunError>(record(i)));
        write(dir.path(), 1, SHAPE, 30, records, || false).unwrap();
        assert!(matches!(
            open(dir.path(), 1, SHAPE, 31),
            Err(RunError::File(_))
        ));
        let other = Shape {
            magic: *b"PXTEST02",
            ..SHAPE
        };
        assert!(matches!(
            open(dir.path(), 1, other, 30),
            Err(RunError::File(_))
        ));
        let f = OpenOptions::new()
            .write(true)
            .open(path(dir.path(), 1))
            .unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 1).unwrap();
        assert!(matches!(
            open(dir.path(), 1, SHAPE, 30),
            Err(RunError::File(_))
        ));
        assert!(matches!(
            open(dir.path(), 2, SHAPE, 30),
            Err(RunError::File("its file is missing"))
        ));
    }

    #[test]
    fn a_run_stopped_part_way_leaves_no_run_and_its_part_goes_at_the_next_listing() {
        let dir = tempfile::tempdir().unwrap();
        let records = (0..30).map(|i| Ok::<_, RunError>(record(i)));
        let seen = std::cell::Cell::new(0);
        let stop = || {
            seen.set(seen.get() + 1);
            seen.get() > 2
        };
        assert!(write(dir.path(), 5, SHAPE, 30, records, stop)
            .unwrap()
            .is_none());
        assert!(temporary(dir.path(), 5).exists());
        assert!(stored(dir.path()).unwrap().is_empty());
        assert!(!temporary(dir.path(), 5).exists());
    }
}
