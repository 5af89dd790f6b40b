//! The durable store: this data directory's replica id, its restart
//! generation, and the replicated state as a snapshot plus a log of the
//! deltas persisted since, in one redb file (`data_dir/state.redb`).
//!
//! Owns the file format, the recovery read at startup ([`Store::open`]) and
//! the writer thread that makes entries durable ([`spawn_writer`]). Must not
//! interpret the state (the peer restores a [`Replica`] from [`Recovered`])
//! and must never block the async peer task on disk I/O: every commit runs
//! on the `aqueduct-store` thread.
//!
//! - **Group commit.** The writer thread takes one entry, then every entry
//!   already queued (up to [`BATCH_ENTRIES_MAX`] / [`BATCH_BYTES_MAX`]), and
//!   writes them all in one transaction with one fsync. It then publishes
//!   [`Durability::durable_seq`]: every entry with a sequence number up to it
//!   survives `kill -9` and power loss. A local write is acknowledged, and
//!   sent to other peers, only once it is durable (relays of other peers'
//!   changes need not wait: anti-entropy repairs their loss).
//! - **Failure stops writing.** A failed commit publishes
//!   [`Durability::failed`] with `durable_seq` unchanged and stops the thread,
//!   so nothing that is not durable is ever reported durable.
//! - **Compaction is the caller's.** An [`Entry::Snapshot`] (a full state)
//!   replaces the stored snapshot and deletes every earlier log entry in the
//!   same transaction. The intended rule ([`Durability::snapshot_due`]):
//!   submit a snapshot when `log_bytes` exceeds
//!   `max(snapshot_bytes, 1 MiB)`, which keeps the file within about twice
//!   the state and the restart replay within one state's worth of deltas.
//! - **Never a silent reset.** A file that does not open, a record that
//!   does not decode, or a format this version does not know is a
//!   [`StoreError`] naming the file (and the record); the file is left as it
//!   is. A new store is built under a temporary name and renamed into place,
//!   so `state.redb` exists only once its replica id is durable.
//! - **Revocations** ([`Entry::Revocation`]) are kept in a table of their
//!   own, one per node name (the latest replaces the one before), outside
//!   the snapshot and log; they are read back at start
//!   ([`Recovered::revocations`]). Older releases ignore the table.
//! - **Older formats are migrated forward on open**, in the transaction
//!   that counts the generation: every record is rewritten in the current
//!   format, or (a record that does not convert) nothing is. A newer format
//!   is refused, naming both formats ([`StoreError::NewerFormat`]): an
//!   older aqueduct cannot know what a newer one wrote.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

use crate::crdt::{ConfigDelta, RemoteDeltaError, Replica, ReplicaId};
use crate::files;
use crate::gossip::Revocation;
use crate::gossip::revocations::REVOCATIONS_MAX;
use crate::gossip::wire::MESSAGE_BYTES_MAX;

/// The database's file name inside the data directory.
pub const STORE_FILE: &str = "state.redb";
/// The largest encoded delta accepted: a delta must fit in a wire message.
pub const DELTA_BYTES_MAX: usize = MESSAGE_BYTES_MAX;
/// The largest encoded snapshot accepted (a full state may exceed a message).
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 30;
/// The most entries one transaction takes.
pub const BATCH_ENTRIES_MAX: usize = 4096;
/// A transaction takes no further entry once it holds this many bytes.
pub const BATCH_BYTES_MAX: usize = 16 << 20;
/// Below this much log, compaction is not worth a snapshot.
pub const COMPACTION_LOG_BYTES_MIN: u64 = 1 << 20;

/// The layout of the tables below; bumped on any incompatible change,
/// with a migration from the format before it ([`migrate`]).
///
/// - 1: leases without an owner.
/// - 2: a lease names its owner (the peer that takes its heartbeats).
pub const FORMAT: u32 = 2;
/// The oldest format this version migrates forward.
pub const FORMAT_OLDEST: u32 = 1;
/// How long [`Store::open`] waits for a lock held by someone else before it
/// answers [`StoreError::Locked`]. A previous run killed with `-9` can leave
/// its lock behind for a moment: a child it had just forked (to run
/// `haproxy`) holds a copy of the file descriptor, and with it the lock,
/// until that child execs — milliseconds, longer on a loaded machine. (It
/// holds the killed run's API and gossip sockets too; the daemon binds
/// those after the store opens, so this wait covers them.) A second
/// aqueduct really running on the data dir holds the lock for good.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);
/// How often a held lock is tried again within [`LOCK_WAIT`].
const LOCK_RETRY: Duration = Duration::from_millis(20);
/// A metadata value is a small number.
const META_BYTES_MAX: usize = 16;
/// Metadata: `format` (u32), `replica id` ([`ReplicaId`]), `generation` (u32).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Deltas by sequence number, all later than the snapshot.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// At most one row: the latest snapshot, keyed by its sequence number.
const SNAPSHOT: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshot");
/// Certificate revocations by node name (added in protocol 2.2; a table
/// older releases do not open, so the store's format is unchanged).
const REVOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("revocations");
/// The largest encoded revocation accepted.
const REVOCATION_BYTES_MAX: usize = 1024;

