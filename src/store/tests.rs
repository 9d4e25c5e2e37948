use super::encoding::{encode_change, encode_key};
use super::*;
use crate::change::StateChange;
use crate::event::convert;
use prost::Message;
use std::sync::Arc;

fn tmp() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("statecast-store-{}", new_epoch()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn state(host: &str, state: &str) -> StateChange {
    StateChange {
        previous_state: "ok".into(),
        event: Arc::new(Event {
            host: Some(host.into()),
            state: Some(state.into()),
            time_micros: 5,
            ..Default::default()
        }),
        previous: None,
        ..StateChange::default()
    }
}

fn change(seq: u64, host: &str, state_: &str) -> Change {
    Change::state(seq, state(host, state_))
}

fn removed_state(host: &str) -> StateChange {
    StateChange {
        previous_state: "expired".into(),
        removed: true,
        ..state(host, "expired")
    }
}

fn removal(seq: u64, host: &str) -> Change {
    Change::state(seq, removed_state(host))
}

#[test]
fn a_change_is_encoded_as_prost_encodes_its_stored_change() {
    let mut with_previous = state("db", "critical");
    with_previous.previous = Some(Arc::new(Event {
        host: Some("db".into()),
        service: Some("disk".into()),
        state: Some("ok".into()),
        description: Some("é".repeat(100)),
        metric: Some(crate::event::Metric::Float(0.5)),
        tags: vec!["a".into(), String::new()],
        attributes: vec![("k".into(), "v".into())],
        ttl: Some(30.0),
        time_micros: -1_500_000,
    }));
    let mut defaults = state("x", "warning");
    defaults.previous_state = String::new();
    let cases = [
        (Change::state(7, with_previous), 1_700_000_000_000_000),
        (Change::state(0, defaults), 0),
        (removal(9, "gone"), 5),
        (
            Change::state(
                10,
                StateChange {
                    silenced: true,
                    cleared_by: Some("ann".into()),
                    ..removed_state("cleared")
                },
            ),
            6,
        ),
    ];
    for (change, recorded_at) in cases {
        let c = change.st();
        let expected = StoredChange {
            seq: change.seq,
            previous_state: c.previous_state.clone(),
            event: Some(convert::to_proto(&c.event)),
            previous: c.previous.as_deref().map(convert::to_proto),
            recorded_at,
            removed: c.removed,
            action: Vec::new(),
            silenced: c.silenced,
            cleared_by: c.cleared_by.clone(),
        };
        let mut scratch = b"left over".to_vec();
        let encoded = encode_change(&change, recorded_at, &mut scratch);
        assert_eq!(encoded, expected.encode_to_vec());
    }
}

/// Removed keys leave the stored index, whether redb got the removal (a write), only the log
/// has it (replayed on open), or the key left without a change (a flush).
#[test]
fn removed_and_forgotten_keys_leave_the_stored_index() {
    let dir = tmp();
    let hosts = |rec: &Recovered| {
        let mut hosts: Vec<String> = rec
            .events
            .iter()
            .map(|e| e.host.clone().unwrap_or_default())
            .collect();
        hosts.sort();
        hosts
    };
    {
        let (store, _) = Store::open(&dir).unwrap();
        let stateless = Arc::new(Event {
            host: Some("quiet".into()),
            ..Default::default()
        });
        let changes = [change(1, "a", "critical"), change(2, "b", "critical")];
        store.commit(&changes, &[stateless], 2, 1_000).unwrap();
        // a is removed through redb, b only in the log; quiet leaves without a change.
        let through_redb = Encoded::new(&[removal(3, "a")], 2_000);
        store.log([&through_redb]).unwrap();
        let flushed = WriteStep::Updates {
            forgotten: vec![Arc::new(Event {
                host: Some("quiet".into()),
                ..Default::default()
            })],
            updated: Vec::new(),
        };
        store
            .write(&[WriteStep::Changes(through_redb), flushed], 3)
            .unwrap();
        store.checkpoint().unwrap();
        let only_logged = Encoded::new(&[removal(4, "b")], 3_000);
        store.log([&only_logged]).unwrap();
    }
    let (store, rec) = Store::open(&dir).unwrap();
    assert_eq!(rec.seq, 4);
    assert!(hosts(&rec).is_empty(), "left: {:?}", hosts(&rec));
    let history = store.history(0, 10, |_| true).unwrap();
    let removed: Vec<(u64, bool)> = history.iter().map(|c| (c.seq, c.removed)).collect();
    assert_eq!(removed, vec![(1, false), (2, false), (3, true), (4, true)]);
    assert!(history[3].clone().into_change().unwrap().st().removed);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn commit_recover_history_and_prune() {
    let dir = tmp();
    let epoch = {
        let (store, rec) = Store::open(&dir).unwrap();
        assert_eq!((rec.seq, rec.events.len()), (0, 0));
        let changes: Vec<Change> = (1..=5)
            .map(|i| change(i, &format!("h{i}"), "critical"))
            .collect();
        let dirty = vec![Arc::new(Event {
            host: Some("quiet".into()),
            ..Default::default()
        })];
        store.commit(&changes, &dirty, 5, 1_000).unwrap();
        let got = store.history(2, 10, |_| true).unwrap();
        assert_eq!(got.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(got[0].event().host.as_deref(), Some("h3"));
        assert_eq!(store.history(0, 2, |_| true).unwrap().len(), 2);
        rec.epoch
    };
    let (store, rec) = Store::open(&dir).unwrap();
    assert_eq!(rec.epoch, epoch, "same directory, same epoch");
    assert_eq!(rec.seq, 5);
    assert_eq!(rec.events.len(), 6);
    let retention = Retention {
        max_changes: 2,
        max_age_micros: i64::MAX,
    };
    assert_eq!(store.prune(retention, 2_000, 100).unwrap(), 3);
    assert_eq!(store.oldest_seq().unwrap(), Some(4));
    let by_age = Retention {
        max_changes: 100,
        max_age_micros: 10,
    };
    assert_eq!(
        store.prune(by_age, 2_000, 1).unwrap(),
        1,
        "budget respected"
    );
    drop(store);
    let other = tmp();
    let (_, fresh) = Store::open(&other).unwrap();
    assert_ne!(fresh.epoch, epoch, "fresh directory, new epoch");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[test]
fn changes_only_in_the_log_are_replayed_on_open() {
    let dir = tmp();
    {
        let (store, _) = Store::open(&dir).unwrap();
        store
            .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
            .unwrap();
        store.checkpoint().unwrap();
        // Logged (acknowledged) but the process dies before redb has it.
        let encoded = Encoded::new(&[change(2, "b", "critical"), change(3, "a", "ok")], 2_000);
        store.log([&encoded]).unwrap();
    }
    let (store, rec) = Store::open(&dir).unwrap();
    assert_eq!(rec.seq, 3);
    let mut states: Vec<(String, String)> = rec
        .events
        .iter()
        .map(|e| (e.host.clone().unwrap(), e.state.clone().unwrap()))
        .collect();
    states.sort();
    assert_eq!(
        states,
        vec![("a".into(), "ok".into()), ("b".into(), "critical".into())]
    );
    let seqs: Vec<u64> = store
        .history(0, 10, |_| true)
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    drop(store);
    // Replayed once: a second open finds the same, from redb alone.
    let (_, again) = Store::open(&dir).unwrap();
    assert_eq!((again.seq, again.events.len()), (3, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keys_do_not_collide() {
    let k = |h: Option<&str>, s: Option<&str>| {
        encode_key(&Event {
            host: h.map(Into::into),
            service: s.map(Into::into),
            ..Default::default()
        })
    };
    assert_ne!(k(None, Some("a")), k(Some(""), Some("a")));
    assert_ne!(k(Some("a"), None), k(None, Some("a")));
    assert_ne!(k(Some("ab"), Some("c")), k(Some("a"), Some("bc")));
}

#[test]
fn an_empty_database_beside_a_log_is_refused_unless_allowed() {
    let dir = tmp();
    {
        let (store, _) = Store::open(&dir).unwrap();
        store
            .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
            .unwrap();
    }
    std::fs::File::create(dir.join(DB_FILE)).unwrap();
    let error = Store::open(&dir).err().expect("refused").to_string();
    assert!(error.contains("--allow-fresh-database"), "{error}");
    assert_eq!(std::fs::metadata(dir.join(DB_FILE)).unwrap().len(), 0);
    let (store, rec) = Store::open_with(
        &dir,
        Consent {
            fresh_database: true,
            data_loss: false,
        },
    )
    .unwrap();
    assert_eq!((rec.seq, rec.events.len()), (1, 1), "the log is replayed");
    assert!(
        !wal::Wal::holds_any_record(&dir.join(WAL_FILE)).unwrap(),
        "the old log is erased once replayed"
    );
    drop(store);
    let (_, again) = Store::open(&dir).unwrap();
    assert_eq!(again.seq, 1, "a plain restart now works");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reopen_writes_what_only_the_log_holds() {
    let dir = tmp();
    let (store, _) = Store::open(&dir).unwrap();
    store
        .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
        .unwrap();
    store.checkpoint().unwrap();
    // Logged (acknowledged), then the database fails before it gets the change.
    let encoded = Encoded::new(&[change(2, "b", "critical")], 2_000);
    store.log([&encoded]).unwrap();
    assert_eq!(store.reopen().unwrap(), 1);
    let seqs: Vec<u64> = store
        .history(0, 10, |_| true)
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn ack_record(seq: u64, host: &str, note: &str) -> Change {
    Change::action(
        seq,
        crate::action::ActionRecord::Ack(crate::action::AckInfo {
            host: Some(host.into()),
            service: None,
            note: note.into(),
            by: "ann".into(),
            at: 7,
            expires_at: Some(9),
        }),
    )
}

fn silences_record(seq: u64, ids: &[u64]) -> Change {
    let silences = ids
        .iter()
        .map(|&id| crate::action::Silence {
            id,
            query: "host = \"a\"".into(),
            comment: String::new(),
            by: "ann".into(),
            created_at: 1,
            starts_at: 1,
            ends_at: 2,
            active: true,
        })
        .collect();
    Change::action(
        seq,
        crate::action::ActionRecord::Silences {
            silences,
            silenced: vec![(Some("a".into()), None)],
        },
    )
}

/// Acks and silences are stored from their records, whether redb got them (a write) or only
/// the log did (replayed on open, and in memory when the database cannot be written); history
/// gives the records back as they were, and they leave the stored index alone.
#[test]
fn action_records_are_stored_recovered_and_kept_in_history() {
    let dir = tmp();
    let unack = Change::action(
        5,
        crate::action::ActionRecord::Unack {
            host: Some("a".into()),
            service: None,
            reason: crate::action::UnackReason::Deleted,
            by: Some("bob".into()),
        },
    );
    {
        let (store, _) = Store::open(&dir).unwrap();
        let changes = [
            change(1, "a", "critical"),
            ack_record(2, "a", "first"),
            ack_record(3, "b", "other"),
            silences_record(4, &[4]),
        ];
        store.commit(&changes, &[], 4, 1_000).unwrap();
        store.checkpoint().unwrap();
        // Only in the log: a's ack ends, b's is replaced, the silence set changes.
        let logged = [
            unack.clone(),
            ack_record(6, "b", "second"),
            silences_record(7, &[4, 7]),
        ];
        store.log([&Encoded::new(&logged, 2_000)]).unwrap();
    }
    let check = |rec: &Recovered| {
        assert_eq!(rec.seq, 7);
        assert_eq!(rec.events.len(), 1, "action records touch no index row");
        let notes: Vec<(Option<String>, String)> = rec
            .actions
            .acks
            .iter()
            .map(|a| (a.host.clone(), a.note.clone()))
            .collect();
        assert_eq!(notes, vec![(Some("b".into()), "second".into())]);
        let ids: Vec<u64> = rec.actions.silences.iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![4, 7]);
    };
    let (store, rec) = Store::open(&dir).unwrap();
    check(&rec);
    let history: Vec<Change> = store
        .history(0, 10, |_| true)
        .unwrap()
        .into_iter()
        .filter_map(StoredChange::into_change)
        .collect();
    assert_eq!(history.len(), 7);
    assert_eq!(history[4], unack);
    assert_eq!(history[1], ack_record(2, "a", "first"));
    assert!(history[0].as_action().is_none());
    drop(store);
    // Opened again (nothing left in the log): the same from redb alone.
    let (_, rec) = Store::open(&dir).unwrap();
    check(&rec);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The read-only start (a database that cannot be written) applies the logged action records
/// in memory.
#[test]
fn a_read_only_start_applies_logged_action_records() {
    let dir = tmp();
    {
        let (store, _) = Store::open(&dir).unwrap();
        store
            .commit(&[ack_record(1, "a", "first")], &[], 1, 1_000)
            .unwrap();
        store.checkpoint().unwrap();
        let logged = [ack_record(2, "b", "second"), silences_record(3, &[3])];
        store.log([&Encoded::new(&logged, 2_000)]).unwrap();
    }
    let db = open_database(&dir.join(DB_FILE)).unwrap();
    let (rec, _) = recover_read_only(&db, &dir.join(WAL_FILE)).unwrap();
    assert_eq!(rec.seq, 3);
    assert_eq!(rec.actions.acks.len(), 2);
    assert_eq!(rec.actions.silences.len(), 1);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 21 item 7: what a clean stop leaves (the last checkpoint over a log that held records)
/// replays without a damaged record; a damaged last record is still counted.
#[test]
fn a_log_after_a_clean_stop_replays_without_damage() {
    let dir = tmp();
    {
        let (store, _) = Store::open(&dir).unwrap();
        for seq in 1..=20 {
            let host = format!("h{seq}");
            store
                .commit(&[change(seq, &host, "critical")], &[], seq, 1_000)
                .unwrap();
        }
        store.checkpoint().unwrap();
    }
    for _ in 0..2 {
        let (_, rec) = Store::open(&dir).unwrap();
        assert_eq!(rec.seq, 20);
        assert_eq!(rec.replay, Replay::default());
    }
    // Real damage: the last record of a crashed round has a flipped byte.
    {
        let (store, _) = Store::open(&dir).unwrap();
        for seq in 21..=23 {
            store
                .log([&Encoded::new(&[change(seq, "x", "critical")], 1_000)])
                .unwrap();
        }
    }
    let log = dir.join(WAL_FILE);
    let mut bytes = std::fs::read(&log).unwrap();
    let (records, report) = wal::parse_records(&bytes, 20);
    assert_eq!(records.len(), 3);
    bytes[report.end as usize - 1] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();
    let (_, rec) = Store::open(&dir).unwrap();
    assert_eq!(
        (rec.seq, rec.replay),
        (
            22,
            Replay {
                replayed: 2,
                skipped: 0,
                damaged_tail: true
            }
        )
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 20 item 13, at the store: after a crash, a log that is missing, empty, cut short or not
/// a change log is refused unless the operator consents; after a clean stop it loses nothing.
#[test]
fn a_lost_log_is_refused_after_a_crash_unless_consented() {
    // What each does, and the seq a consented start finds (what is left of the log replayed).
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage, u64); 4] = [
        ("missing", |log| std::fs::remove_file(log).unwrap(), 1),
        ("empty", |log| std::fs::write(log, b"").unwrap(), 1),
        (
            "cut",
            |log| {
                let file = std::fs::OpenOptions::new().write(true).open(log).unwrap();
                file.set_len(4096).unwrap();
            },
            2,
        ),
        (
            "not a change log",
            |log| std::fs::write(log, vec![0xa5u8; 64 * 1024]).unwrap(),
            1,
        ),
    ];
    for (what, damage, left) in damages {
        let dir = tmp();
        {
            let (store, _) = Store::open(&dir).unwrap();
            store
                .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
                .unwrap();
            store.checkpoint().unwrap();
            // Acknowledged (logged), then the process dies.
            store
                .log([&Encoded::new(&[change(2, "b", "critical")], 2_000)])
                .unwrap();
        }
        damage(&dir.join(WAL_FILE));
        let error = Store::open(&dir).err().expect(what).to_string();
        assert!(
            error.contains("--allow-data-loss") && error.contains("seq 1"),
            "{what}: {error}"
        );
        let consent = Consent {
            data_loss: true,
            ..Consent::default()
        };
        let (store, rec) = Store::open_with(&dir, consent).unwrap();
        assert_eq!(rec.seq, left, "{what}: what is left");
        drop(store);
        let (_, again) = Store::open(&dir).unwrap();
        assert_eq!(again.seq, left, "{what}: the log is the store's own again");
        let _ = std::fs::remove_dir_all(&dir);

        // After a clean stop the log held nothing the database lacks.
        let dir = tmp();
        {
            let (store, _) = Store::open(&dir).unwrap();
            store
                .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
                .unwrap();
            store.close().unwrap();
        }
        damage(&dir.join(WAL_FILE));
        let (_, rec) = Store::open(&dir).unwrap();
        assert_eq!(rec.seq, 1, "{what} after a clean stop");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A new directory and an intact log need no consent, and a start itself is no clean stop.
#[test]
fn an_intact_log_needs_no_consent_and_a_start_is_no_clean_stop() {
    let dir = tmp();
    {
        let (store, _) = Store::open(&dir).unwrap();
        store
            .commit(&[change(1, "a", "critical")], &[], 1, 1_000)
            .unwrap();
        store.close().unwrap();
    }
    // Started after the clean stop, then killed before any change: the marker is gone.
    drop(Store::open(&dir).unwrap());
    std::fs::remove_file(dir.join(WAL_FILE)).unwrap();
    assert!(Store::open(&dir).is_err(), "no clean stop since the start");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A hole recorded in history: `oldest_seq` is where whole history starts (past the newest
/// hole), readers find the first hole after their `since`, holes survive a reopen, and at most
/// `MAX_GAPS` are kept (the oldest forgotten).
#[test]
fn holes_in_history_are_told_and_bounded() {
    let dir = tmp();
    let (store, _) = Store::open(&dir).unwrap();
    let changes: Vec<Change> = (1..=3).map(|s| change(s, "h", "critical")).collect();
    store.commit(&changes, [], 3, 10).unwrap();
    assert_eq!(store.oldest_seq().unwrap(), Some(1));
    assert_eq!(store.gap_after(0).unwrap(), None);
    store.record_gap(4, 9).unwrap();
    store.commit(&[change(10, "h", "ok")], [], 10, 11).unwrap();
    assert_eq!(store.oldest_seq().unwrap(), Some(10));
    assert_eq!(store.gap_after(0).unwrap(), Some((4, 9)));
    assert_eq!(store.gap_after(8).unwrap(), Some((4, 9)));
    assert_eq!(store.gap_after(9).unwrap(), None);
    drop(store);
    let (store, _) = Store::open(&dir).unwrap();
    assert_eq!(store.gap_after(3).unwrap(), Some((4, 9)));
    for i in 0..MAX_GAPS {
        let from = 100 + 10 * i;
        store.record_gap(from, from + 5).unwrap();
    }
    // The first hole is forgotten; the newest sets where whole history starts.
    assert_eq!(store.gap_after(0).unwrap(), Some((100, 105)));
    let newest = 100 + 10 * (MAX_GAPS - 1) + 5;
    assert_eq!(store.oldest_seq().unwrap(), Some(newest + 1));
    let _ = std::fs::remove_dir_all(&dir);
}

fn silence_delta(seq: u64, id: u64, kept: bool) -> Change {
    let silence = kept.then(|| crate::action::Silence {
        id,
        query: format!("host = \"s{seq}\""),
        comment: String::new(),
        by: "ann".into(),
        created_at: 1,
        starts_at: 1,
        ends_at: 2,
        active: true,
    });
    let change = if kept {
        crate::action::SilenceChange::Created
    } else {
        crate::action::SilenceChange::Deleted
    };
    Change::action(
        seq,
        crate::action::ActionRecord::Silence {
            id,
            change,
            silence,
            silenced: Vec::new(),
            unsilenced: Vec::new(),
        },
    )
}

/// A silence change is stored as what changed (one silence row), and a database or log written
/// by an earlier version (whole-set records, the set in one meta value) still recovers: the
/// deltas that follow apply on top of it, in redb and in the read-only start alike.
#[test]
fn silence_deltas_apply_on_top_of_an_old_whole_set() {
    let dir = tmp();
    {
        let (store, _) = Store::open(&dir).unwrap();
        // An earlier version's record: the whole set {1, 2}.
        store
            .commit(&[silences_record(2, &[1, 2])], &[], 2, 1_000)
            .unwrap();
        // Deltas: 1 deleted, 3 created.
        let deltas = [silence_delta(3, 1, false), silence_delta(4, 3, true)];
        store.commit(&deltas, &[], 4, 1_000).unwrap();
        store.checkpoint().unwrap();
        // Only in the log: an old whole-set record {2, 3, 5}, then 2 deleted, 6 created.
        let logged = [
            silences_record(5, &[2, 3, 5]),
            silence_delta(6, 2, false),
            silence_delta(7, 6, true),
        ];
        store.log([&Encoded::new(&logged, 2_000)]).unwrap();
    }
    let ids = |rec: &Recovered| -> Vec<u64> { rec.actions.silences.iter().map(|s| s.id).collect() };
    let db = open_database(&dir.join(DB_FILE)).unwrap();
    let (rec, _) = recover_read_only(&db, &dir.join(WAL_FILE)).unwrap();
    assert_eq!(ids(&rec), vec![3, 5, 6], "read-only start");
    drop(db);
    let (store, rec) = Store::open(&dir).unwrap();
    assert_eq!(ids(&rec), vec![3, 5, 6], "replayed into redb");
    let created = store.history(3, 1, |_| true).unwrap();
    assert_eq!(
        created[0].clone().into_change(),
        Some(silence_delta(4, 3, true))
    );
    drop(store);
    let (_, rec) = Store::open(&dir).unwrap();
    assert_eq!(ids(&rec), vec![3, 5, 6], "from redb alone");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Records written before `Change` became an enum carried an empty event beside an action
/// record; they read as the record still. The new encoding leaves that event out and reads the
/// same. A record that does not decode is skipped — before, it came back as an empty state
/// change and was framed as one.
#[test]
fn action_records_read_by_kind_old_and_new_and_undecodable_ones_are_skipped() {
    let record = ack_record(5, "a", "old").as_action().cloned().unwrap();
    let old = StoredChange {
        seq: 5,
        event: Some(crate::proto::Event::default()),
        recorded_at: 1,
        action: serde_json::to_vec(&record).unwrap(),
        ..StoredChange::default()
    };
    let read = StoredChange::decode(old.encode_to_vec().as_slice()).unwrap();
    assert_eq!(read.into_change(), Some(Change::action(5, record.clone())));
    let new = encode_change(&Change::action(5, record.clone()), 1, &mut Vec::new());
    assert!(
        new.len() < old.encode_to_vec().len(),
        "no empty event any more"
    );
    let read = StoredChange::decode(new.as_slice()).unwrap();
    assert!(matches!(read.kind(), StoredKind::Action(_)));
    assert_eq!(read.into_change(), Some(Change::action(5, record)));

    let damaged = StoredChange {
        seq: 6,
        action: b"{not json".to_vec(),
        ..StoredChange::default()
    };
    assert!(matches!(damaged.kind(), StoredKind::Undecodable));
    assert_eq!(damaged.into_change(), None);
    let plain = StoredChange {
        seq: 7,
        ..StoredChange::default()
    };
    assert!(matches!(plain.kind(), StoredKind::State));
}
