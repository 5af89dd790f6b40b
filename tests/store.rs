//! The durable store (`aqueduct::store`): identity and restart generation
//! per data directory, deltas and snapshots through the writer thread, group
//! commit, and refusing — never resetting — a store it cannot read.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aqueduct::crdt::model::{Binds, Frontend, Keepalive, Mode, Name, Natives, Rules};
use aqueduct::crdt::{Command, ConfigDelta, Replica};
use aqueduct::gossip::Revocation;
use aqueduct::store::{
    Durability, Entry, LOCK_WAIT, Recovered, STORE_FILE, Store, StoreError, Writer, spawn_writer,
};
use tokio::sync::watch;

/// A directory under the system's temp dir, unique to one test of this
/// process, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("aqueduct-store-{}-{test}", std::process::id()));
        // A leftover of an earlier run with a reused pid is not this test's.
        let _ = fs::remove_dir_all(&dir);
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn store_file(&self) -> PathBuf {
        self.0.join(STORE_FILE)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &TempDir) -> (Store, Recovered) {
    Store::open(dir.path()).expect("the store opens")
}

fn open_error(dir: &TempDir) -> StoreError {
    match Store::open(dir.path()) {
        Ok(_) => panic!("the store opened, but should have been refused"),
        Err(error) => error,
    }
}

/// A frontend put: a real command producing a real delta.
fn put_frontend(n: u16) -> Command {
    let name = |text: String| Name::new(&text).expect("valid name");
    Command::PutFrontend {
        name: name(format!("f{n}")),
        frontend: Frontend {
            bind: Binds::parse(&format!("*:{}", 8000 + n)).expect("valid bind"),
            backend: name(format!("b{n}")),
            mode: Mode::Http,
            keepalive: Keepalive::Default,
            rules: Rules::default(),
            natives: Natives::default(),
        },
    }
}

/// Runs `commands` on `replica` and returns their deltas, in order.
fn execute(replica: &mut Replica, commands: impl IntoIterator<Item = Command>) -> Vec<ConfigDelta> {
    (commands.into_iter().enumerate())
        .map(|(i, command)| {
            let now_ms = 1_700_000_000_000 + i as u64;
            replica
                .execute(&command, now_ms)
                .expect("the command applies")
        })
        .collect()
}

/// Submits every entry and returns the last sequence number.
async fn submit_all(writer: &mut Writer, entries: impl IntoIterator<Item = Entry>) -> u64 {
    let mut last = 0;
    for entry in entries {
        last = writer.submit(entry).await.expect("the entry is queued");
    }
    last
}

/// Waits (with a deadline) until `seq` is durable.
async fn durable(durability: &mut watch::Receiver<Durability>, seq: u64) -> Durability {
    let reached = durability.wait_for(|d| d.durable_seq >= seq || d.failed.is_some());
    let state = tokio::time::timeout(Duration::from_secs(30), reached)
        .await
        .expect("durable before the deadline")
        .expect("the writer thread publishes")
        .clone();
    assert_eq!(state.failed, None, "the writer failed");
    state
}

fn deltas(entries: &[ConfigDelta]) -> impl Iterator<Item = Entry> + '_ {
    entries.iter().cloned().map(Entry::Delta)
}

#[test]
fn a_fresh_data_dir_gets_a_replica_id_and_generation_one_and_a_reopen_counts_generation_two() {
    let dir = TempDir::new("fresh");
    let (store, first) = open(&dir);
    assert_ne!(first.replica_id.get(), 0);
    assert_eq!(first.generation, 1);
    assert!(first.deltas.is_empty());
    drop(store);

    let (_store, second) = open(&dir);
    assert_eq!(second.replica_id, first.replica_id);
    assert_eq!(second.generation, 2);
}

