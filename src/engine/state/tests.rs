use super::*;

fn ev(host: &str, service: &str, state: Option<&str>) -> Event {
    Event {
        host: Some(host.into()),
        service: Some(service.into()),
        state: state.map(Into::into),
        ..Default::default()
    }
}

/// The indexed event of (`host`, `service`), copied out so nothing holds the engine's own.
fn indexed(engine: &Engine, host: &str, service: &str) -> Option<Event> {
    engine
        .snapshot()
        .events
        .iter()
        .find(|e| e.host.as_deref() == Some(host) && e.service.as_deref() == Some(service))
        .map(|e| (**e).clone())
}

fn apply(engine: &mut Engine, events: Vec<Event>) -> Vec<Change> {
    let mut changes = Vec::new();
    engine
        .apply(events, &mut changes, None)
        .expect("under the key limit");
    changes
}

fn summary(changes: &[Change]) -> Vec<(u64, String, String)> {
    changes
        .iter()
        .map(|c| {
            (
                c.seq,
                c.st().previous_state.clone(),
                c.st().event.state.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn first_ok_is_not_a_change_first_critical_is() {
    let mut e = Engine::new("ok", 60.0);
    assert!(apply(&mut e, vec![ev("a", "cpu", Some("ok"))]).is_empty());
    let c = apply(&mut e, vec![ev("b", "cpu", Some("critical"))]);
    assert_eq!(summary(&c), vec![(1, "ok".into(), "critical".into())]);
}

#[test]
fn ok_critical_critical_ok() {
    let mut e = Engine::new("ok", 60.0);
    let c = apply(
        &mut e,
        vec![
            ev("a", "cpu", Some("ok")),
            ev("a", "cpu", Some("critical")),
            ev("a", "cpu", Some("critical")),
            ev("a", "cpu", Some("ok")),
        ],
    );
    assert_eq!(
        summary(&c),
        vec![
            (1, "ok".into(), "critical".into()),
            (2, "critical".into(), "ok".into())
        ]
    );
    assert_eq!(e.seq(), 2);
}

#[test]
fn unsaved_keys_are_returned_once_with_their_latest_event() {
    let mut e = Engine::new("ok", 60.0);
    apply(&mut e, vec![ev("a", "cpu", Some("ok"))]);
    assert!(e.take_unsaved().is_empty(), "not tracked until asked");
    e.track_unsaved();
    let mut metric = ev("a", "cpu", None);
    metric.description = Some("latest".into());
    apply(
        &mut e,
        vec![
            ev("a", "cpu", Some("ok")),
            ev("b", "disk", Some("ok")),
            metric,
        ],
    );
    let mut saved: Vec<(String, Option<String>)> = e
        .take_unsaved()
        .iter()
        .map(|ev| (ev.host.clone().unwrap(), ev.description.clone()))
        .collect();
    saved.sort();
    assert_eq!(
        saved,
        vec![("a".into(), Some("latest".into())), ("b".into(), None)]
    );
    assert!(e.take_unsaved().is_empty(), "saved until updated again");
    apply(&mut e, vec![ev("b", "disk", Some("ok"))]);
    assert_eq!(e.take_unsaved().len(), 1);
}

#[test]
fn init_state_is_configurable() {
    let mut e = Engine::new("unknown", 60.0);
    let c = apply(&mut e, vec![ev("a", "cpu", Some("ok"))]);
    assert_eq!(summary(&c), vec![(1, "unknown".into(), "ok".into())]);
}

#[test]
fn same_state_still_updates_the_index() {
    let mut e = Engine::new("ok", 60.0);
    let mut first = ev("a", "cpu", Some("warning"));
    first.description = Some("old".into());
    let mut second = ev("a", "cpu", Some("warning"));
    second.description = Some("new".into());
    assert_eq!(apply(&mut e, vec![first, second]).len(), 1);
    assert_eq!(
        indexed(&e, "a", "cpu").unwrap().description.as_deref(),
        Some("new")
    );
}

#[test]
fn stateless_events_are_indexed_never_a_change_and_keep_the_state() {
    let mut e = Engine::new("ok", 60.0);
    assert!(apply(&mut e, vec![ev("a", "load", None)]).is_empty());
    assert_eq!(e.len(), 1);
    assert_eq!(
        e.snapshot().events[0].state,
        None,
        "indexed without a state"
    );

    apply(&mut e, vec![ev("a", "cpu", Some("critical"))]);
    let mut metric_only = ev("a", "cpu", None);
    metric_only.metric = Some(crate::event::Metric::Int(9));
    assert!(apply(&mut e, vec![metric_only]).is_empty());
    let indexed = indexed(&e, "a", "cpu").unwrap();
    assert_eq!(indexed.state.as_deref(), Some("critical"));
    assert_eq!(indexed.metric, Some(crate::event::Metric::Int(9)));
    // ...and the next critical is still not a change.
    assert!(apply(&mut e, vec![ev("a", "cpu", Some("critical"))]).is_empty());
}

#[test]
fn updates_in_place_or_not_index_the_same_and_never_touch_a_held_event() {
    use crate::event::Metric;
    let update = |state: Option<&str>, metric: i64, description: &str| {
        let mut event = ev("a", "cpu", state);
        event.metric = Some(Metric::Int(metric));
        event.description = Some(description.into());
        event.tags = vec![format!("t{metric}")];
        event.attributes = vec![("k".into(), format!("v{metric}"))];
        event.time_micros = metric;
        event
    };
    // Each step runs on two engines: one where nothing else holds the indexed event (updated
    // in place) and one where a snapshot holds it (replaced). Both must index the same.
    let steps = [
        update(None, 1, "no state yet"),
        update(Some("ok"), 2, "first state, equal to init: not a change"),
        update(None, 3, "metric only: the state goes on"),
        update(Some("ok"), 4, "same state"),
    ];
    let mut alone = Engine::new("ok", 60.0);
    let mut held = Engine::new("ok", 60.0);
    for step in steps {
        let snapshot = held.snapshot();
        let before = snapshot.events.first().map(|e| (**e).clone());
        assert!(apply(&mut alone, vec![step.clone()]).is_empty());
        assert!(apply(&mut held, vec![step.clone()]).is_empty());
        let (a, h) = (
            indexed(&alone, "a", "cpu").unwrap(),
            indexed(&held, "a", "cpu").unwrap(),
        );
        assert_eq!(a, h);
        assert_eq!(a.metric, step.metric);
        assert_eq!(a.description, step.description);
        assert_eq!((&a.tags, &a.attributes), (&step.tags, &step.attributes));
        assert_eq!(a.time_micros, step.time_micros);
        assert_eq!(a.host.as_deref(), Some("a"));
        assert_eq!(a.service.as_deref(), Some("cpu"));
        // The snapshot taken before the update still shows what it showed.
        assert_eq!(snapshot.events.first().map(|e| (**e).clone()), before);
    }
    assert_eq!(
        indexed(&alone, "a", "cpu").unwrap().state.as_deref(),
        Some("ok")
    );
    // Then a change, on both: previous and new are told apart.
    let c = apply(&mut alone, vec![update(Some("critical"), 5, "down")]);
    assert_eq!(summary(&c), vec![(1, "ok".into(), "critical".into())]);
    assert_eq!(
        c[0].st().previous.as_ref().unwrap().metric,
        Some(Metric::Int(4))
    );
    assert_eq!(c[0].st().event.metric, Some(Metric::Int(5)));
}

#[test]
fn apply_tells_where_the_first_change_is() {
    let mut e = Engine::new("ok", 60.0);
    let mut changes = Vec::new();
    let batch = vec![
        ev("a", "x", Some("ok")),
        ev("b", "x", Some("ok")),
        ev("a", "x", Some("warning")),
        ev("b", "x", Some("critical")),
    ];
    assert_eq!(e.apply(batch, &mut changes, None), Ok(Some(2)));
    assert_eq!(changes.len(), 2);
    let quiet = vec![ev("a", "x", Some("warning"))];
    assert_eq!(e.apply(quiet, &mut changes, None), Ok(None));
}

#[test]
fn absent_host_or_service_is_its_own_key() {
    let mut e = Engine::new("ok", 60.0);
    let no_host = Event {
        service: Some("cpu".into()),
        state: Some("critical".into()),
        ..Default::default()
    };
    let no_service = Event {
        host: Some("cpu".into()),
        state: Some("critical".into()),
        ..Default::default()
    };
    assert_eq!(apply(&mut e, vec![no_host, no_service]).len(), 2);
    assert_eq!(e.len(), 2);
}

#[test]
fn snapshot_is_valid_at_the_last_seq() {
    let mut e = Engine::new("ok", 60.0);
    let batch = (0..200)
        .map(|i| ev(&format!("h{i}"), "cpu", Some("critical")))
        .collect();
    let c = apply(&mut e, batch);
    assert_eq!(c.len(), 200);
    assert!(c.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let snap = e.snapshot();
    assert_eq!(snap.seq, 200);
    assert_eq!(snap.events.len(), 200);
}

#[test]
fn same_input_same_output() {
    let input: Vec<Event> = (0..50)
        .map(|i| {
            let state = ["ok", "critical", "warning", ""][i % 4];
            ev(
                &format!("h{}", i % 7),
                "svc",
                Some(state).filter(|s| !s.is_empty()),
            )
        })
        .collect();
    let mut a = Engine::new("ok", 60.0);
    let mut b = Engine::new("ok", 60.0);
    assert_eq!(apply(&mut a, input.clone()), apply(&mut b, input));
}

fn at(host: &str, state: Option<&str>, time_s: i64, ttl: Option<f32>) -> Event {
    Event {
        time_micros: time_s * 1_000_000,
        ttl,
        ..ev(host, "svc", state)
    }
}

#[test]
fn expiry_at_time_plus_ttl_is_a_change_to_expired() {
    let mut e = Engine::new("ok", 60.0);
    apply(
        &mut e,
        vec![
            at("a", Some("critical"), 100, Some(10.0)),
            at("b", Some("ok"), 100, None),
        ],
    );
    let mut changes = Vec::new();
    assert_eq!(e.expire(109_999_999, &mut changes), 0, "not due yet");
    assert_eq!(e.next_expiry(), Some(110_000_000));
    assert_eq!(e.expire(110_000_000, &mut changes), 1);
    assert_eq!(
        summary(&changes),
        vec![(2, "critical".into(), "expired".into())]
    );
    assert_eq!(
        changes[0].st().previous.as_ref().unwrap().state.as_deref(),
        Some("critical")
    );
    assert_eq!(changes[0].st().event.time_micros, 110_000_000);
    // b uses the default TTL of 60 s.
    changes.clear();
    assert_eq!(e.expire(159_000_000, &mut changes), 0);
    assert_eq!(e.expire(160_000_000, &mut changes), 1);
    assert_eq!(summary(&changes), vec![(3, "ok".into(), "expired".into())]);
    assert_eq!(e.next_expiry(), None, "nothing left to expire");
    assert_eq!(e.len(), 2, "expired keys stay visible");
}

#[test]
fn a_newer_event_pushes_expiry_out() {
    let mut e = Engine::new("ok", 60.0);
    apply(&mut e, vec![at("a", Some("warning"), 100, Some(10.0))]);
    apply(&mut e, vec![at("a", Some("warning"), 105, Some(10.0))]);
    let mut changes = Vec::new();
    assert_eq!(e.expire(110_000_000, &mut changes), 0);
    assert_eq!(e.expire(115_000_000, &mut changes), 1);
    assert_eq!(changes.len(), 1);
}

#[test]
fn an_expired_key_that_reports_again_changes_from_expired() {
    let mut e = Engine::new("ok", 60.0);
    apply(&mut e, vec![at("a", Some("ok"), 100, Some(1.0))]);
    let mut changes = Vec::new();
    e.expire(200_000_000, &mut changes);
    let c = apply(&mut e, vec![at("a", Some("ok"), 201, Some(1.0))]);
    assert_eq!(summary(&c), vec![(2, "expired".into(), "ok".into())]);
}

#[test]
fn stateless_entries_expire_silently() {
    let mut e = Engine::new("ok", 60.0);
    apply(&mut e, vec![at("a", None, 100, Some(1.0))]);
    let mut changes = Vec::new();
    assert_eq!(e.expire(101_000_000, &mut changes), 1);
    assert!(changes.is_empty());
    assert_eq!(e.len(), 0);
}

#[test]
fn a_batch_that_would_pass_the_key_limit_is_refused_whole() {
    let mut e = Engine::new("ok", 60.0);
    e.set_max_keys(3);
    apply(
        &mut e,
        vec![ev("a", "cpu", Some("ok")), ev("b", "cpu", Some("ok"))],
    );
    let mut changes = Vec::new();
    // Two new keys (c and d; c twice) and a change to a: one key too many.
    let batch = vec![
        ev("a", "cpu", Some("critical")),
        ev("c", "cpu", Some("ok")),
        ev("c", "cpu", Some("warning")),
        ev("d", "cpu", Some("ok")),
    ];
    assert_eq!(
        e.apply(batch, &mut changes, None),
        Err(IndexFull { max_keys: 3 })
    );
    assert!(changes.is_empty(), "nothing applied");
    assert_eq!(e.len(), 2);
    assert_eq!(e.seq(), 0);
    // One new key (c, twice) fits exactly; then indexed keys still update, new ones don't.
    let batch = vec![ev("c", "cpu", Some("ok")), ev("c", "cpu", Some("warning"))];
    assert_eq!(e.apply(batch, &mut changes, None), Ok(Some(1)));
    assert_eq!(e.len(), 3);
    assert_eq!(
        e.apply(vec![ev("a", "cpu", Some("critical"))], &mut changes, None),
        Ok(Some(0))
    );
    assert!(e
        .apply(vec![ev("e", "cpu", Some("ok"))], &mut changes, None)
        .is_err());
    // A removed key makes room again.
    e.set_expired_keep(Some(std::time::Duration::ZERO));
    e.expire(i64::MAX, &mut changes);
    assert_eq!(e.len(), 0);
    assert!(e
        .apply(vec![ev("e", "cpu", Some("ok"))], &mut changes, None)
        .is_ok());
}

fn keeping(keep_secs: u64) -> Engine {
    let mut e = Engine::new("ok", 60.0);
    e.set_expired_keep(Some(std::time::Duration::from_secs(keep_secs)));
    e
}

#[test]
fn an_expired_key_is_removed_after_the_keep_time_with_a_removal_change() {
    let mut e = keeping(30);
    apply(&mut e, vec![at("a", Some("critical"), 100, Some(10.0))]);
    let mut changes = Vec::new();
    assert_eq!(e.expire(110_000_000, &mut changes), 1);
    assert_eq!(
        summary(&changes),
        vec![(2, "critical".into(), "expired".into())]
    );
    assert!(!changes[0].st().removed);
    assert_eq!(
        e.next_expiry(),
        Some(140_000_000),
        "removal due keep after expiry"
    );
    changes.clear();
    assert_eq!(e.expire(139_999_999, &mut changes), 0);
    assert_eq!(e.len(), 1, "still shown while kept");
    assert_eq!(e.expire(140_000_000, &mut changes), 1);
    assert_eq!(changes.len(), 1);
    let removal = &changes[0];
    assert!(removal.st().removed);
    assert_eq!(removal.seq, 3);
    assert_eq!(removal.st().previous_state, "expired");
    assert_eq!(removal.st().event.state.as_deref(), Some("expired"));
    assert_eq!(removal.st().event.host.as_deref(), Some("a"));
    assert_eq!(e.len(), 0);
    assert!(e.snapshot().events.is_empty());
    assert_eq!(e.next_expiry(), None);
    // It may come back: a new key, from the init state.
    let c = apply(&mut e, vec![at("a", Some("critical"), 200, Some(10.0))]);
    assert_eq!(summary(&c), vec![(4, "ok".into(), "critical".into())]);
}

#[test]
fn a_key_that_reports_while_kept_is_not_removed() {
    let mut e = keeping(30);
    apply(&mut e, vec![at("a", Some("critical"), 100, Some(10.0))]);
    let mut changes = Vec::new();
    e.expire(110_000_000, &mut changes);
    // Back before the keep time ran out, with a long TTL.
    apply(&mut e, vec![at("a", Some("ok"), 120, Some(100.0))]);
    changes.clear();
    assert_eq!(e.expire(140_000_000, &mut changes), 0, "the removal is off");
    assert_eq!(e.len(), 1);
    // It expires again at its new time and is removed keep after that.
    assert_eq!(e.expire(220_000_000, &mut changes), 1);
    assert_eq!(summary(&changes), vec![(4, "ok".into(), "expired".into())]);
    changes.clear();
    assert_eq!(e.expire(250_000_000, &mut changes), 1);
    assert!(changes[0].st().removed);
    assert_eq!(e.len(), 0);
}

#[test]
fn keep_zero_removes_in_the_sweep_that_expires() {
    let mut e = keeping(0);
    apply(&mut e, vec![at("a", Some("warning"), 100, Some(1.0))]);
    let mut changes = Vec::new();
    assert_eq!(e.expire(101_000_000, &mut changes), 2);
    let kinds: Vec<_> = changes
        .iter()
        .map(|c| {
            (
                c.seq,
                c.st().event.state.clone().unwrap_or_default(),
                c.st().removed,
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (2, "expired".to_string(), false),
            (3, "expired".to_string(), true)
        ]
    );
    assert_eq!(e.len(), 0);
}

#[test]
fn without_a_keep_time_expired_keys_stay() {
    let mut e = Engine::new("ok", 60.0);
    apply(&mut e, vec![at("a", Some("warning"), 100, Some(1.0))]);
    let mut changes = Vec::new();
    e.expire(101_000_000, &mut changes);
    assert_eq!(e.expire(i64::MAX, &mut changes), 0);
    assert_eq!(e.len(), 1);
    assert_eq!(e.next_expiry(), None);
}

#[test]
fn a_restored_expired_key_is_removed_keep_after_its_expiry() {
    let mut e = keeping(30);
    let mut tombstone = at("a", Some("expired"), 110, Some(10.0));
    tombstone.time_micros = 110_000_000;
    e.restore(7, vec![tombstone, at("b", None, 100, Some(1.0))]);
    e.track_unsaved();
    let mut changes = Vec::new();
    assert_eq!(
        e.expire(139_000_000, &mut changes),
        1,
        "b (no state) expires"
    );
    assert!(changes.is_empty());
    let forgotten = e.take_forgotten();
    assert_eq!(forgotten.len(), 1, "its stored row must go");
    assert_eq!(forgotten[0].host.as_deref(), Some("b"));
    assert_eq!(e.expire(140_000_000, &mut changes), 1);
    assert_eq!(changes.len(), 1);
    assert!(changes[0].st().removed);
    assert_eq!(changes[0].seq, 8, "seq continues after the restored one");
    assert_eq!(e.len(), 0);
}

#[test]
fn an_update_that_expires_sooner_is_rescheduled_earlier() {
    let mut e = Engine::new("ok", 60.0);
    apply(&mut e, vec![at("a", Some("warning"), 100, Some(50.0))]);
    apply(&mut e, vec![at("a", Some("warning"), 100, Some(5.0))]);
    assert_eq!(e.next_expiry(), Some(105_000_000));
    let mut changes = Vec::new();
    assert_eq!(e.expire(105_000_000, &mut changes), 1);
    assert_eq!(e.next_expiry(), None, "the stale later item is gone");
    assert_eq!(e.expire(200_000_000, &mut changes), 0);
    assert_eq!(changes.len(), 1);
}

#[test]
fn many_updates_keep_one_heap_item_and_an_exact_next_expiry() {
    let mut e = Engine::new("ok", 60.0);
    for t in 0..1000 {
        apply(&mut e, vec![at("a", Some("ok"), 100 + t, Some(10.0))]);
    }
    assert!(e.expiry.len() <= 2);
    assert_eq!(e.next_expiry(), Some(1_109_000_000));
    let mut changes = Vec::new();
    assert_eq!(e.expire(1_108_999_999, &mut changes), 0);
    assert_eq!(e.expire(1_109_000_000, &mut changes), 1);
    assert_eq!(summary(&changes), vec![(1, "ok".into(), "expired".into())]);
}

/// What cluster mode rests on: an engine restored from another's snapshot at any point of the
/// input, then given the rest of the input, computes exactly what the live one does — the same
/// changes with the same `seq`s, and the same index. A node that starts from the cluster's
/// snapshot and replays the stream after it therefore agrees with the nodes that never stopped.
mod restore_then_replay {
    use super::*;
    use proptest::prelude::*;

    /// host, service, state, how far in the past (0.1 s units), ttl.
    type Spec = (u8, u8, Option<u8>, u32, Option<u8>);

    #[derive(Debug, Clone)]
    enum Op {
        Events(Vec<Spec>),
        Tick(u32),
    }

    const STATES: [&str; 3] = ["ok", "warning", "critical"];
    const START: i64 = 1_764_590_000_000_000;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            prop::collection::vec(
                (
                    0u8..4,
                    0u8..3,
                    prop::option::of(0u8..3),
                    0u32..120,
                    prop::option::of(1u8..30)
                ),
                0..6
            )
            .prop_map(Op::Events),
            (1u32..40).prop_map(Op::Tick),
        ]
    }

    fn engine(keep: Option<u64>) -> Engine {
        let mut e = Engine::new("ok", 20.0);
        e.set_expired_keep(keep.map(std::time::Duration::from_secs));
        e
    }

    /// Applies `op` at the clock `now` (advanced by ticks), returning the changes.
    fn run(e: &mut Engine, op: &Op, now: &mut i64) -> Vec<Change> {
        let mut changes = Vec::new();
        match op {
            Op::Events(events) => {
                let batch = events
                    .iter()
                    .map(|&(h, s, state, offset, ttl)| Event {
                        host: Some(format!("h{h}")),
                        service: Some(format!("s{s}")),
                        state: state.map(|i| STATES[usize::from(i)].to_owned()),
                        time_micros: *now - i64::from(offset) * 100_000,
                        ttl: ttl.map(f32::from),
                        ..Default::default()
                    })
                    .collect();
                e.apply(batch, &mut changes, None).expect("no key limit");
            }
            Op::Tick(secs) => {
                *now += i64::from(*secs) * 1_000_000;
                e.expire(*now, &mut changes);
            }
        }
        changes
    }

    fn sorted(snapshot: Snapshot) -> (u64, Vec<Event>) {
        let mut events: Vec<Event> = snapshot.events.iter().map(|e| (**e).clone()).collect();
        events.sort_by(|a, b| (&a.host, &a.service).cmp(&(&b.host, &b.service)));
        (snapshot.seq, events)
    }

    proptest! {
        #[test]
        fn agrees_with_the_live_engine(
            ops in prop::collection::vec(op(), 1..60),
            split in 0usize..60,
            keep in prop::option::of(0u64..30),
        ) {
            let split = split.min(ops.len());
            let mut live = engine(keep);
            let mut now = START;
            for op in &ops[..split] {
                run(&mut live, op, &mut now);
            }
            let image = live.snapshot();
            let mut restored = engine(keep);
            restored.restore(image.seq, image.events.iter().map(|e| (**e).clone()).collect());
            let mut restored_now = now;
            for op in &ops[split..] {
                let a = run(&mut live, op, &mut now);
                let b = run(&mut restored, op, &mut restored_now);
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(sorted(live.snapshot()), sorted(restored.snapshot()));
        }
    }
}

/// The pure decisions of `apply_one`, one by one.
#[test]
fn an_event_without_a_state_changes_nothing_and_a_new_key_starts_in_init_state() {
    assert!(!changes_state(None, Some("critical"), "ok"));
    assert!(!changes_state(None, None, "ok"));
    assert!(!changes_state(Some("ok"), None, "ok"));
    assert!(changes_state(Some("critical"), None, "ok"));
    assert!(changes_state(Some("ok"), Some("critical"), "ok"));
    assert!(!changes_state(Some("critical"), Some("critical"), "ok"));
}

#[test]
fn a_live_entry_is_due_at_its_ttl_and_an_expired_one_after_the_keep_time() {
    assert_eq!(due_at(false, 10, Some(5), 99), Some(99));
    assert_eq!(due_at(true, 10, Some(5), 99), Some(15));
    assert_eq!(due_at(true, 10, None, 99), None);
    assert_eq!(due_at(true, i64::MAX, Some(5), 99), Some(i64::MAX));
}

#[test]
fn the_expiry_heap_only_gets_an_item_for_an_earlier_deadline() {
    assert_eq!(reschedule(None, Some(7)), Reschedule::Push(7));
    assert_eq!(reschedule(Some(9), Some(7)), Reschedule::Push(7));
    assert_eq!(reschedule(Some(7), Some(7)), Reschedule::Keep);
    assert_eq!(reschedule(Some(5), Some(7)), Reschedule::Keep);
    assert_eq!(reschedule(Some(5), None), Reschedule::Forget);
    assert_eq!(reschedule(None, None), Reschedule::Forget);
}

fn with_metric(host: &str, service: &str, state: Option<&str>, metric: f64) -> Event {
    Event {
        metric: Some(crate::event::Metric::Float(metric)),
        ..ev(host, service, state)
    }
}

fn moved(engine: &mut Engine) -> Vec<(String, Option<f64>)> {
    let mut out: Vec<_> = engine
        .take_moved()
        .iter()
        .map(|e| {
            (
                format!(
                    "{}/{}",
                    e.host.as_deref().unwrap_or(""),
                    e.service.as_deref().unwrap_or("")
                ),
                e.metric.map(|m| m.as_f64()),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Issue 23: keys whose metric (or description) moved within their state are handed out once
/// per take, at their latest value; a change of state, a new key, an unmoved value or a key
/// without a state is not.
#[test]
fn moved_values_are_taken_once_per_key_at_their_latest() {
    let mut e = Engine::new("ok", 60.0);
    e.track_moved();
    apply(
        &mut e,
        vec![
            with_metric("web1", "disk", Some("critical"), 91.0),
            with_metric("web2", "disk", Some("ok"), 10.0),
            with_metric("web3", "load", None, 1.0),
        ],
    );
    assert_eq!(moved(&mut e), [], "new keys are not moves");
    apply(
        &mut e,
        vec![
            with_metric("web1", "disk", Some("critical"), 95.0),
            with_metric("web1", "disk", None, 99.0),
            with_metric("web2", "disk", Some("ok"), 10.0),
            with_metric("web3", "load", None, 2.0),
        ],
    );
    assert_eq!(moved(&mut e), [("web1/disk".to_owned(), Some(99.0))]);
    assert_eq!(moved(&mut e), [], "taken once");
    // Moved, then a change of state: the change carries the values.
    apply(&mut e, vec![with_metric("web2", "disk", Some("ok"), 20.0)]);
    apply(
        &mut e,
        vec![with_metric("web2", "disk", Some("critical"), 30.0)],
    );
    assert_eq!(moved(&mut e), []);
    let described = Event {
        description: Some("now 99".into()),
        ..with_metric("web1", "disk", Some("critical"), 99.0)
    };
    apply(&mut e, vec![described]);
    assert_eq!(
        moved(&mut e),
        [("web1/disk".to_owned(), Some(99.0))],
        "a description moves too"
    );
}

#[test]
fn nothing_is_marked_moved_unless_tracked() {
    let mut e = Engine::new("ok", 60.0);
    apply(&mut e, vec![with_metric("a", "s", Some("ok"), 1.0)]);
    apply(&mut e, vec![with_metric("a", "s", Some("ok"), 2.0)]);
    assert!(e.take_moved().is_empty() && e.moved.is_empty());
}

/// The series points `events` make: the names sent (slot, host), the points (slot, time s,
/// value) and the metrics not stored.
type Made = (Vec<(u32, String)>, Vec<(u32, i64, f64)>, u64);

fn series_points(e: &mut Engine, events: Vec<Event>) -> Made {
    let mut points = Points::default();
    e.apply_with_points(events, &mut Vec::new(), None, Some(&mut points))
        .expect("under the key limit");
    let names = points
        .names()
        .map(|(slot, name)| {
            let name = crate::series::key::name_of(name);
            assert_eq!(name.service.as_deref(), Some("svc"));
            (slot, name.host.unwrap_or_default())
        })
        .collect();
    let made = points.points().iter();
    let made = made.map(|p| (p.slot, p.time_micros / 1_000_000, p.value));
    (names, made.collect(), points.not_finite)
}

#[test]
fn series_points_name_each_key_once_by_a_slot_reused_once_the_key_left() {
    let mut e = keeping(0);
    let metric = |host: &str, state, time_s, value| Event {
        metric: Some(Metric::Float(value)),
        ..at(host, state, time_s, Some(10.0))
    };
    let (names, points, not_finite) = series_points(
        &mut e,
        vec![
            metric("a", Some("ok"), 100, 1.0),
            metric("b", Some("ok"), 100, 2.0),
            metric("a", None, 101, 3.0),
            at("c", Some("ok"), 100, None),
            metric("b", None, 102, f64::NAN),
        ],
    );
    assert_eq!(names, [(0, "a".into()), (1, "b".into())]);
    assert_eq!(points, [(0, 100, 1.0), (1, 100, 2.0), (0, 101, 3.0)]);
    assert_eq!(not_finite, 1);
    let later = series_points(&mut e, vec![metric("b", None, 103, 4.0)]);
    assert_eq!(later, (vec![], vec![(1, 103, 4.0)], 0));
    // Every key expires and goes: new keys (and `a` again) take the freed slots, named anew.
    e.expire(1_000_000_000, &mut Vec::new());
    assert_eq!(e.len(), 0);
    let (names, points, _) = series_points(
        &mut e,
        vec![
            metric("d", Some("ok"), 200, 5.0),
            metric("a", None, 200, 6.0),
        ],
    );
    let hosts: Vec<&str> = names.iter().map(|(_, host)| host.as_str()).collect();
    assert_eq!(hosts, ["d", "a"]);
    let (d, a) = (names[0].0, names[1].0);
    assert!(d != a && d <= 2 && a <= 2, "freed slots reused: {names:?}");
    assert_eq!(points, [(d, 200, 5.0), (a, 200, 6.0)]);
}
