//! A sealed run of the identity registry as a file of its own, read with `pread`.
//!
//! In sled, every chunk a lookup read came back as a deserialised leaf that stayed in the
//! process until sled's cache and its epochs let it go: a file sent again brings most of
//! the registry in, 71 MB of a million-row import's peak (BENCHMARKS.md, session 16). Read
//! from a file, a chunk is a buffer dropped after the lookup, and what is cached is the
//! operating system's page cache, outside the process. Writing a run is one sequential
//! file rather than thousands of sled inserts that sled's segment cleaner copies again.
//!
//! # Layout
//! `entries ‖ fences ‖ filter ‖ footer`:
//! - entries: the run's entries in order, chunk `i` at `i × CHUNK × ENTRY` bytes;
//! - fences: the first key of each chunk;
//! - filter: the run's Bloom filter ([`Filter::to_bytes`]);
//! - footer: [`MAGIC`], then the number of entries, of chunks and the filter's bytes, each
//!   a big-endian u64.
//!
//! # Crash safety
//! A run's file and its directory entry are synced before the manifest (in sled) names it,
//! and opening removes a file the manifest does not name. A file is deleted only once sled
//! durably names what replaced it. Erasure rewrites a chunk in place, at its length (the
//! removed entries' places filled with [`PAD`]), and only once sled durably holds the
//! rewritten chunk; opening writes those chunks again, so a torn write is mended.

use super::{Entry, Key, CHUNK, ENTRY, KEY};
use crate::store::ProjectionError;
use pathway_log::sorted::Filter;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"PXREGRN1";
const FOOTER: usize = 8 + 3 * 8;

/// What fills an erased entry's place: above every key (tags are `x` and `n`), so a chunk
/// stays in order, and skipped by every reader.
pub const PAD: u8 = 0xff;

/// Whether `e` is an erased entry's place, not an entry.
pub fn is_pad(e: &[u8]) -> bool {
    e[0] == PAD
}

fn storage(path: &Path, e: std::io::Error) -> ProjectionError {
    ProjectionError::Storage(format!("{}: {e}", path.display()))
}

fn damaged(no: u64, what: &str) -> ProjectionError {
    ProjectionError::Corrupt(format!("run {no} of the identity registry: {what}"))
}

/// Run `no`'s file in `dir`.
pub fn path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016x}.run"))
}

/// The run numbers of the files in `dir`.
pub fn stored(dir: &Path) -> Result<Vec<u64>, ProjectionError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| storage(dir, e))? {
        let name = e.map_err(|e| storage(dir, e))?.file_name();
        let no = name
            .to_str()
            .and_then(|n| n.strip_suffix(".run"))
            .and_then(|n| u64::from_str_radix(n, 16).ok());
        out.extend(no);
    }
    Ok(out)
}

/// Makes a new file's name in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), ProjectionError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage(dir, e))
}

/// A run's file, open for lookups; it stays readable after a merge deletes it, until the
/// last lookup holding it is done.
pub struct RunFile {
    file: File,
    count: u64,
}

/// A run as [`write`] left it or [`open`] found it.
pub struct Opened {
    pub file: RunFile,
    pub filter: Filter,
    /// The first key of each chunk.
    pub fences: Vec<Key>,
}

impl RunFile {
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The bytes chunk `chunk` holds: full chunks but the last.
    pub fn chunk_len(&self, chunk: u32) -> usize {
        let start = chunk as u64 * CHUNK as u64;
        (self.count.saturating_sub(start).min(CHUNK as u64)) as usize * ENTRY
    }

    /// Chunk `chunk`, as stored (erased places included).
    pub fn read_chunk(&self, no: u64, chunk: u32) -> Result<Vec<u8>, ProjectionError> {
        let mut buf = Vec::new();
        self.read_chunk_into(no, chunk, &mut buf)?;
        Ok(buf)
    }

    /// [`RunFile::read_chunk`] into `buf`, whose allocation a lookup reuses.
    pub fn read_chunk_into(
        &self,
        no: u64,
        chunk: u32,
        buf: &mut Vec<u8>,
    ) -> Result<(), ProjectionError> {
        buf.resize(self.chunk_len(chunk), 0);
        self.file
            .read_exact_at(buf, chunk as u64 * (CHUNK * ENTRY) as u64)
            .map_err(|e| ProjectionError::Storage(format!("run {no}, chunk {chunk}: {e}")))
    }
}