/// Why the store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused (data directory, new store file).
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// Another process has the database open.
    #[error("{path} is locked by another process: is another aqueduct using this data dir?")]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// redb failed: a damaged file, not a redb file, or a failed commit.
    #[error("store {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// redb's reason.
        source: redb::Error,
    },
    /// A record is missing, does not decode, or breaks the layout.
    #[error("store {path}: {record} is unreadable: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// Which record, e.g. "log entry 17".
        record: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file was written in a format older than any this version
    /// migrates.
    #[error(
        "store {path} has format {found}, older than any this aqueduct migrates \
         (formats {FORMAT_OLDEST} to {FORMAT}); start it once with a release in between, \
         or move the data directory away to start empty and resync from the mesh"
    )]
    UnknownFormat {
        /// The database file.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
    /// The file was written by a newer aqueduct, in a format this one does
    /// not know.
    #[error(
        "store {path} has format {found}, written by a newer aqueduct; this one reads \
         formats {FORMAT_OLDEST} to {FORMAT}: run the newer aqueduct on this data directory \
         (a format is never migrated backwards), or move the directory away to start \
         empty and resync from the mesh"
    )]
    NewerFormat {
        /// The database file.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
    /// The stored deltas decode but do not rebuild a replica.
    #[error("store {path}: the stored state does not restore: {source}")]
    Restore {
        /// The database file.
        path: PathBuf,
        /// The replica's reason.
        source: RemoteDeltaError,
    },
    /// The writer thread has stopped: the entry was not queued (or, from
    /// [`Writer::close`], not everything queued became durable).
    #[error("store {path} stopped writing: {reason}")]
    Stopped {
        /// The database file.
        path: PathBuf,
        /// Why, as published in [`Durability::failed`].
        reason: String,
    },
    /// An entry (what, encoded bytes, limit) exceeds its size limit; nothing
    /// was queued.
    #[error("{0} of {1} bytes exceeds the limit of {2}")]
    TooLarge(&'static str, usize, usize),
    /// An entry did not encode; nothing was queued.
    #[error("an entry did not encode: {0}")]
    Encode(postcard::Error),
    /// The OS gave no randomness for a new replica id.
    #[error("no randomness for a new replica id: {0}")]
    Entropy(getrandom::Error),
    /// The writer thread could not be started.
    #[error("cannot start the store thread: {0}")]
    Thread(io::Error),
}

/// Adds the database path to a redb error.
trait AtPath<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> AtPath<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|error| match error.into() {
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked { path: path.into() },
            source => StoreError::Database {
                path: path.into(),
                source,
            },
        })
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.into(),
        source,
    }
}

fn corrupt(path: &Path, record: &str, reason: impl Into<String>) -> StoreError {
    let (path, record, reason) = (path.into(), record.into(), reason.into());
    StoreError::Corrupt {
        path,
        record,
        reason,
    }
}

/// Opens the database, waiting up to [`LOCK_WAIT`] while its lock is held
/// by another process.
fn open_waiting_for_lock(path: &Path) -> Result<Database, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // A plain open trusts a file that was shut down cleanly and may
        // panic on one damaged since; the check turns that into an error.
        match redb::Builder::new()
            .set_check_integrity_on_open(true)
            .open(path)
            .at(path)
        {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                thread::sleep(LOCK_RETRY);
            }
            opened => return opened,
        }
    }
}

/// What the peer restores from.
#[derive(Debug)]
pub struct Recovered {
    /// This data directory's replica id.
    pub replica_id: ReplicaId,
    /// This run's restart generation (1 on the first open).
    pub generation: u32,
    /// The snapshot, if any, then every delta logged after it, in order.
    pub deltas: Vec<ConfigDelta>,
    /// The revocations stored, by name (at most [`REVOCATIONS_MAX`]; the
    /// node checks their signatures again).
    pub revocations: Vec<Revocation>,
    path: PathBuf,
}

