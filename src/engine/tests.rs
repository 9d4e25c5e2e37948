//! The engine's two-stage acknowledgements against the in-memory store
//! ([`commit::mem::MemStore`]): a batch is answered as far as it changed nothing as soon as it
//! is applied, and for its changes only once they are committed; no disk, no sleeps — each test
//! holds or fails the store's log writes and waits on what the engine exposes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot::error::TryRecvError;

use super::commit::mem::MemStore;
use super::*;
use crate::store::Replay;

/// How long a step the test waits for (the committer reaching the store, a retry) may take.
const TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> EngineConfig {
    EngineConfig {
        init_state: "ok".into(),
        default_ttl_secs: 3600.0,
        reap_interval: Duration::from_secs(3600),
        expired_keep: None,
        max_keys: 1000,
        retention: Retention {
            max_changes: 1000,
            max_age_micros: i64::MAX,
        },
        queue_capacity: 16,
        broadcast_capacity: 16,
        // Time enters only as the tests' own ticks: nothing expires behind their back.
        local_clock: false,
        series: None,
        metrics_interval: None,
        metrics_max_bytes: crate::broadcast::DEFAULT_METRICS_MAX_BYTES,
    }
}

fn event(service: &str, state: &str) -> Event {
    Event {
        host: Some("web1".into()),
        service: Some(service.into()),
        state: Some(state.into()),
        time_micros: now_micros(),
        ..Event::default()
    }
}

/// An engine committing to `store`, started empty.
fn engine_on(store: &Arc<MemStore>) -> EngineHandle {
    let recovered = Recovered {
        epoch: "mem".into(),
        seq: 0,
        events: Vec::new(),
        actions: Default::default(),
        replay: Replay::default(),
    };
    let durable: Arc<dyn commit::Durable> = Arc::clone(store) as Arc<dyn commit::Durable>;
    let (engine, _task) = spawn_on(
        config(),
        Arc::new(Counters::default()),
        Some((durable, recovered)),
        None,
    );
    engine
}

/// Polls `done` (cheap, in-memory state) until it holds, failing after [`TIMEOUT`].
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn applied(engine: &EngineHandle, events: Vec<Event>) -> Applied {
    engine
        .submit(events)
        .await
        .expect("queued")
        .await
        .expect("applied")
}

#[tokio::test]
async fn a_change_is_answered_when_applied_up_to_it_and_when_committed_for_it() {
    let store = Arc::new(MemStore::default());
    let engine = engine_on(&store);
    let mut published = engine.subscribe().await.expect("subscribed").changes;
    store.hold_logs();

    // web1/cpu ok is no change (the initial state is ok); web1/disk critical is.
    let answer = applied(&engine, vec![event("cpu", "ok"), event("disk", "critical")]).await;
    let Applied::Changed {
        first_change,
        mut durable,
    } = answer
    else {
        panic!("a batch with a change: {answer:?}");
    };
    assert_eq!(
        first_change, 1,
        "the event before the change is answered now"
    );
    wait_until("the committer writes the log", || store.log_waiting()).await;
    assert_eq!(
        durable.try_recv(),
        Err(TryRecvError::Empty),
        "not committed yet"
    );
    assert!(published.try_recv().is_err(), "published before committed");

    store.release_logs();
    assert_eq!(durable.await, Ok(Ok(())));
    assert_eq!(store.logged(), vec![1], "one log write of one change");
    assert_eq!(published.recv().await.expect("published").seq(), 1);
}

#[tokio::test]
async fn a_batch_that_changes_nothing_is_answered_while_the_log_write_waits() {
    let store = Arc::new(MemStore::default());
    let engine = engine_on(&store);
    store.hold_logs();
    let Applied::Changed { mut durable, .. } =
        applied(&engine, vec![event("disk", "critical")]).await
    else {
        panic!("a change");
    };
    wait_until("the committer writes the log", || store.log_waiting()).await;

    // The engine goes on applying while the committer waits for the disk.
    let answer = applied(&engine, vec![event("cpu", "ok")]).await;
    assert!(matches!(answer, Applied::Done(Ok(()))), "{answer:?}");
    assert_eq!(durable.try_recv(), Err(TryRecvError::Empty));

    store.release_logs();
    assert_eq!(durable.await, Ok(Ok(())));
}

#[tokio::test]
async fn a_snapshot_is_released_behind_the_changes_it_contains() {
    let store = Arc::new(MemStore::default());
    let engine = engine_on(&store);
    store.hold_logs();
    let Applied::Changed { durable, .. } = applied(&engine, vec![event("disk", "critical")]).await
    else {
        panic!("a change");
    };
    let subscribing = tokio::spawn({
        let engine = engine.clone();
        async move { engine.subscribe().await }
    });
    wait_until("the committer writes the log", || store.log_waiting()).await;
    assert!(
        !subscribing.is_finished(),
        "a snapshot holding an uncommitted change"
    );

    store.release_logs();
    assert_eq!(durable.await, Ok(Ok(())));
    let mut subscription = subscribing.await.expect("task").expect("subscribed");
    assert_eq!(subscription.snapshot.seq, 1);
    assert_eq!(store.written_seq(), Some(1), "history holds it first");
    // The live stream starts exactly after the snapshot.
    let Applied::Changed { durable, .. } = applied(&engine, vec![event("disk", "ok")]).await else {
        panic!("a change");
    };
    assert_eq!(durable.await, Ok(Ok(())));
    assert_eq!(subscription.changes.recv().await.expect("live").seq(), 2);
}

#[tokio::test]
async fn a_failed_log_write_answers_with_an_error_and_batches_are_refused_until_it_is_back() {
    let store = Arc::new(MemStore::default());
    let engine = engine_on(&store);
    let mut published = engine.subscribe().await.expect("subscribed").changes;
    store.set_failing(true);

    let Applied::Changed { durable, .. } = applied(&engine, vec![event("disk", "critical")]).await
    else {
        panic!("a change");
    };
    let refused = durable.await.expect("answered");
    assert!(
        matches!(&refused, Err(EngineError::Storage(e)) if e.contains("will retry")),
        "{refused:?}"
    );
    let reason = engine
        .unavailable()
        .expect("unavailable while the log fails");
    assert!(reason.starts_with("storage unavailable"), "{reason}");
    // Refused before it is applied: nothing runs ahead of what can be stored.
    let answer = applied(&engine, vec![event("cpu", "critical")]).await;
    assert!(
        matches!(&answer, Applied::Done(Err(EngineError::Storage(_)))),
        "{answer:?}"
    );
    assert!(published.try_recv().is_err(), "published without a commit");

    store.set_failing(false);
    wait_until("the committer's retry succeeds", || {
        engine.unavailable().is_none()
    })
    .await;
    // The held change is committed, then published; the refused batch never was applied.
    assert_eq!(published.recv().await.expect("published").seq(), 1);
    let Applied::Changed { durable, .. } = applied(&engine, vec![event("cpu", "critical")]).await
    else {
        panic!("cpu changes now");
    };
    assert_eq!(durable.await, Ok(Ok(())));
    assert_eq!(published.recv().await.expect("published").seq(), 2);
}
