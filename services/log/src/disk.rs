//! Making a flushed group durable, which sled's flush alone does not.
//!
//! sled 0.34 ends its flush, on Linux, at `sync_file_range` (spacejam/sled#1452): the pages
//! reach the device, but neither the file's metadata (its length, which grows with the log)
//! nor the device's volatile write cache is committed. A process crash loses nothing (the
//! kernel holds the pages), which is why the SIGKILL test could not see it; a power cut could
//! take groups we had acknowledged. So after each flush the log calls `fdatasync` on its own
//! handle to sled's file: fsync acts on the file, not the descriptor, and commits both. The
//! data is already written by then, so what it adds is the device's cache flush.

use crate::error::LogError;
use std::fs::File;
use std::path::Path;

/// sled 0.34 keeps every tree of a database in this one file of its directory.
const SLED_FILE: &str = "db";

type DeviceSync = Box<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// A sled database whose flush is durable. The log's own; public so that other stores whose
/// answers promise durability (webhook registrations) get the same.
pub struct Disk {
    db: sled::Db,
    sync: DeviceSync,
}

impl Disk {
    /// The database in `dir`, with a handle to its file. Fails, rather than running
    /// without durability, if the file is not where sled 0.34 puts it (a sled upgrade that
    /// moved it must be looked at again).
    pub fn open(db: sled::Db, dir: &Path) -> Result<Disk, LogError> {
        let path = dir.join(SLED_FILE);
        let file = File::open(&path).map_err(|e| {
            LogError::Storage(format!(
                "cannot open {} to make its writes durable: {e}",
                path.display()
            ))
        })?;
        // A new log's directory entries (sled's file, its config) must survive a power cut
        // too; once, at open, is enough, since sled never renames them.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LogError::Storage(format!("cannot sync {}: {e}", dir.display())))?;
        file.sync_all()
            .map_err(|e| LogError::Storage(format!("cannot sync {}: {e}", path.display())))?;
        Ok(Disk::with_sync(db, Box::new(move || file.sync_data())))
    }

    /// A disk whose device sync is `sync`: tests hold it to see that nothing is answered
    /// before it returns.
    pub(crate) fn with_sync(db: sled::Db, sync: DeviceSync) -> Disk {
        Disk { db, sync }
    }

    /// Flushes sled's buffers and makes them durable.
    pub fn flush(&self) -> Result<(), LogError> {
        self.db.flush()?;
        (self.sync)().map_err(|e| LogError::Storage(format!("cannot fdatasync: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handle must be to the file sled writes: a flush that grew it leaves its
    /// length, as our handle sees it, where sled's data ends.
    #[test]
    fn the_handle_is_to_the_file_sled_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let disk = Disk::open(db.clone(), dir.path()).unwrap();
        let before = std::fs::metadata(dir.path().join(SLED_FILE)).unwrap().len();
        db.insert(b"k", vec![7u8; 64 * 1024]).unwrap();
        disk.flush().unwrap();
        let after = std::fs::metadata(dir.path().join(SLED_FILE)).unwrap().len();
        assert!(after >= before + 64 * 1024, "{before} -> {after}");
    }

    #[test]
    fn a_directory_without_sleds_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(other.path()).open().unwrap();
        let err = Disk::open(db, dir.path()).err().expect("refused");
        assert!(err.to_string().contains("durable"), "{err}");
    }

    #[test]
    fn a_failed_device_sync_fails_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let disk = Disk::with_sync(db, Box::new(|| Err(std::io::Error::other("EIO"))));
        let err = disk.flush().expect_err("failed");
        assert!(err.to_string().contains("EIO"), "{err}");
    }
}
