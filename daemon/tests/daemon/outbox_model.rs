//! The outbox against a model of what it must hold, and its retention, quota and identity rules.

use super::*;
use cyclerd::outbox::{OutboxOptions, StoredEntry};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

/// What the model remembers of one entry: a tag that tells it apart, and its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    tag: u64,
    samples: u64,
    event: bool,
}

impl Item {
    fn body(&self) -> Body {
        if self.event {
            Body::Event(Event {
                test_id: "m".into(),
                kind: "info".into(),
                message: self.tag.to_string(),
                ..Default::default()
            })
        } else {
            samples("m", self.tag, self.samples as usize)
        }
    }

    fn of(stored: &StoredEntry) -> Item {
        match &stored.entry.body {
            Some(Body::Event(e)) => Item {
                tag: e
                    .message
                    .parse()
                    .expect("the model's events carry their tag"),
                samples: stored.samples,
                event: true,
            },
            Some(Body::Samples(b)) => Item {
                tag: b.first_seq,
                samples: stored.samples,
                event: false,
            },
            other => panic!("the model appends samples and events only: {other:?}"),
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    /// Highest id ever handed out: the next entry gets the one after it.
    last_id: u64,
    next_tag: u64,
    pending: BTreeMap<u64, Item>,
    dead: BTreeMap<u64, Item>,
    acked_up_to: u64,
    acked_entries: u64,
    samples_acked: u64,
}

impl Model {
    fn append(&mut self, samples: u64, event: bool) -> Item {
        self.next_tag += 1;
        self.last_id += 1;
        let item = Item {
            tag: self.next_tag,
            samples,
            event,
        };
        self.pending.insert(self.last_id, item);
        item
    }

    fn ack(&mut self, up_to: u64) {
        let rest = self.pending.split_off(&(up_to + 1));
        for item in std::mem::replace(&mut self.pending, rest).into_values() {
            self.acked_entries += 1;
            self.samples_acked += item.samples;
        }
        self.acked_up_to = self.acked_up_to.max(up_to);
    }

    fn requeue(&mut self) -> u64 {
        let dead = std::mem::take(&mut self.dead);
        for item in dead.values() {
            self.last_id += 1;
            self.pending.insert(self.last_id, *item);
        }
        dead.len() as u64
    }
}

#[derive(Debug, Clone)]
enum Op {
    Samples(u64),
    Event,
    /// Up to one of the ids handed out so far (acked, parked or pending).
    Ack(prop::sample::Index),
    /// One of the pending entries.
    Park(prop::sample::Index),
    Flush,
    CrashAndReopen,
    Requeue,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u64..40).prop_map(Op::Samples),
        2 => Just(Op::Event),
        3 => any::<prop::sample::Index>().prop_map(Op::Ack),
        2 => any::<prop::sample::Index>().prop_map(Op::Park),
        1 => Just(Op::Flush),
        2 => Just(Op::CrashAndReopen),
        1 => Just(Op::Requeue),
    ]
}