impl Recovered {
    /// Rebuilds the replica, and returns it with the generation.
    pub fn into_replica(self) -> Result<(Replica, u32), StoreError> {
        let replica = Replica::restore(self.replica_id, &self.deltas).map_err(|source| {
            StoreError::Restore {
                path: self.path,
                source,
            }
        })?;
        Ok((replica, self.generation))
    }
}

/// What is durable, published by the writer thread after every commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durability {
    /// Every entry with a sequence number up to this one is durable.
    pub durable_seq: u64,
    /// Transactions committed by this writer (one fsync each).
    pub commits: u64,
    /// Deltas in the log after the snapshot.
    pub log_entries: u64,
    /// Their encoded bytes.
    pub log_bytes: u64,
    /// The encoded bytes of the stored snapshot (0: none).
    pub snapshot_bytes: u64,
    /// Why writing stopped; `None` while the writer works.
    pub failed: Option<String>,
}

impl Durability {
    /// Whether the log has grown enough to be replaced by a snapshot: more
    /// log than state, and at least [`COMPACTION_LOG_BYTES_MIN`].
    pub fn snapshot_due(&self) -> bool {
        self.log_bytes > self.snapshot_bytes.max(COMPACTION_LOG_BYTES_MIN)
    }
}

/// What to make durable.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A change of the state ([`crate::gossip::Output::Persist`]).
    Delta(ConfigDelta),
    /// The full state ([`Replica::full_state`]), covering every entry
    /// submitted before it: earlier log entries are deleted.
    Snapshot(ConfigDelta),
    /// A revocation the node took ([`crate::gossip::Output::Revoked`]).
    Revocation(Revocation),
}

/// The open database.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// What is on disk: `durable_seq` is the last sequence number used.
    durability: Durability,
}

impl Store {
    /// Opens `data_dir/state.redb`, creating the directory and a new store
    /// (with a fresh replica id) if missing — both private, and tightened if
    /// an older release left them readable by others ([`crate::files`]) —
    /// and durably counts this run's generation. Reads and checks
    /// everything stored. A file locked by another process is waited for,
    /// up to [`LOCK_WAIT`].
    pub fn open(data_dir: &Path) -> Result<(Store, Recovered), StoreError> {
        files::private_own_dir(data_dir, STORE_FILE).map_err(io_error(data_dir))?;
        let path = data_dir.join(STORE_FILE);
        if path.try_exists().map_err(io_error(&path))? {
            files::private_file(&path).map_err(io_error(&path))?;
        } else {
            create(data_dir, &path)?;
        }
        let db = open_waiting_for_lock(&path)?;
        let txn = db.begin_write().at(&path)?;
        let (replica_id, generation) = next_generation(&txn, &path)?;
        let (deltas, durability) = read_state(&txn, &path)?;
        let revocations = read_revocations(&txn, &path)?;
        // redb's default durability is Immediate: the generation is on disk
        // before the peer announces it.
        txn.commit().at(&path)?;
        let recovered = Recovered {
            replica_id,
            generation,
            deltas,
            revocations,
            path: path.clone(),
        };
        Ok((
            Store {
                db,
                path,
                durability,
            },
            recovered,
        ))
    }

    /// The writer for this store and its thread, not yet started: entries
    /// submitted before [`WriterThread::spawn`] wait in the queue of
    /// `queue_bound` entries (at least 1).
    pub fn writer(self, queue_bound: usize) -> (Writer, WriterThread) {
        let (queue, entries) = mpsc::channel(queue_bound.max(1));
        let (published, durability) = watch::channel(self.durability.clone());
        let writer = Writer {
            queue,
            next_seq: self.durability.durable_seq + 1,
            durability,
            path: self.path.clone(),
        };
        let thread = WriterThread {
            store: self,
            entries,
            published,
        };
        (writer, thread)
    }

