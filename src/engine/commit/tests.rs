use tokio::sync::oneshot;

use super::*;
use crate::change::{Change, StateChange};
use crate::engine::Ack;
use crate::event::Event;
use crate::metrics::Counters;
use crate::store::Store;

fn event(state: &str, metric: f64) -> Arc<Event> {
    Arc::new(Event {
        host: Some("web1".into()),
        service: Some("cpu".into()),
        state: Some(state.into()),
        metric: Some(crate::event::Metric::Float(metric)),
        ..Default::default()
    })
}

/// A flush of index updates followed, in the same commit, by a change to one of its keys:
/// after a restart the index must hold the change, not the older update.
#[test]
fn a_change_after_a_flush_in_one_commit_wins_in_the_index() {
    let dir = std::env::temp_dir().join(format!(
        "statecast-commit-{}-{}",
        std::process::id(),
        now_micros()
    ));
    {
        let (store, _) = Store::open(&dir).unwrap();
        let changes_tx = crate::broadcast::Sender::new(16);
        let deliverer = Deliverer {
            changes_tx,
            metrics_tx: crate::broadcast::metrics_channel(),
            counters: Arc::new(Counters::default()),
        };
        let retention = Retention {
            max_changes: 1_000,
            max_age_micros: i64::MAX,
        };
        let mut committing = Committing::new(
            &store,
            retention,
            &deliverer,
            Arc::new(StorageHealth::default()),
        );
        let (_tx, rx) = mpsc::channel(1);
        let mut pending = vec![
            // A metric update of web1/cpu (state ok), flushed...
            Output::Flush {
                dirty: vec![event("ok", 0.1)],
                forgotten: Vec::new(),
                seq: 0,
            },
            // ...then web1/cpu turns critical.
            Output::Group {
                changes: vec![Change::state(
                    1,
                    StateChange {
                        previous_state: "ok".into(),
                        event: event("critical", 0.9),
                        previous: Some(event("ok", 0.1)),
                        ..StateChange::default()
                    },
                )],
                acks: Vec::new(),
                seq: 1,
            },
        ];
        committing.cycle(&mut pending, &rx);
    }
    let (_, recovered) = Store::open(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(recovered.seq, 1);
    assert_eq!(recovered.events.len(), 1);
    assert_eq!(recovered.events[0].state.as_deref(), Some("critical"));
    assert_eq!(
        recovered.events[0].metric,
        Some(crate::event::Metric::Float(0.9))
    );
}

fn group(seq: u64, state: &str) -> (Output, oneshot::Receiver<Ack>) {
    let (ack, answered) = oneshot::channel();
    let output = Output::Group {
        changes: vec![Change::state(
            seq,
            StateChange {
                previous_state: "ok".into(),
                event: event(state, seq as f64),
                previous: None,
                ..StateChange::default()
            },
        )],
        acks: vec![ack],
        seq,
    };
    (output, answered)
}

/// A failed log write: the group and the one behind it are answered with an error at once,
/// nothing is published while the write fails, and once a retry succeeds both are published
/// in order and stored.
#[test]
fn a_failed_log_write_is_held_and_retried_and_nothing_is_published_before() {
    let dir = std::env::temp_dir().join(format!(
        "statecast-commit-held-{}-{}",
        std::process::id(),
        now_micros()
    ));
    let (store, _) = Store::open(&dir).unwrap();
    let changes_tx = crate::broadcast::Sender::new(16);
    let mut published = changes_tx.subscribe();
    let deliverer = Deliverer {
        changes_tx,
        metrics_tx: crate::broadcast::metrics_channel(),
        counters: Arc::new(Counters::default()),
    };
    let retention = Retention {
        max_changes: 1_000,
        max_age_micros: i64::MAX,
    };
    let health = Arc::new(StorageHealth::default());
    let mut committing = Committing::new(&store, retention, &deliverer, Arc::clone(&health));
    let (_tx, rx) = mpsc::channel(1);
    store.fail_next_logs(2);

    let (first, mut first_ack) = group(1, "critical");
    committing.cycle(&mut vec![first], &rx);
    let refused = first_ack.try_recv().unwrap().unwrap_err();
    assert!(refused.to_string().contains("will retry"), "{refused}");
    assert!(health.failure().is_some(), "the engine is told");
    // A group the engine applied before it heard: held behind the first.
    let (second, mut second_ack) = group(2, "ok");
    committing.cycle(&mut vec![second], &rx);
    assert!(second_ack.try_recv().unwrap().is_err());
    committing.retry(&rx); // fails again
    assert!(health.failure().is_some());
    assert!(published.try_recv().is_err(), "nothing published yet");

    committing.retry(&rx);
    assert!(health.failure().is_none(), "recovered");
    let seqs: Vec<u64> = std::iter::from_fn(|| published.try_recv().ok())
        .map(|p| p.seq())
        .collect();
    assert_eq!(seqs, vec![1, 2], "published in order once durable");
    let stored: Vec<u64> = store
        .history(0, 10, |_| true)
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(stored, vec![1, 2]);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
