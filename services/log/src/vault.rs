//! Per-person keys, so that one person's data can be made unreadable everywhere by destroying
//! one key (crypto-shredding), while the hash chain, which covers the stored ciphertext, still
//! verifies.
//!
//! Every event's `data` is sealed with its person's key (AES-256-GCM; the nonce is the entry's
//! sequence number, unique for the life of the log, and the sequence number is also the
//! associated data, so a sealed value cannot be moved to another position). The erasure
//! notice itself (`young-person.erased`) is not sealed: it holds nothing personal and must
//! stay readable.
//!
//! Person keys live in the log tree wrapped (AES-256-GCM) under a master key kept in a file
//! beside the tree (`master-<epoch>.key`), packed about 32 people a sled key under `w`
//! ([`crate::packed`]; until layout 5, `p` + person, a key each). Deleting a sled key does
//! not wipe its old bytes from sled's files, so erasure also rotates the master: every
//! remaining person key is re-wrapped under a new master, and the old master file is
//! overwritten and removed. The erased person's wrapped key may linger in sled's files, but
//! nothing that can unwrap it does.
//!
//! Keys are wrapped when they are stored, under the vault's lock, which erasure holds while
//! it rotates: so no key is ever stored wrapped under a master that erasure has destroyed
//! (a key wrapped when a group was staged and stored after a rotation would have been), and
//! the vault's lock makes it the one writer of its packed keys.

use crate::disk::Disk;
use crate::error::LogError;
use crate::packed;
use crate::people::PersonMap;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use uuid::Uuid;

/// Person keys a key each, as layouts before 5 kept them.
const OLD_PREFIX: u8 = b'p';
/// Person keys, packed.
pub const TAG: u8 = b'w';
const SEALED_PREFIX: &str = "{\"$sealed\":\"";

/// People whose keys are moved at once when an older log's are packed.
const PACK_AT_ONCE: usize = 4096;

/// Writes people's wrapped keys into the packed keys. Callers hold the vault's lock (or
/// open the log, before anyone else can).
fn put(tree: &sled::Tree, mut wrapped: BTreeMap<Uuid, Vec<u8>>) -> Result<(), LogError> {
    let people: Vec<Uuid> = wrapped.keys().copied().collect();
    packed::change(tree, TAG, people, |yp, _| {
        Ok::<_, LogError>(wrapped.remove(&yp))
    })
}

fn storage(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

fn aead(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key"))
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&n.to_be_bytes());
    Nonce::assume_unique_for_key(b)
}

/// A stored person key, unwrapped under the master it names.
fn unwrapped(state: &State, yp: Uuid, wrapped: &[u8]) -> Result<[u8; 32], LogError> {
    Vault::unwrap(state, yp, wrapped)
        .ok_or_else(|| storage("a person key cannot be unwrapped: is a master key missing?"))
}

/// Random bytes from the operating system, drawn a few KiB at a time. Every new person
/// needs a key and a nonce to wrap it, and a `getrandom` call for each was a twentieth of
/// the log writer's work on new people. Bytes are zeroed as they are handed out, so none
/// is handed out twice and none lingers once used.
struct Randomness {
    rng: SystemRandom,
    pool: Mutex<Pool>,
}

struct Pool {
    bytes: [u8; POOL_BYTES],
    /// Where the unused bytes start.
    next: usize,
}

const POOL_BYTES: usize = 4096;

impl Randomness {
    fn new(rng: SystemRandom) -> Randomness {
        Randomness {
            rng,
            pool: Mutex::new(Pool {
                bytes: [0; POOL_BYTES],
                next: POOL_BYTES,
            }),
        }
    }

    fn fill(&self, out: &mut [u8]) -> Result<(), LogError> {
        if out.len() > POOL_BYTES {
            return self.rng.fill(out).map_err(|_| storage("no randomness"));
        }
        let mut pool = self.pool.lock().expect("randomness lock");
        if POOL_BYTES - pool.next < out.len() {
            self.rng
                .fill(&mut pool.bytes)
                .map_err(|_| storage("no randomness"))?;
            pool.next = 0;
        }
        let at = pool.next;
        let drawn = &mut pool.bytes[at..at + out.len()];
        out.copy_from_slice(drawn);
        drawn.fill(0);
        pool.next += out.len();
        Ok(())
    }