    /// Writes one batch in one transaction; returns what is durable after it.
    fn commit(&self, batch: &[Record], before: &Durability) -> Result<Durability, StoreError> {
        let mut after = before.clone();
        // A snapshot covers every delta before it, so the deltas start
        // there; revocations are not in the snapshot and are all written.
        let start = batch
            .iter()
            .rposition(|r| r.kind == RecordKind::Snapshot)
            .unwrap_or(0);
        let mut txn = self.db.begin_write().at(&self.path)?;
        txn.set_durability(redb::Durability::Immediate)
            .at(&self.path)?;
        // Most batches hold no revocation: the table is opened only for one.
        if batch
            .iter()
            .any(|record| matches!(record.kind, RecordKind::Revocation(_)))
        {
            let mut revocations = txn.open_table(REVOCATIONS).at(&self.path)?;
            for record in batch {
                if let RecordKind::Revocation(name) = &record.kind {
                    revocations
                        .insert(name.as_str(), record.bytes.as_slice())
                        .at(&self.path)?;
                }
            }
        }
        {
            let mut log = txn.open_table(LOG).at(&self.path)?;
            for record in &batch[start..] {
                let bytes = record.bytes.len() as u64;
                if matches!(record.kind, RecordKind::Revocation(_)) {
                    continue;
                }
                if record.kind == RecordKind::Snapshot {
                    let mut snapshot = txn.open_table(SNAPSHOT).at(&self.path)?;
                    snapshot.retain(|_, _| false).at(&self.path)?;
                    snapshot
                        .insert(record.seq, record.bytes.as_slice())
                        .at(&self.path)?;
                    log.retain_in(..record.seq, |_, _| false).at(&self.path)?;
                    (after.log_entries, after.log_bytes, after.snapshot_bytes) = (0, 0, bytes);
                } else {
                    log.insert(record.seq, record.bytes.as_slice())
                        .at(&self.path)?;
                    after.log_entries += 1;
                    after.log_bytes += bytes;
                }
            }
        }
        txn.commit().at(&self.path)?;
        after.durable_seq = batch.last().map_or(before.durable_seq, |r| r.seq);
        after.commits += 1;
        Ok(after)
    }
}

/// Builds a new store under a temporary name, then renames it into place,
/// so that `path` never names a store without a durable replica id. A
/// leftover temporary file (a crash during creation) acknowledged nothing
/// and is overwritten.
fn create(data_dir: &Path, path: &Path) -> Result<(), StoreError> {
    let fresh = path.with_extension("redb.new");
    let file = files::create(&fresh).map_err(io_error(&fresh))?;
    let backend = redb::backends::FileBackend::new(file).at(&fresh)?;
    let db = redb::Builder::new()
        .create_with_backend(backend)
        .at(&fresh)?;
    let replica_id = loop {
        // Zero is reserved; drawing it is a 2^-64 event, so draw again.
        if let Some(id) = ReplicaId::new(getrandom::u64().map_err(StoreError::Entropy)?) {
            break id;
        }
    };
    let txn = db.begin_write().at(&fresh)?;
    {
        let mut meta = Meta::open(&txn, &fresh)?;
        meta.put("format", &FORMAT)?;
        meta.put("replica id", &replica_id)?;
        meta.put("generation", &0u32)?;
        txn.open_table(LOG).at(&fresh)?;
        txn.open_table(SNAPSHOT).at(&fresh)?;
    }
    txn.commit().at(&fresh)?;
    db.close().at(&fresh)?;
    fs::rename(&fresh, path).map_err(io_error(path))?;
    // The rename, and a data directory just created, are durable only once
    // the directories holding them are synced.
    let parent = data_dir.parent().filter(|p| !p.as_os_str().is_empty());
    for dir in [data_dir, parent.unwrap_or(Path::new("."))] {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
    }
    Ok(())
}

/// Checks the format (migrating an older one), reads the replica id, and
/// counts this generation.
fn next_generation(txn: &WriteTransaction, path: &Path) -> Result<(ReplicaId, u32), StoreError> {
    let mut meta = Meta::open(txn, path)?;
    let found: u32 = meta.get("format")?;
    match found {
        FORMAT => {}
        found if found > FORMAT => {
            return Err(StoreError::NewerFormat {
                path: path.into(),
                found,
            });
        }
        found if found >= FORMAT_OLDEST => {
            migrate(txn, path, found)?;
            meta.put("format", &FORMAT)?;
            tracing::info!(path = %path.display(), from = found, to = FORMAT, "store migrated");
        }
        found => {
            return Err(StoreError::UnknownFormat {
                path: path.into(),
                found,
            });
        }
    }
    let replica_id: ReplicaId = meta.get("replica id")?;
    let previous: u32 = meta.get("generation")?;
    let Some(generation) = previous.checked_add(1) else {
        return Err(corrupt(
            path,
            "metadata generation",
            "no generation after u32::MAX",
        ));
    };
    meta.put("generation", &generation)?;
    Ok((replica_id, generation))
}