/// Flushes, then checks everything the outbox shows against the model.
async fn check(outbox: &Outbox, model: &Model, keep: bool) -> Result<(), TestCaseError> {
    outbox.flush().await.unwrap();
    let page = outbox.reader().unwrap().page_after(0, 100_000).unwrap();
    let mut read = Vec::with_capacity(page.len());
    for item in &page {
        let PageItem::Entry(stored) = item else {
            return Err(TestCaseError::fail(format!("a corrupt row: {item:?}")));
        };
        read.push((stored.entry.id, Item::of(stored)));
    }
    prop_assert!(
        read.windows(2).all(|w| w[0].0 < w[1].0),
        "ids strictly increase"
    );
    let want: Vec<(u64, Item)> = model.pending.iter().map(|(&id, &i)| (id, i)).collect();
    prop_assert_eq!(
        &read,
        &want,
        "the reader returns exactly the pending entries"
    );

    let stats = outbox.stats();
    prop_assert_eq!(stats.backlog(), model.pending.len() as u64);
    prop_assert_eq!(
        stats.samples_acked.load(Ordering::Acquire),
        model.samples_acked
    );
    prop_assert_eq!(stats.acked.load(Ordering::Acquire), model.acked_up_to);
    prop_assert_eq!(
        stats.dead_letters.load(Ordering::Acquire),
        model.dead.len() as u64
    );
    if let Some(&newest) = model.pending.keys().next_back() {
        prop_assert!(*outbox.committed().borrow() >= newest);
    }

    let summary = outbox.reader().unwrap().summary().unwrap();
    prop_assert_eq!(summary.pending_entries, model.pending.len() as u64);
    prop_assert_eq!(
        summary.pending_samples,
        model.pending.values().map(|i| i.samples).sum::<u64>()
    );
    prop_assert_eq!(
        summary.pending_bytes,
        stats.pending_bytes.load(Ordering::Acquire)
    );
    prop_assert_eq!(summary.dead_letters, model.dead.len() as u64);
    prop_assert_eq!(
        summary.kept_acked,
        if keep { model.acked_entries } else { 0 }
    );

    let conn = rusqlite::Connection::open(&outbox.options().path).unwrap();
    let dead: Vec<u64> = conn
        .prepare("SELECT id FROM dead_letters ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0).map(|v| v as u64))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    prop_assert_eq!(dead, model.dead.keys().copied().collect::<Vec<_>>());
    Ok(())
}

async fn run_model(
    ops: Vec<Op>,
    keep: bool,
    configured_id: bool,
    path: &Path,
) -> Result<(), TestCaseError> {
    let options = OutboxOptions {
        keep_acked: if keep {
            Duration::from_secs(3600)
        } else {
            Duration::ZERO
        },
        daemon_id: configured_id.then(|| "lab-pc-model".to_string()),
        ..OutboxOptions::new(path)
    };
    let mut outbox = Outbox::open_with(options.clone()).unwrap();
    let identity = outbox.identity();
    if configured_id {
        prop_assert_eq!(identity.daemon_id.as_str(), "lab-pc-model");
    }
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Samples(n) => outbox.append(model.append(n, false).body()).unwrap(),
            Op::Event => outbox.append(model.append(0, true).body()).unwrap(),
            Op::Ack(index) => {
                if model.last_id > 0 {
                    let up_to = index.index(model.last_id as usize) as u64 + 1;
                    model.ack(up_to);
                    outbox.ack(up_to).unwrap();
                }
            }
            Op::Park(index) => {
                if !model.pending.is_empty() {
                    let nth = index.index(model.pending.len());
                    let id = *model.pending.keys().nth(nth).unwrap();
                    let item = model.pending.remove(&id).unwrap();
                    model.dead.insert(id, item);
                    outbox.park(id, "rejected by the model".into()).unwrap();
                }
            }
            Op::Flush => check(&outbox, &model, keep).await?,
            Op::CrashAndReopen => {
                // The writer thread ends when the last handle goes; flushing first makes what
                // it committed before going deterministic.
                outbox.flush().await.unwrap();
                drop(outbox);
                outbox = Outbox::open_with(options.clone()).unwrap();
                prop_assert_eq!(outbox.identity(), identity.clone(), "identity survives");
                prop_assert!(outbox.startup_alarms().is_empty());
                check(&outbox, &model, keep).await?;
            }
            Op::Requeue => {
                let want = model.requeue();
                prop_assert_eq!(outbox.requeue_dead_letters().await.unwrap(), want);
            }
        }
    }
    check(&outbox, &model, keep).await?;
    // Whatever happened, the next id is above every id ever handed out.
    let next = model.append(1, false);
    outbox.append(next.body()).unwrap();
    check(&outbox, &model, keep).await?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any sequence of appends, acks, parks, requeues and crashes leaves the outbox holding
    /// exactly the entries the hub has not acknowledged, in id order, with ids never reused, and
    /// counters that agree with its tables.
    #[test]
    fn the_outbox_behaves_like_its_model_through_acks_parks_requeues_and_crashes(
        ops in proptest::collection::vec(op(), 1..30),
        keep in any::<bool>(),
        configured_id in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.sqlite");
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(run_model(ops, keep, configured_id, &path))?;
    }
}