    /// A new key (a person's or a master).
    fn key(&self) -> Result<[u8; 32], LogError> {
        let mut k = [0u8; 32];
        self.fill(&mut k)?;
        Ok(k)
    }
}

/// The current master, its key schedule made once for every key it wraps in one go.
struct Master {
    epoch: u32,
    key: LessSafeKey,
}

impl State {
    fn master(&self) -> Master {
        Master {
            epoch: self.current,
            key: aead(&self.masters[&self.current]),
        }
    }
}

struct State {
    masters: BTreeMap<u32, [u8; 32]>,
    current: u32,
}

pub struct Vault {
    dir: PathBuf,
    tree: sled::Tree,
    rng: Randomness,
    state: Mutex<State>,
    /// Unwrapped person keys, by person.
    cache: RwLock<PersonMap<[u8; 32]>>,
    /// People whose key stays unwrapped in `cache` at most.
    cap: usize,
}

fn master_path(dir: &Path, epoch: u32) -> PathBuf {
    dir.join(format!("master-{epoch}.key"))
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(storage)?;
    f.write_all(bytes).map_err(storage)?;
    f.sync_all().map_err(storage)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(storage)?;
    }
    Ok(())
}

/// Overwrites a key file with zeros, syncs, and removes it.
fn destroy(path: &Path) -> Result<(), LogError> {
    let len = std::fs::metadata(path).map_err(storage)?.len() as usize;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(storage)?;
    f.write_all(&vec![0u8; len]).map_err(storage)?;
    f.sync_all().map_err(storage)?;
    std::fs::remove_file(path).map_err(storage)
}

impl Vault {
    pub fn open(dir: &Path, tree: sled::Tree, cap: usize) -> Result<Vault, LogError> {
        let rng = Randomness::new(SystemRandom::new());
        let mut masters = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(storage)? {
            let path = entry.map_err(storage)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(epoch) = name
                .strip_prefix("master-")
                .and_then(|n| n.strip_suffix(".key"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                let bytes = std::fs::read(&path).map_err(storage)?;
                let key: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| storage(format!("{} is not a 32-byte key", path.display())))?;
                masters.insert(epoch, key);
            }
        }
        if masters.is_empty() {
            let key = rng.key()?;
            write_secret(&master_path(dir, 1), &key)?;
            masters.insert(1, key);
        }
        let current = *masters.keys().next_back().expect("a master");
        Ok(Vault {
            dir: dir.to_owned(),
            tree,
            rng,
            state: Mutex::new(State { masters, current }),
            cache: RwLock::new(PersonMap::default()),
            cap,
        })
    }

    /// `epoch (4) | nonce (12) | sealed key (32 + 16)`; the person is the associated data.
    fn unwrap(state: &State, yp: Uuid, wrapped: &[u8]) -> Option<[u8; 32]> {
        if wrapped.len() != 4 + 12 + 32 + 16 {
            return None;
        }
        let epoch = u32::from_be_bytes(wrapped[..4].try_into().ok()?);
        let master = state.masters.get(&epoch)?;
        let n = Nonce::try_assume_unique_for_key(&wrapped[4..16]).ok()?;
        let mut buf = wrapped[16..].to_vec();
        let plain = aead(master)
            .open_in_place(n, Aad::from(yp.as_bytes()), &mut buf)
            .ok()?;
        plain.try_into().ok()
    }

    /// Wraps under the current master with a fresh random nonce (never reused under one key).
    fn wrap(
        rng: &Randomness,
        master: &Master,
        yp: Uuid,
        key: &[u8; 32],
    ) -> Result<Vec<u8>, LogError> {
        let mut n = [0u8; 12];
        rng.fill(&mut n)?;
        let mut out = Vec::with_capacity(4 + 12 + 32 + ring::aead::MAX_TAG_LEN);
        out.extend_from_slice(&master.epoch.to_be_bytes());
        out.extend_from_slice(&n);
        out.extend_from_slice(key);
        let tag = master
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(n),
                Aad::from(yp.as_bytes()),
                &mut out[16..],
            )
            .expect("sealing cannot fail");
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The person's key, if they have one (not yet, or no longer after erasure: `None`).
    /// Every read of the log asks this: the cache is read under a shared lock.
    pub fn key(&self, yp: Uuid) -> Result<Option<[u8; 32]>, LogError> {
        if let Some(k) = self.cache.read().expect("vault cache").get(&yp) {
            return Ok(Some(*k));
        }
        let state = self.state.lock().expect("vault lock");
        let Some(wrapped) = packed::get(&self.tree, TAG, yp)? else {
            return Ok(None);
        };
        let k = unwrapped(&state, yp, &wrapped)?;
        // Cached before the lock goes: an erasure that took it next must find the key here
        // to remove it, or the destroyed key would outlive it in memory.
        self.remember([(yp, k)]);
        drop(state);
        Ok(Some(k))
    }