/// Rewrites every record of a store of format `from` in the current
/// format, within `txn`.
fn migrate(txn: &WriteTransaction, path: &Path, from: u32) -> Result<(), StoreError> {
    // Format 1 is the only one before this; a format added later needs its
    // own step here, so an unknown one is refused rather than misread.
    if from != 1 {
        return Err(StoreError::UnknownFormat {
            path: path.to_path_buf(),
            found: from,
        });
    }
    for (table, what, limit) in [
        (SNAPSHOT, "snapshot", SNAPSHOT_BYTES_MAX),
        (LOG, "log entry", DELTA_BYTES_MAX),
    ] {
        let mut table = txn.open_table(table).at(path)?;
        let seqs = table
            .iter()
            .at(path)?
            .map(|row| row.map(|(seq, _)| seq.value()))
            .collect::<Result<Vec<u64>, _>>()
            .at(path)?;
        for seq in seqs {
            let record = format!("{what} {seq} (format {from})");
            let bytes = table
                .get(seq)
                .at(path)?
                .map(|bytes| bytes.value().to_vec())
                .unwrap_or_default();
            let old: format1::Delta = decode(&bytes, limit, path, &record)?;
            let delta = old
                .try_map_values(format1::FieldValue::into_current)
                .map_err(|e| corrupt(path, &record, e.to_string()))?;
            let bytes = postcard::to_stdvec(&delta).map_err(StoreError::Encode)?;
            table.insert(seq, bytes.as_slice()).at(path)?;
        }
    }
    Ok(())
}

/// Format 1's values: a lease had no owner. Everything else encodes as in
/// format 2, so a format-1 record is a delta of these values.
mod format1 {
    use serde::Deserialize;

    use crate::crdt::model::{
        self, BackendType, Balance, Binds, FieldId, Health, Host, InvalidValue, Keepalive,
        MemberState, Meta, Mode, Name, Natives, ObjectKey, Rules, ServiceName, Version, Weight,
    };

    pub(super) type Delta = crate::crdt::Delta<ObjectKey, FieldId, FieldValue>;

    /// [`model::FieldValue`] as format 1 wrote it: the same variants in the
    /// same order.
    #[derive(Deserialize)]
    pub(super) enum FieldValue {
        Bind(Binds),
        DefaultBackend(Name),
        Mode(Mode),
        Keepalive(Keepalive),
        Rules(Rules),
        Natives(Natives),
        BackendType(BackendType),
        Service(ServiceName),
        Version(Version),
        Balance(Balance),
        HostHeader(Host),
        Health(Health),
        Weight(Weight),
        State(MemberState),
        Meta(Meta),
        /// Renewed at (wall-clock ms), lease length (ms).
        Lease(u64, u32),
    }

    impl FieldValue {
        /// The value in the current model. A lease gets no owner: the
        /// other peers judge it as they judge an owner they do not know,
        /// by its replicated renewal ([`model::Owners::live_until_ms`]), and
        /// the peer that next takes its heartbeats owns it from then on.
        pub(super) fn into_current(self) -> Result<model::FieldValue, InvalidValue> {
            use model::FieldValue as Now;
            Ok(match self {
                FieldValue::Bind(v) => Now::Bind(v),
                FieldValue::DefaultBackend(v) => Now::DefaultBackend(v),
                FieldValue::Mode(v) => Now::Mode(v),
                FieldValue::Keepalive(v) => Now::Keepalive(v),
                FieldValue::Rules(v) => Now::Rules(v),
                FieldValue::Natives(v) => Now::Natives(v),
                FieldValue::BackendType(v) => Now::BackendType(v),
                FieldValue::Service(v) => Now::Service(v),
                FieldValue::Version(v) => Now::Version(v),
                FieldValue::Balance(v) => Now::Balance(v),
                FieldValue::HostHeader(v) => Now::HostHeader(v),
                FieldValue::Health(v) => Now::Health(v),
                FieldValue::Weight(v) => Now::Weight(v),
                FieldValue::State(v) => Now::State(v),
                FieldValue::Meta(v) => Now::Meta(v),
                FieldValue::Lease(renewed_at_ms, ttl_ms) => {
                    Now::Lease(model::Lease::new(renewed_at_ms, ttl_ms)?)
                }
            })
        }
    }
}