#[test]
fn two_fresh_data_dirs_get_different_replica_ids() {
    let (a, b) = (TempDir::new("ids-a"), TempDir::new("ids-b"));
    let (_sa, ra) = open(&a);
    let (_sb, rb) = open(&b);
    assert_ne!(ra.replica_id, rb.replica_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_written_through_the_writer_come_back_in_order_and_rebuild_the_replica() {
    let dir = TempDir::new("roundtrip");
    let (store, recovered) = open(&dir);
    let mut original = Replica::new(recovered.replica_id);
    let written = execute(&mut original, (0..20).map(put_frontend));
    let (mut writer, mut durability) = spawn_writer(store, 16).expect("the writer starts");
    let last = submit_all(&mut writer, deltas(&written)).await;
    assert_eq!(last, 20, "sequence numbers start at 1");
    assert_eq!(durable(&mut durability, last).await.log_entries, 20);
    writer.close().await.expect("everything is durable");

    let (_store, recovered) = open(&dir);
    assert_eq!(recovered.deltas, written);
    let (replica, generation) = recovered.into_replica().expect("the state restores");
    assert_eq!(generation, 2);
    assert_eq!(replica.digest(), original.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_replaces_the_log_before_it_and_recovers_the_same_replica() {
    let dir = TempDir::new("snapshot");
    let (store, recovered) = open(&dir);
    let mut original = Replica::new(recovered.replica_id);
    let before = execute(&mut original, (0..5).map(put_frontend));
    let (mut writer, mut durability) = spawn_writer(store, 16).expect("the writer starts");
    let seq = submit_all(&mut writer, deltas(&before)).await;
    assert_eq!(durable(&mut durability, seq).await.log_entries, 5);

    let state = original.full_state();
    let after = execute(&mut original, [put_frontend(7)]);
    let entries = [Entry::Snapshot(state.clone())]
        .into_iter()
        .chain(deltas(&after));
    let seq = submit_all(&mut writer, entries).await;
    let now = durable(&mut durability, seq).await;
    assert_eq!((now.log_entries, now.log_bytes > 0), (1, true));
    assert!(now.snapshot_bytes > 0);
    writer.close().await.expect("everything is durable");

    let (_store, recovered) = open(&dir);
    assert_eq!(recovered.deltas, [state, after[0].clone()]);
    let (replica, _) = recovered.into_replica().expect("the state restores");
    assert_eq!(replica.digest(), original.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_continue_across_a_reopen() {
    let dir = TempDir::new("seq");
    let (store, recovered) = open(&dir);
    let mut replica = Replica::new(recovered.replica_id);
    let written = execute(&mut replica, (0..4).map(put_frontend));
    let (mut writer, _) = spawn_writer(store, 16).expect("the writer starts");
    assert_eq!(submit_all(&mut writer, deltas(&written[..3])).await, 3);
    writer.close().await.expect("everything is durable");

    let (store, _) = open(&dir);
    let (mut writer, _) = spawn_writer(store, 16).expect("the writer starts");
    assert_eq!(submit_all(&mut writer, deltas(&written[3..])).await, 4);
    assert_eq!(writer.close().await.expect("durable").durable_seq, 4);
}

/// A revocation of `name` (the store keeps it as it is: no signature check).
fn revocation(name: &str, not_before_up_to: u64) -> Revocation {
    Revocation {
        name: name.to_owned(),
        not_before_up_to,
        revoked_at: not_before_up_to + 3600,
        signature: vec![0x30; 70],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_survive_a_reopen_next_to_a_snapshot_one_per_name_the_latest_kept() {
    let dir = TempDir::new("revocations");
    let (store, recovered) = open(&dir);
    let replica = Replica::new(recovered.replica_id);
    let (mut writer, _) = spawn_writer(store, 16).expect("the writer starts");
    let entries = [
        Entry::Revocation(revocation("mallory", 1_000)),
        Entry::Revocation(revocation("trudy", 1_000)),
        // A snapshot later in the same batch covers deltas, not revocations.
        Entry::Snapshot(replica.full_state()),
        Entry::Revocation(revocation("mallory", 2_000)),
    ];
    submit_all(&mut writer, entries).await;
    writer.close().await.expect("everything is durable");

    let (_store, recovered) = open(&dir);

    assert_eq!(
        recovered.revocations,
        [revocation("mallory", 2_000), revocation("trudy", 1_000)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_queued_before_the_thread_runs_share_one_commit() {
    let dir = TempDir::new("group");
    let (store, recovered) = open(&dir);
    let mut replica = Replica::new(recovered.replica_id);
    let written = execute(&mut replica, (0..100).map(put_frontend));
    let (mut writer, thread) = store.writer(128);
    assert_eq!(submit_all(&mut writer, deltas(&written)).await, 100);

    let mut durability = thread.spawn().expect("the writer starts");
    let now = durable(&mut durability, 100).await;
    assert_eq!((now.durable_seq, now.log_entries), (100, 100));
    assert_eq!(now.commits, 1, "100 queued entries are one transaction");
}

#[test]
fn a_garbage_file_is_an_error_naming_it_and_is_left_unchanged() {
    let dir = TempDir::new("garbage");
    fs::create_dir_all(dir.path()).expect("the dir is created");
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(dir.store_file(), &garbage).expect("the garbage is written");

    let error = open_error(&dir);
    let text = error.to_string();
    assert!(
        text.contains(&dir.store_file().display().to_string()),
        "{text}"
    );
    assert_eq!(
        fs::read(dir.store_file()).expect("the file is still there"),
        garbage
    );
}

#[test]
fn an_open_waits_for_a_lock_released_within_the_lock_wait() {
    // What a run killed with -9 leaves for a moment: its lock, held by a
    // child it had just forked, until that child execs.
    let dir = TempDir::new("lock-released");
    let (first, _) = open(&dir);
    let holder = std::thread::spawn(move || {
        std::thread::sleep(LOCK_WAIT / 10);
        drop(first);
    });
    let (_second, recovered) = open(&dir);
    assert_eq!(recovered.generation, 2);
    holder.join().expect("the holder");
}

#[test]
fn a_second_open_of_an_open_store_is_refused_as_locked() {
    let dir = TempDir::new("locked");
    let (_first, _) = open(&dir);
    let error = open_error(&dir);
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("is another aqueduct using this data dir?"),
        "{error}"
    );
}

/// Puts `value` under `key` in table `table` of a closed store, with redb
/// directly (as a damaged or foreign writer would).
fn overwrite<K: redb::Key + 'static>(
    dir: &TempDir,
    table: &str,
    key: K::SelfType<'_>,
    value: &[u8],
) {
    let db = redb::Database::open(dir.store_file()).expect("the store is a redb file");
    let txn = db.begin_write().expect("a transaction");
    {
        let definition = redb::TableDefinition::<K, &[u8]>::new(table);
        let mut rows = txn.open_table(definition).expect("the table opens");
        rows.insert(key, value).expect("the row is written");
    }
    txn.commit().expect("the transaction commits");
}

#[test]
fn an_undecodable_log_entry_is_an_error_naming_the_file_and_the_entry() {
    let dir = TempDir::new("undecodable");
    drop(open(&dir));
    overwrite::<u64>(&dir, "log", 17, &[0xff; 5]);

    let text = open_error(&dir).to_string();
    assert!(text.contains("log entry 17"), "{text}");
    assert!(
        text.contains(&dir.store_file().display().to_string()),
        "{text}"
    );
}

/// The `format` record of a closed store.
fn format_of(dir: &TempDir) -> u32 {
    let db = redb::Database::open(dir.store_file()).expect("the store is a redb file");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("a transaction");
    let meta = txn
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
        .expect("the meta table");
    let bytes = meta.get("format").expect("readable").expect("a format");
    postcard::from_bytes(bytes.value()).expect("a number")
}

/// A data directory holding `tests/fixtures/store-format-1/state.redb`: a
/// store written by aqueduct at 6ced055 (format 1, leases without an
/// owner), holding backends `app` (static) and `live` (dynamic), frontend
/// `web`, and a registration of myapp@1.0.0 at 127.0.0.1:9001 with a
/// one-hour lease and meta `{"secondsToExpire":3600,"zone":"a"}`.
fn format_1_store(test: &str) -> TempDir {
    let dir = TempDir::new(test);
    fs::create_dir_all(dir.path()).expect("the data dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-format-1");
    fs::copy(fixture.join(STORE_FILE), dir.store_file()).expect("the fixture copies");
    dir
}

#[test]
fn a_store_of_format_1_is_migrated_forward_on_open_and_its_lease_gets_no_owner() {
    let dir = format_1_store("migrate-1");
    assert_eq!(format_of(&dir), 1);

    let (store, recovered) = open(&dir);
    let (replica, generation) = recovered.into_replica().expect("it restores");
    let view = replica.view();
    assert_eq!(generation, 2, "the old release opened it once");
    let names = |keys: Vec<&Name>| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    assert_eq!(names(view.backends.keys().collect()), ["app", "live"]);
    assert_eq!(names(view.frontends.keys().collect()), ["web"]);
    let registrations: Vec<_> = view.registrations.values().collect();
    assert_eq!(registrations.len(), 1);
    let lease = registrations[0].lease;
    assert_eq!(lease.owner(), None);
    assert_eq!(lease.ttl_ms(), 3_600_000);
    assert!(registrations[0].meta.as_str().contains("\"zone\":\"a\""));

    drop(store);
    assert_eq!(format_of(&dir), 2, "migrated once, in place");
    let (_, recovered) = open(&dir);
    let (again, _) = recovered.into_replica().expect("it restores");
    assert_eq!(again.digest(), replica.digest());
}

#[test]
fn a_format_1_store_that_does_not_convert_is_refused_and_left_as_it_was() {
    let dir = format_1_store("migrate-1-bad");
    overwrite::<u64>(&dir, "log", 1_000_000, &[0xff; 5]);

    let text = open_error(&dir).to_string();
    assert!(text.contains("log entry 1000000 (format 1)"), "{text}");
    assert_eq!(format_of(&dir), 1, "nothing was migrated");
}

#[test]
fn a_store_of_a_newer_format_is_refused_naming_both_formats_and_what_to_do() {
    let dir = TempDir::new("format-newer");
    drop(open(&dir));
    overwrite::<&str>(
        &dir,
        "meta",
        "format",
        &postcard::to_stdvec(&3u32).expect("encodes"),
    );

    let error = open_error(&dir);
    assert!(
        matches!(error, StoreError::NewerFormat { found: 3, .. }),
        "{error:?}"
    );
    let text = error.to_string();
    for part in [
        "format 3",
        "newer aqueduct",
        "formats 1 to 2",
        "run the newer aqueduct",
    ] {
        assert!(text.contains(part), "{part:?} not in: {text}");
    }
    assert_eq!(format_of(&dir), 3, "left as it was");
}

#[test]
fn a_store_of_a_format_older_than_any_migration_is_refused() {
    let dir = TempDir::new("format-older");
    drop(open(&dir));
    overwrite::<&str>(
        &dir,
        "meta",
        "format",
        &postcard::to_stdvec(&0u32).expect("encodes"),
    );

    let error = open_error(&dir);
    assert!(
        matches!(error, StoreError::UnknownFormat { found: 0, .. }),
        "{error:?}"
    );
}

#[test]
fn a_snapshot_is_due_once_the_log_outgrows_both_the_snapshot_and_one_mib() {
    let with = |log_bytes, snapshot_bytes| Durability {
        log_bytes,
        snapshot_bytes,
        ..Durability::default()
    };
    assert!(!with(1 << 20, 0).snapshot_due());
    assert!(with((1 << 20) + 1, 0).snapshot_due());
    assert!(!with(4 << 20, 4 << 20).snapshot_due());
    assert!(with((4 << 20) + 1, 4 << 20).snapshot_due());
}