    /// Unwraps many people's keys into the cache at once, their packed keys read in key
    /// order, one read for the people a key holds: a projector step or an import chunk that
    /// meets thousands of people no longer cached would otherwise read a key for each. As
    /// in [`Vault::key`], under the lock that erasure's rotation holds.
    pub fn warm(&self, people: &[Uuid]) -> Result<(), LogError> {
        let mut missing: Vec<Uuid> = {
            let cache = self.cache.read().expect("vault cache");
            people
                .iter()
                .copied()
                .filter(|p| !cache.contains_key(p))
                .collect()
        };
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        let state = self.state.lock().expect("vault lock");
        let mut keys = Vec::with_capacity(missing.len());
        for (yp, wrapped) in missing
            .iter()
            .zip(packed::get_many(&self.tree, TAG, &missing)?)
        {
            if let Some(wrapped) = wrapped {
                keys.push((*yp, unwrapped(&state, *yp, &wrapped)?));
            }
        }
        self.remember(keys);
        drop(state);
        Ok(())
    }

    /// A new key for a person, to [`Vault::store`] with the entries that use it.
    pub fn new_key(&self) -> Result<[u8; 32], LogError> {
        self.rng.key()
    }

    /// Stores new people's keys, wrapped under the current master. The writer calls this
    /// before it writes the entries that use them, in the same flush.
    pub fn store<S>(&self, keys: &HashMap<Uuid, [u8; 32], S>) -> Result<(), LogError> {
        if keys.is_empty() {
            return Ok(());
        }
        let state = self.state.lock().expect("vault lock");
        let master = state.master();
        let mut wrapped = BTreeMap::new();
        for (yp, k) in keys {
            wrapped.insert(*yp, Vault::wrap(&self.rng, &master, *yp, k)?);
        }
        put(&self.tree, wrapped)
    }

    /// Called once keys written with a group of entries are durable.
    pub fn remember(&self, keys: impl IntoIterator<Item = (Uuid, [u8; 32])>) {
        let mut cache = self.cache.write().expect("vault cache");
        if cache.len() >= self.cap {
            // Unwrapped again from the store on a miss; bounded so memory does not grow
            // with the number of people.
            cache.clear();
        }
        cache.extend(keys);
    }

    /// Seals event data (its JSON text) for position `seq`, as the JSON stored in the
    /// record.
    pub fn seal(key: &[u8; 32], seq: u64, plain: &[u8]) -> Box<RawValue> {
        // Sized for the tag and for the text, so neither grows: this runs for every event
        // the writer stages.
        let mut buf = Vec::with_capacity(plain.len() + ring::aead::MAX_TAG_LEN);
        buf.extend_from_slice(plain);
        aead(key)
            .seal_in_place_append_tag(nonce(seq), Aad::from(seq.to_be_bytes()), &mut buf)
            .expect("sealing cannot fail");
        let mut text = Vec::with_capacity(SEALED_PREFIX.len() + buf.len().div_ceil(3) * 4 + 2);
        text.extend_from_slice(SEALED_PREFIX.as_bytes());
        encode_into(&buf, &mut text);
        text.extend_from_slice(b"\"}");
        let text = String::from_utf8(text).expect("the prefix and the alphabet are ASCII");
        RawValue::from_string(text).expect("JSON")
    }

    /// The sealed ciphertext of stored data, if it is sealed. The stored form is exactly what
    /// [`Vault::seal`] writes, so it is read by its prefix, without a JSON parse: every read
    /// of the log passes here.
    pub fn sealed(data: &RawValue) -> Option<Vec<u8>> {
        let inner = data
            .get()
            .strip_prefix(SEALED_PREFIX)?
            .strip_suffix("\"}")?;
        decode(inner)
    }