/// The database file's own size (the status's `file_bytes` adds its write-ahead log, which a
/// checkpoint empties on its own schedule and `journal_size_limit` bounds).
fn file_bytes(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test]
async fn acknowledged_entries_are_kept_for_keep_acked_then_deleted_and_the_file_shrinks() {
    // Kept: acknowledged entries stay in the table but are no longer offered to the uploader.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept.sqlite");
    let keep = OutboxOptions {
        keep_acked: Duration::from_secs(3600),
        ..OutboxOptions::new(&path)
    };
    let outbox = Outbox::open_with(keep.clone()).unwrap();
    outbox.append(registered("t")).unwrap();
    for k in 0..5 {
        outbox.append(samples("t", k * 10, 10)).unwrap();
    }
    outbox.flush().await.unwrap();
    outbox.ack(3).unwrap();
    outbox.flush().await.unwrap();
    let summary = outbox.reader().unwrap().summary().unwrap();
    assert_eq!(summary.kept_acked, 3);
    assert_eq!(summary.pending_entries, 3);
    assert_eq!(outbox.stats().backlog(), 3);
    let ids: Vec<u64> = outbox
        .reader()
        .unwrap()
        .page_after(0, 100)
        .unwrap()
        .iter()
        .map(|item| match item {
            PageItem::Entry(stored) => stored.entry.id,
            PageItem::Corrupt { id, .. } => panic!("entry {id} is corrupt"),
        })
        .collect();
    assert_eq!(ids, [4, 5, 6], "acknowledged entries are not offered again");
    outbox.flush().await.unwrap();
    drop(outbox);

    // Then deleted: once they are older than keep_acked, the next commit removes them.
    let outbox = Outbox::open_with(OutboxOptions {
        keep_acked: Duration::from_nanos(1),
        ..keep
    })
    .unwrap();
    outbox.append(samples("t", 50, 10)).unwrap();
    outbox.flush().await.unwrap();
    let summary = outbox.reader().unwrap().summary().unwrap();
    assert_eq!(summary.kept_acked, 0);
    assert_eq!(summary.pending_entries, 4);
    drop(outbox);

    // The file shrinks: deleting acknowledged entries gives the pages back.
    let path = dir.path().join("big.sqlite");
    let outbox = Outbox::open(&path).unwrap();
    outbox.append(registered("t")).unwrap();
    let batches = 250u64;
    for k in 0..batches {
        outbox.append(noisy_samples("t", k * 1000, 1000)).unwrap();
    }
    outbox.flush().await.unwrap();
    let full = file_bytes(&path);
    let auto_vacuum: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        auto_vacuum, 2,
        "the store is made with incremental auto-vacuum"
    );
    assert!(full > 8 << 20, "megabytes were written: {full} bytes");
    outbox.ack(batches + 1).unwrap();
    outbox.flush().await.unwrap();
    outbox.append(registered("u")).unwrap();
    outbox.flush().await.unwrap();
    assert_eq!(outbox.stats().backlog(), 1);
    let drained = file_bytes(&path);
    assert!(
        drained < full / 4,
        "the file shrinks as the backlog drains: {full} -> {drained} bytes"
    );
}

/// The uploader of `outbox` streaming to the hub at `addr`, reporting to `status`; stops when the
/// sender is told `true`.
fn spawn_uploader(
    outbox: &Outbox,
    addr: std::net::SocketAddr,
    status: Arc<UploaderStatus>,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(uploader::run(
        UploaderConfig {
            hub_addresses: vec![format!("http://{addr}")],
            hub_ca_pem: None,
            hub_token: None,
            daemon_name: "lab-pc-1".into(),
            hub_lab: None,
            window: 4,
        },
        outbox.clone(),
        status,
        stop_rx,
    ));
    (stop, task)
}

/// Opens the outbox, streams it to the hub at `addr` until caught up, and stops the uploader.
async fn upload_all(outbox: &Outbox, addr: std::net::SocketAddr) {
    let (stop, task) = spawn_uploader(outbox, addr, Arc::default());
    outbox.flush().await.unwrap();
    assert!(outbox.caught_up(deadline()).await, "the backlog drains");
    let _ = stop.send(true);
    task.await.unwrap();
}