/// The metadata table in a write transaction.
struct Meta<'t> {
    table: redb::Table<'t, &'static str, &'static [u8]>,
    path: &'t Path,
}

impl<'t> Meta<'t> {
    fn open(txn: &'t WriteTransaction, path: &'t Path) -> Result<Self, StoreError> {
        Ok(Meta {
            table: txn.open_table(META).at(path)?,
            path,
        })
    }

    /// Reads and decodes one value; a missing one is an error.
    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, StoreError> {
        let record = format!("metadata {key}");
        let missing = || corrupt(self.path, &record, "missing (not an aqueduct store?)");
        let bytes = self.table.get(key).at(self.path)?.ok_or_else(missing)?;
        decode(bytes.value(), META_BYTES_MAX, self.path, &record)
    }

    fn put<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(value).map_err(StoreError::Encode)?;
        self.table.insert(key, bytes.as_slice()).at(self.path)?;
        Ok(())
    }
}

/// Reads the snapshot and the log, checking their order; returns the
/// deltas and what is on disk.
fn read_state(
    txn: &WriteTransaction,
    path: &Path,
) -> Result<(Vec<ConfigDelta>, Durability), StoreError> {
    let mut deltas = Vec::new();
    let mut on_disk = Durability::default();
    let snapshots = txn.open_table(SNAPSHOT).at(path)?;
    if let Some((seq, bytes)) = snapshots.first().at(path)? {
        let (seq, bytes) = (seq.value(), bytes.value());
        let record = format!("snapshot {seq}");
        if snapshots.len().at(path)? > 1 {
            return Err(corrupt(path, &record, "one of several snapshots"));
        }
        deltas.push(decode(bytes, SNAPSHOT_BYTES_MAX, path, &record)?);
        on_disk.snapshot_bytes = bytes.len() as u64;
        on_disk.durable_seq = seq;
    }
    for row in txn.open_table(LOG).at(path)?.iter().at(path)? {
        let (seq, bytes) = row.at(path)?;
        let (seq, bytes) = (seq.value(), bytes.value());
        let record = format!("log entry {seq}");
        if seq <= on_disk.durable_seq {
            return Err(corrupt(path, &record, "not later than the snapshot"));
        }
        deltas.push(decode(bytes, DELTA_BYTES_MAX, path, &record)?);
        on_disk.log_entries += 1;
        on_disk.log_bytes += bytes.len() as u64;
        on_disk.durable_seq = seq;
    }
    Ok((deltas, on_disk))
}

/// Every stored revocation (refused beyond [`REVOCATIONS_MAX`]: no release
/// stores more).
fn read_revocations(txn: &WriteTransaction, path: &Path) -> Result<Vec<Revocation>, StoreError> {
    let table = txn.open_table(REVOCATIONS).at(path)?;
    if table.len().at(path)? > REVOCATIONS_MAX as u64 {
        return Err(corrupt(path, "revocations", "more than any release stores"));
    }
    let mut revocations = Vec::new();
    for row in table.iter().at(path)? {
        let (name, bytes) = row.at(path)?;
        let record = format!("revocation of {:?}", name.value());
        revocations.push(decode(bytes.value(), REVOCATION_BYTES_MAX, path, &record)?);
    }
    Ok(revocations)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(StoreError::Encode)
}

/// Decodes one stored value, all of it, within its size limit.
fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
    path: &Path,
    record: &str,
) -> Result<T, StoreError> {
    if bytes.len() > limit {
        return Err(corrupt(
            path,
            record,
            format!("{} bytes, over the limit of {limit}", bytes.len()),
        ));
    }
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(corrupt(
            path,
            record,
            format!("{} trailing bytes", rest.len()),
        )),
        Err(error) => Err(corrupt(path, record, error.to_string())),
    }
}

/// An entry on its way to the writer thread, already encoded.
#[derive(Debug)]
struct Record {
    seq: u64,
    kind: RecordKind,
    bytes: Vec<u8>,
}

/// What a [`Record`] holds, and where it goes.
#[derive(Debug, PartialEq, Eq)]
enum RecordKind {
    Delta,
    Snapshot,
    /// A revocation of this name.
    Revocation(String),
}