    /// Opens sealed data for position `seq` with the person's key.
    pub fn unseal(key: &[u8; 32], seq: u64, mut sealed: Vec<u8>) -> Option<Box<RawValue>> {
        let plain = aead(key)
            .open_in_place(nonce(seq), Aad::from(seq.to_be_bytes()), &mut sealed)
            .ok()?;
        let len = plain.len();
        sealed.truncate(len);
        RawValue::from_string(String::from_utf8(sealed).ok()?).ok()
    }

    /// Destroys a person's key: their sealed data becomes unreadable for good. Every other
    /// key is re-wrapped under a fresh master, and the old master is destroyed, so the old
    /// wrapped bytes sled may still hold are useless. Returns whether there was a key.
    pub(crate) fn shred(&self, yp: Uuid, disk: &Disk) -> Result<bool, LogError> {
        let mut state = self.state.lock().expect("vault lock");
        let mut existed = false;
        packed::change(&self.tree, TAG, [yp], |_, stored| {
            existed = stored.is_some();
            Ok::<_, LogError>(None)
        })?;
        disk.flush()?;
        self.cache.write().expect("vault cache").remove(&yp);
        let next = state.current + 1;
        let fresh = self.rng.key()?;
        write_secret(&master_path(&self.dir, next), &fresh)?;
        state.masters.insert(next, fresh);
        state.current = next;
        self.settle(&mut state, disk)?;
        Ok(existed)
    }

    /// Re-wraps every person key under the current master and destroys the older masters.
    /// Also run at open, to finish a rotation a crash interrupted. The re-wrapped keys are
    /// made durable before any master goes: otherwise a power cut could leave every key
    /// wrapped only under a destroyed master.
    fn settle(&self, state: &mut State, disk: &Disk) -> Result<(), LogError> {
        let old: Vec<u32> = state
            .masters
            .keys()
            .copied()
            .filter(|e| *e != state.current)
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        // The same keys with every value re-wrapped: which key holds whom depends only on
        // who is held.
        let mut batch = sled::Batch::default();
        let master = state.master();
        for kv in self.tree.scan_prefix([TAG]) {
            let (k, v) = kv?;
            let mut records = packed::decode(&v)?;
            for (person, wrapped) in &mut records {
                let key = Vault::unwrap(state, *person, wrapped)
                    .ok_or_else(|| storage("a person key cannot be unwrapped during rotation"))?;
                *wrapped = Vault::wrap(&self.rng, &master, *person, &key)?;
            }
            batch.insert(k, packed::encode(&records));
        }
        self.tree.apply_batch(batch)?;
        disk.flush()?;
        for epoch in old {
            state.masters.remove(&epoch);
            destroy(&master_path(&self.dir, epoch))?;
        }
        Ok(())
    }

    /// Moves the keys of a log in layout 4 or earlier, a sled key each, into packed keys,
    /// then removes them; as they are, whatever master wrapped them (a rotation a crash
    /// interrupted is finished after, by [`Vault::recover`]). A crash midway leaves keys
    /// that the next open moves again. Returns how many it moved.
    pub(crate) fn pack_older(tree: &sled::Tree) -> Result<usize, LogError> {
        let mut moved = 0;
        let mut pending: BTreeMap<Uuid, Vec<u8>> = BTreeMap::new();
        for kv in tree.scan_prefix([OLD_PREFIX]) {
            let (k, v) = kv?;
            let person = Uuid::from_slice(&k[1..]).map_err(storage)?;
            pending.insert(person, v.to_vec());
            moved += 1;
            if pending.len() == PACK_AT_ONCE {
                put(tree, std::mem::take(&mut pending))?;
            }
        }
        put(tree, pending)?;
        if moved > 0 {
            for k in tree.scan_prefix([OLD_PREFIX]).keys() {
                tree.remove(k?)?;
            }
            tracing::info!(people = moved, "packed the person keys of an older log");
        }
        Ok(moved)
    }