/// Writes run `no` of `entries` (in order) to `dir`, synced with its name.
pub fn write<I>(dir: &Path, no: u64, capacity: u64, entries: I) -> Result<Opened, ProjectionError>
where
    I: Iterator<Item = Result<Entry, ProjectionError>>,
{
    let path = path(dir, no);
    // Read and write: the handle stays the run's for lookups.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| storage(&path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let mut filter = Filter::with_capacity(capacity);
    let mut fences: Vec<Key> = Vec::new();
    let mut count = 0u64;
    for e in entries {
        let e = e?;
        filter.insert(super::probe(super::key_of(&e)));
        if count.is_multiple_of(CHUNK as u64) {
            fences.push(super::key_of(&e).try_into().expect("a key"));
        }
        out.write_all(&e).map_err(|e| storage(&path, e))?;
        count += 1;
    }
    let filter_bytes = filter.to_bytes();
    let mut footer = Vec::with_capacity(FOOTER);
    footer.extend_from_slice(MAGIC);
    for n in [count, fences.len() as u64, filter_bytes.len() as u64] {
        footer.extend_from_slice(&n.to_be_bytes());
    }
    out.write_all(&fences.concat())
        .and_then(|_| out.write_all(&filter_bytes))
        .and_then(|_| out.write_all(&footer))
        .and_then(|_| out.flush())
        .map_err(|e| storage(&path, e))?;
    drop(out);
    file.sync_data().map_err(|e| storage(&path, e))?;
    sync_dir(dir)?;
    Ok(Opened {
        file: RunFile { file, count },
        filter,
        fences,
    })
}

/// Opens run `no`, which the manifest says holds `count` entries; refuses a file that is
/// short, long, or not a run's.
pub fn open(dir: &Path, no: u64, count: u64) -> Result<Opened, ProjectionError> {
    let path = path(dir, no);
    let file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => damaged(no, "its file is missing"),
        _ => storage(&path, e),
    })?;
    let len = file.metadata().map_err(|e| storage(&path, e))?.len();
    if len < FOOTER as u64 {
        return Err(damaged(no, "its file is truncated"));
    }
    let mut footer = [0u8; FOOTER];
    file.read_exact_at(&mut footer, len - FOOTER as u64)
        .map_err(|e| storage(&path, e))?;
    let n = |i: usize| u64::from_be_bytes(footer[8 + i * 8..16 + i * 8].try_into().expect("8"));
    let (stored, chunks, filter_len) = (n(0), n(1), n(2));
    let refused = || damaged(no, "its file is truncated or not a run");
    if &footer[..8] != MAGIC || stored != count || chunks != count.div_ceil(CHUNK as u64) {
        return Err(refused());
    }
    let entries_len = count.checked_mul(ENTRY as u64).ok_or_else(refused)?;
    let fences_len = chunks * KEY as u64;
    let whole = [fences_len, filter_len, FOOTER as u64]
        .into_iter()
        .try_fold(entries_len, u64::checked_add);
    if whole != Some(len) {
        return Err(refused());
    }
    let mut tail = vec![0u8; (fences_len + filter_len) as usize];
    file.read_exact_at(&mut tail, entries_len)
        .map_err(|e| storage(&path, e))?;
    let (fences, filter) = tail.split_at(fences_len as usize);
    let filter = Filter::from_bytes(filter).map_err(|e| damaged(no, &e.to_string()))?;
    let fences = fences
        .chunks_exact(KEY)
        .map(|f| Key::try_from(f).expect("a key"))
        .collect();
    Ok(Opened {
        file: RunFile { file, count },
        filter,
        fences,
    })
}

/// Writes `bytes` (chunk `chunk` of run `no` less erased entries) over the stored chunk, at
/// its length, and syncs it.
pub fn overwrite(
    dir: &Path,
    no: u64,
    run: &RunFile,
    chunk: u32,
    bytes: &[u8],
) -> Result<(), ProjectionError> {
    let len = run.chunk_len(chunk);
    if bytes.len() > len || !bytes.len().is_multiple_of(ENTRY) {
        return Err(damaged(
            no,
            "an erased chunk is longer than the chunk it replaces",
        ));
    }
    let mut padded = bytes.to_vec();
    padded.resize(len, PAD);
    let path = path(dir, no);
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| storage(&path, e))?;
    file.write_all_at(&padded, chunk as u64 * (CHUNK * ENTRY) as u64)
        .and_then(|_| file.sync_data())
        .map_err(|e| storage(&path, e))
}