/// Starts the writer thread of `store`; see [`Store::writer`].
pub fn spawn_writer(
    store: Store,
    queue_bound: usize,
) -> Result<(Writer, watch::Receiver<Durability>), StoreError> {
    let (writer, thread) = store.writer(queue_bound);
    Ok((writer, thread.spawn()?))
}

/// Queues entries for the writer thread and numbers them. There is one
/// writer per store, so numbers follow the queue order.
#[derive(Debug)]
pub struct Writer {
    queue: mpsc::Sender<Record>,
    /// The next sequence number: after everything on disk and submitted.
    next_seq: u64,
    durability: watch::Receiver<Durability>,
    path: PathBuf,
}

impl Writer {
    /// Encodes and queues `entry`, waiting while the queue is full, and
    /// returns its sequence number. It is durable once
    /// [`Durability::durable_seq`] reaches that number. Cancel-safe: an
    /// entry is numbered only once it has a place in the queue.
    pub async fn submit(&mut self, entry: Entry) -> Result<u64, StoreError> {
        let (kind, bytes, what, limit) = match &entry {
            Entry::Delta(delta) => (RecordKind::Delta, encode(delta)?, "delta", DELTA_BYTES_MAX),
            Entry::Snapshot(state) => (
                RecordKind::Snapshot,
                encode(state)?,
                "snapshot",
                SNAPSHOT_BYTES_MAX,
            ),
            Entry::Revocation(revocation) => (
                RecordKind::Revocation(revocation.name.clone()),
                encode(revocation)?,
                "revocation",
                REVOCATION_BYTES_MAX,
            ),
        };
        if bytes.len() > limit {
            return Err(StoreError::TooLarge(what, bytes.len(), limit));
        }
        let place = self.queue.reserve().await.map_err(|_| self.stopped())?;
        let seq = self.next_seq;
        self.next_seq += 1;
        place.send(Record { seq, kind, bytes });
        Ok(seq)
    }

    /// Closes the queue and waits until the thread has committed everything
    /// queued, closed the database and exited (graceful shutdown). Returns
    /// the final durability, or an error if anything submitted is not
    /// durable.
    pub async fn close(self) -> Result<Durability, StoreError> {
        let Writer {
            queue,
            next_seq,
            mut durability,
            path,
        } = self;
        drop(queue);
        // The thread drops its sender last, after the database.
        while durability.changed().await.is_ok() {}
        let last = durability.borrow().clone();
        if last.failed.is_none() && last.durable_seq + 1 >= next_seq {
            return Ok(last);
        }
        let reason = last
            .failed
            .unwrap_or_else(|| "the store thread ended early".into());
        Err(StoreError::Stopped { path, reason })
    }

    fn stopped(&self) -> StoreError {
        let failed = self.durability.borrow().failed.clone();
        StoreError::Stopped {
            path: self.path.clone(),
            reason: failed.unwrap_or_else(|| "the store thread has exited".into()),
        }
    }
}

/// The writer thread of a store, not yet started (see [`Store::writer`]).
pub struct WriterThread {
    store: Store,
    entries: mpsc::Receiver<Record>,
    published: watch::Sender<Durability>,
}

impl WriterThread {
    /// Starts the `aqueduct-store` thread; returns where it publishes.
    pub fn spawn(self) -> Result<watch::Receiver<Durability>, StoreError> {
        let durability = self.published.subscribe();
        thread::Builder::new()
            .name("aqueduct-store".into())
            .spawn(move || self.run())
            .map_err(StoreError::Thread)?;
        Ok(durability)
    }

    /// Commits batches until the queue is closed and drained, or a commit
    /// fails.
    fn run(self) {
        let WriterThread {
            store,
            mut entries,
            published,
        } = self;
        let mut durability = store.durability.clone();
        while let Some(first) = entries.blocking_recv() {
            let mut bytes = first.bytes.len();
            let mut batch = vec![first];
            while batch.len() < BATCH_ENTRIES_MAX && bytes < BATCH_BYTES_MAX {
                let Ok(next) = entries.try_recv() else { break };
                bytes += next.bytes.len();
                batch.push(next);
            }
            match store.commit(&batch, &durability) {
                Ok(after) => durability = after,
                Err(error) => {
                    durability.failed = Some(error.to_string());
                    published.send_replace(durability);
                    break;
                }
            }
            published.send_replace(durability.clone());
        }
        // Close the database before the sender goes: `Writer::close`
        // returns when it does, and the file may be reopened at once.
        drop(entries);
        drop(store);
        drop(published);
    }
}