    /// Finishes any rotation a crash interrupted.
    pub(crate) fn recover(&self, disk: &Disk) -> Result<(), LogError> {
        let mut state = self.state.lock().expect("vault lock");
        self.settle(&mut state, disk)
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// [`encode_into`] a string of its own, for the tests.
#[cfg(test)]
fn encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    encode_into(bytes, &mut out);
    String::from_utf8(out).expect("the alphabet is ASCII")
}

/// Appends the Base64 (standard, padded) of `bytes` to `out`: the sealed data is a JSON
/// string. Every append seals and every read of the log opens, so both directions work a
/// whole group of four characters at a time, byte pushes rather than slice copies.
fn encode_into(bytes: &[u8], out: &mut Vec<u8>) {
    let sextet = |n: u32, shift: u32| ALPHABET[(n >> shift & 63) as usize];
    let mut chunks = bytes.chunks_exact(3);
    for c in &mut chunks {
        let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
        out.extend([sextet(n, 18), sextet(n, 12), sextet(n, 6), sextet(n, 0)]);
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend([sextet(n, 18), sextet(n, 12), b'=', b'=']);
        }
        [a, b] => {
            let n = (u32::from(a) << 16) | (u32::from(b) << 8);
            out.extend([sextet(n, 18), sextet(n, 12), sextet(n, 6), b'=']);
        }
        _ => {}
    }
}

