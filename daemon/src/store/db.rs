//! The [`Store`] type: opening the file, and the swappable database handle
//! behind every transaction (why the store reopens its own file).
//!
//!
//! After any I/O error (ENOSPC in a commit, typically) redb marks the open
//! `Database` failed: every later write transaction, and every read that
//! misses its page cache, fails with `StorageError::PreviousIo` until the file
//! is closed and opened again (opening repairs it back to the last good
//! commit). Without a reopen the daemon could neither serve what it holds nor
//! recover when space returns. So the store keeps `Mutex<Option<Arc<Database>>>`:
//! an I/O failure marks the handle poisoned, and the next transaction drops it
//! and opens the file again. If that fails too (the disk is still full, or a
//! transaction of the old handle is still running elsewhere), the call returns
//! [`StoreError::Unavailable`] and the next call tries again. Nothing is lost
//! meanwhile: a failed commit is never acked, so the gateway resends it.
//!
//! A failure streak is logged once (error) when it starts and once (info) when
//! a commit succeeds again; the link logs each refused batch itself.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{
    CommitError, Database, DatabaseError, ReadTransaction, ReadableDatabase, StorageError,
    TransactionError, WriteTransaction,
};

use super::error::{StoreError, dberr};
use super::schema::create_all;

/// The store. Cheap to share behind an `Arc`; redb serialises writers.
#[derive(Debug)]
pub struct Store {
    handle: Handle,
    path: PathBuf,
}

/// The database handle of a [`Store`].
#[derive(Debug)]
struct Handle {
    /// `None` after a failed reopen: the next transaction tries again.
    db: Mutex<Option<Arc<Database>>>,
    /// The open handle saw an I/O error: reopen before the next transaction.
    poisoned: AtomicBool,
    /// In a failure streak (logged at its start and at its end).
    failing: AtomicBool,
}

impl Handle {
    fn new(db: Database) -> Self {
        Self {
            db: Mutex::new(Some(Arc::new(db))),
            poisoned: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }
}

/// redb page cache: see [`open_db`].
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// Opens (or creates) the database file; redb repairs it if it was not closed
/// cleanly.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    redb::Builder::new()
        // redb's default cache is 1 GiB: with a large backlog (a frozen app)
        // the daemon's RSS would grow with it. The working set here is small
        // (recent inbox pages and a few tables), so a small cache costs little
        // and keeps memory bounded on small devices.
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_path_buf()),
            other => dberr(other),
        })
}

fn is_io(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Db(redb::Error::Io(_) | redb::Error::PreviousIo)
    )
}

impl Store {
    /// Opens (creating if needed) `dir/syspushd.redb` with private permissions.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        } else if let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "state directory is accessible to other users; expected 0700");
        }
        let path = dir.join("syspushd.redb");
        // Create the file ourselves so it is born 0600 (redb would use the umask).
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(|source| {
            StoreError::Io {
                path: path.clone(),
                source,
            }
        })?;
        let db = open_db(&path)?;
        let txn = db.begin_write().map_err(dberr)?;
        create_all(&txn)?;
        txn.commit().map_err(dberr)?;
        Ok(Self {
            handle: Handle::new(db),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Begins a read transaction, reopening the database first if needed.
    pub(super) fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.begin(|db| db.begin_read())
    }

    /// Begins a write transaction, reopening the database first if needed.
    pub(super) fn write(&self) -> Result<WriteTransaction, StoreError> {
        self.begin(|db| db.begin_write())
    }

    /// Ends a write transaction: `txn.commit()` goes through here so an I/O
    /// failure poisons the handle and the first success ends a streak.
    pub(super) fn finish(&self, committed: Result<(), CommitError>) -> Result<(), StoreError> {
        match committed {
            Ok(()) => {
                if self.handle.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(path = %self.path.display(), "store recovered: commits succeed again");
                }
                Ok(())
            }
            Err(e) => Err(self.failed(dberr(e))),
        }
    }

    fn begin<T>(
        &self,
        begin: impl Fn(&Database) -> Result<T, TransactionError>,
    ) -> Result<T, StoreError> {
        let db = self.db()?;
        match begin(&db) {
            // Failed since we last looked (a read, or a write that never got
            // to commit): reopen now, once.
            Err(TransactionError::Storage(StorageError::PreviousIo)) => {
                self.handle.poisoned.store(true, Ordering::Release);
                drop(db);
                begin(&*self.db()?).map_err(|e| self.failed(dberr(e)))
            }
            other => other.map_err(|e| self.failed(dberr(e))),
        }
    }

    /// The current handle, reopened if poisoned or missing.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        let mut slot = self
            .handle
            .db
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.handle.poisoned.swap(false, Ordering::AcqRel) {
            // Our reference goes now; the file closes when the last running
            // transaction of the old handle ends.
            *slot = None;
        }
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        // One attempt, never a wait: this runs on the daemon's only thread. If
        // the old handle still holds the file (a transaction not yet dropped),
        // the caller gets "unavailable" and the next store call tries again.
        match open_db(&self.path) {
            Ok(db) => {
                tracing::debug!(path = %self.path.display(), "store reopened");
                let db = Arc::new(db);
                *slot = Some(db.clone());
                Ok(db)
            }
            Err(e) => {
                let e = StoreError::Unavailable(e.to_string());
                self.streak(&e);
                Err(e)
            }
        }
    }

    /// Notes an error: an I/O one poisons the handle (and may start a streak).
    fn failed(&self, e: StoreError) -> StoreError {
        if is_io(&e) {
            self.handle.poisoned.store(true, Ordering::Release);
            self.streak(&e);
        }
        e
    }

    fn streak(&self, e: &StoreError) {
        if !self.handle.failing.swap(true, Ordering::AcqRel) {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "store failed: deliveries are not acked until it recovers; reopening the database on each use"
            );
        }
    }
}