/// Runs the uploader of `outbox` against the hub at `addr` until its session fails; the error.
async fn upload_refusal(outbox: &Outbox, addr: std::net::SocketAddr) -> String {
    let status = Arc::new(UploaderStatus::default());
    let (stop, task) = spawn_uploader(outbox, addr, Arc::clone(&status));
    let error = tokio::time::timeout(WAIT, async {
        let mut ticks = tokio::time::interval(std::time::Duration::from_millis(10));
        loop {
            ticks.tick().await;
            let error = status.last_error.lock().unwrap().clone();
            if !error.is_empty() {
                return error;
            }
        }
    })
    .await
    .expect("the upload session fails");
    let _ = stop.send(true);
    task.await.unwrap();
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_store_with_the_same_daemon_id_is_refused_until_a_hub_admin_rebinds_it_and_then_the_hub_keeps_both_histories()
 {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.sqlite");
    let store = cyclerhub::HubStore::open(&db).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_hub, stopped) = tokio::sync::oneshot::channel::<()>();
    let hub = tokio::spawn(cyclerhub::server::run(listener, store, async {
        let _ = stopped.await;
    }));

    let path = dir.path().join("outbox.sqlite");
    let options = OutboxOptions {
        daemon_id: Some("lab-pc-1".into()),
        ..OutboxOptions::new(&path)
    };
    let a = Outbox::open_with(options.clone()).unwrap();
    a.append(registered("t1")).unwrap();
    for k in 0..5 {
        a.append(samples("t1", k * 100, 100)).unwrap();
    }
    upload_all(&a, addr).await;
    let first = a.identity();
    assert_eq!(first.daemon_id, "lab-pc-1");
    a.flush().await.unwrap();
    drop(a);

    // The store is lost (disk replaced, directory wiped) and made anew under the same name.
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("outbox.sqlite{suffix}"));
        if file.exists() {
            std::fs::remove_file(file).unwrap();
        }
    }
    let b = Outbox::open_with(options).unwrap();
    let second = b.identity();
    assert_eq!(second.daemon_id, "lab-pc-1");
    assert!(
        second.epoch > first.epoch,
        "a new history: {first:?} -> {second:?}"
    );
    b.append(registered("t2")).unwrap();
    for k in 0..3 {
        b.append(samples("t2", k * 70, 70)).unwrap();
    }
    b.flush().await.unwrap();
    let page = b.reader().unwrap().page_after(0, 10).unwrap();
    assert!(
        matches!(&page[0], PageItem::Entry(s) if s.entry.id == 1),
        "ids start again at 1"
    );
    // A new store made a new credential: the hub takes it for someone else using the id.
    let refusal = upload_refusal(&b, addr).await;
    assert!(refusal.contains("another credential"), "{refusal}");
    assert!(refusal.contains("cyclerhub rebind"), "{refusal}");
    assert_eq!(b.stats().acked.load(Ordering::Acquire), 0);
    // A hub admin who knows it is the same PC lets it bind its new credential.
    let admin = cyclerhub::HubStore::open(&db).unwrap();
    assert!(admin.forget_daemon_credential("lab-pc-1").unwrap());
    upload_all(&b, addr).await;

    let _ = stop_hub.send(());
    hub.await.unwrap().unwrap();
    let store = cyclerhub::HubStore::open(&db).unwrap();
    assert_eq!(
        store.sample_count("t2").unwrap(),
        210,
        "the new history is not taken for duplicates of the old one"
    );
    assert_eq!(
        store.sample_count("t1").unwrap(),
        500,
        "the old one is intact"
    );
    let t1 = store.samples("t1").unwrap();
    assert!(t1.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    assert_eq!(store.applied_up_to("lab-pc-1", first.epoch).unwrap(), 6);
    assert_eq!(store.applied_up_to("lab-pc-1", second.epoch).unwrap(), 4);
}

#[tokio::test]
async fn quota_closes_and_reopens_the_space_watch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.sqlite");
    let options = OutboxOptions {
        max_bytes: Some(20_000),
        ..OutboxOptions::new(&path)
    };
    let outbox = Outbox::open_with(options.clone()).unwrap();
    let mut space = outbox.space();
    assert!(*space.borrow_and_update(), "an empty store has room");

    outbox.append(registered("t")).unwrap();
    outbox.append(noisy_samples("t", 0, 100)).unwrap();
    outbox.flush().await.unwrap();
    assert!(
        *space.borrow_and_update(),
        "below the quota: {} bytes",
        outbox.stats().pending_bytes.load(Ordering::Acquire)
    );
    for k in 1..4 {
        outbox.append(noisy_samples("t", k * 100, 100)).unwrap();
    }
    outbox.flush().await.unwrap();
    tokio::time::timeout(WAIT, space.wait_for(|room| !*room))
        .await
        .expect("the quota closes the space watch")
        .unwrap();
    assert!(outbox.stats().pending_bytes.load(Ordering::Acquire) >= 20_000);

    // A restart over quota starts closed; nothing was dropped.
    drop(space);
    outbox.flush().await.unwrap();
    drop(outbox);
    let outbox = Outbox::open_with(options).unwrap();
    let mut space = outbox.space();
    assert!(
        !*space.borrow_and_update(),
        "still over quota after a restart"
    );
    assert_eq!(outbox.stats().backlog(), 5);

    outbox.ack(3).unwrap();
    tokio::time::timeout(WAIT, space.wait_for(|room| *room))
        .await
        .expect("acknowledgements reopen the space watch")
        .unwrap();
    outbox.flush().await.unwrap();
    assert_eq!(outbox.stats().backlog(), 2);
    assert!(*outbox.space().borrow());
}