/// Each byte's value in [`ALPHABET`], or 255.
const VALUES: [u8; 256] = {
    let mut t = [255u8; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// The inverse of [`encode`]; `None` for anything it would not have written (a character
/// off the alphabet, a length not a multiple of four, padding anywhere but the end).
fn decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let Some(last) = s.len().checked_sub(4) else {
        return Some(Vec::new());
    };
    let (body, tail) = s.split_at(last);
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    // Four values OR-ed together are below 64 only if every one is on the alphabet.
    let group = |c: &[u8]| {
        let v = [c[0], c[1], c[2], c[3]].map(|c| VALUES[c as usize]);
        let n = (u32::from(v[0]) << 18)
            | (u32::from(v[1]) << 12)
            | (u32::from(v[2]) << 6)
            | u32::from(v[3]);
        ((v[0] | v[1] | v[2] | v[3]) < 64).then_some(n)
    };
    for c in body.chunks_exact(4) {
        let n = group(c)?;
        out.extend([(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    match tail {
        [a, b, b'=', b'='] => {
            let n = group(&[*a, *b, b'A', b'A'])?;
            out.push((n >> 16) as u8);
        }
        [a, b, c, b'='] => {
            let n = group(&[*a, *b, *c, b'A'])?;
            out.extend([(n >> 16) as u8, (n >> 8) as u8]);
        }
        _ => {
            let n = group(tail)?;
            out.extend([(n >> 16) as u8, (n >> 8) as u8, n as u8]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vault on a fresh store, and the store's sled, to open the vault again from (with
    /// `open_sled`, which waits for sled to let go of the store it just closed).
    fn vault(dir: &Path) -> (Vault, Disk) {
        let db = crate::open_sled(&sled::Config::new().path(dir.join("db"))).unwrap();
        let tree = db.open_tree("log").unwrap();
        let disk = Disk::with_sync(db, Box::new(|| Ok(())));
        (Vault::open(dir, tree, 10).unwrap(), disk)
    }

    fn people(n: u128) -> PersonMap<[u8; 32]> {
        (0..n)
            .map(|i| (Uuid::from_u128(i * 0x9e37_79b9), [i as u8; 32]))
            .collect()
    }

    /// Keys drawn from the pool are fresh across refills, and the pool keeps no copy.
    #[test]
    fn drawn_randomness_is_never_handed_out_twice_nor_kept() {
        let r = Randomness::new(SystemRandom::new());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * POOL_BYTES / 32 {
            let mut k = [0u8; 32];
            r.fill(&mut k).unwrap();
            assert_ne!(k, [0u8; 32]);
            assert!(seen.insert(k), "a key drawn twice");
            let pool = r.pool.lock().unwrap();
            assert!(pool.bytes[..pool.next].iter().all(|b| *b == 0));
        }
        let mut odd = [0u8; 12];
        r.fill(&mut odd).unwrap();
        let mut large = vec![0u8; POOL_BYTES + 1];
        r.fill(&mut large).unwrap();
        assert!(large.iter().any(|b| *b != 0));
    }

    /// Given stored keys, when one person is erased, then theirs is gone and everyone
    /// else's still opens after a restart, under the new master only.
    #[test]
    fn erasure_removes_one_key_and_re_wraps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let all = people(300);
        let gone = Uuid::from_u128(7 * 0x9e37_79b9);
        {
            let (v, disk) = vault(dir.path());
            v.store(&all).unwrap();
            assert!(
                v.tree.scan_prefix([TAG]).count() < 30,
                "packed, not a key each"
            );
            assert!(v.shred(gone, &disk).unwrap());
            assert!(!v.shred(gone, &disk).unwrap(), "nothing left to erase");
        }
        let (v, _disk) = vault(dir.path());
        let masters = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("master-")
            })
            .count();
        assert_eq!(masters, 1, "the old masters are destroyed");
        for (yp, k) in &all {
            let want = (*yp != gone).then_some(*k);
            assert_eq!(v.key(*yp).unwrap(), want, "{yp}");
        }
    }

    /// A key made while a group was staged and stored after an erasure rotated the master
    /// is wrapped under the new master, not the destroyed one: it still opens after a
    /// restart.
    #[test]
    fn a_key_stored_after_a_rotation_is_wrapped_under_the_new_master() {
        let dir = tempfile::tempdir().unwrap();
        let newcomer = Uuid::from_u128(1_000_000);
        let k = {
            let (v, disk) = vault(dir.path());
            v.store(&people(3)).unwrap();
            let k = v.new_key().unwrap();
            v.shred(Uuid::from_u128(0), &disk).unwrap();
            v.store(&PersonMap::from_iter([(newcomer, k)])).unwrap();
            k
        };
        let (v, _disk) = vault(dir.path());
        assert_eq!(v.key(newcomer).unwrap(), Some(k));
    }

    /// An older log's keys, a sled key each, are packed at open and read as before.
    #[test]
    fn an_older_logs_keys_are_packed() {
        let dir = tempfile::tempdir().unwrap();
        let all = people(100);
        {
            let (v, _disk) = vault(dir.path());
            let state = v.state.lock().unwrap();
            let master = state.master();
            for (yp, k) in &all {
                let mut old = [OLD_PREFIX; 17];
                old[1..].copy_from_slice(yp.as_bytes());
                v.tree
                    .insert(old, Vault::wrap(&v.rng, &master, *yp, k).unwrap())
                    .unwrap();
            }
            drop(state);
            assert_eq!(Vault::pack_older(&v.tree).unwrap(), 100);
            assert_eq!(Vault::pack_older(&v.tree).unwrap(), 0);
            assert!(v.tree.scan_prefix([OLD_PREFIX]).next().is_none());
        }
        let (v, _disk) = vault(dir.path());
        for (yp, k) in &all {
            assert_eq!(v.key(*yp).unwrap(), Some(*k));
        }
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes, "{n}");
        }
        assert_eq!(encode(b"Man"), "TWFu");
        assert_eq!(encode(b"Ma"), "TWE=");
        assert_eq!(encode(b"M"), "TQ==");
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn base64_refuses_what_encode_never_writes() {
        for bad in ["TWF", "TW=u", "TQ==TWFu", "TWE*", "=AAA", "T-Fu"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
        assert_eq!(decode("").unwrap(), b"");
        assert_eq!(decode("+/8=").unwrap(), [0xfb, 0xff]);
    }

    #[test]
    fn sealed_data_opens_only_with_its_key_at_its_position() {
        let k = [7u8; 32];
        let data = RawValue::from_string(r#"{"given_name":"Ada"}"#.into()).unwrap();
        let sealed = Vault::seal(&k, 42, data.get().as_bytes());
        assert!(!sealed.get().contains("Ada"));
        let bytes = Vault::sealed(&sealed).unwrap();
        assert_eq!(
            Vault::unseal(&k, 42, bytes.clone()).unwrap().get(),
            data.get()
        );
        assert!(
            Vault::unseal(&k, 43, bytes.clone()).is_none(),
            "moved to another position"
        );
        assert!(
            Vault::unseal(&[8u8; 32], 42, bytes).is_none(),
            "another key"
        );
    }
}
