//! Scenarios of the derivation, without a server: changes in, alerts out.

use super::*;
use crate::action::{AckInfo, Actions, UnackReason};
use crate::event::Metric;

fn rules() -> Rules {
    Rules {
        query: None,
        states: vec!["critical".into(), "warning".into(), "expired".into()],
        labels: vec!["team".into(), "prod".into()],
        external_url: Some("https://mon.example.com/statecast/".into()),
    }
}

fn event(host: &str, state: &str, time: i64) -> Arc<Event> {
    Arc::new(Event {
        host: Some(host.into()),
        service: Some("cpu".into()),
        state: Some(state.into()),
        description: Some("load 12".into()),
        metric: Some(Metric::Float(0.5)),
        time_micros: time,
        tags: vec!["prod".into()],
        attributes: vec![("team".into(), "db".into())],
        ..Default::default()
    })
}

fn state(seq: u64, event: Arc<Event>, previous_state: &str) -> Change {
    Change::state(
        seq,
        StateChange {
            previous_state: previous_state.into(),
            event,
            ..Default::default()
        },
    )
}

fn key(host: &str) -> KeyName {
    (Some(host.into()), Some("cpu".into()))
}

/// (host, state, firing?) of each alert.
fn summary(alerts: &[Alert]) -> Vec<(String, String, bool)> {
    alerts
        .iter()
        .map(|a| {
            (
                a.labels["host"].clone(),
                a.labels["state"].clone(),
                a.resolved_at.is_none(),
            )
        })
        .collect()
}

fn s(host: &str, state: &str, firing: bool) -> (String, String, bool) {
    (host.into(), state.into(), firing)
}

#[test]
fn a_critical_fires_with_its_labels_and_link_and_ok_resolves_it() {
    let mut firing = Firing::new(rules());
    let out = firing.apply(&state(1, event("web1", "critical", 10), "ok"), 99);
    assert_eq!(summary(&out), [s("web1", "critical", true)]);
    let alert = &out[0];
    assert_eq!(alert.starts_at, 10);
    assert_eq!(alert.labels["alertname"], "statecast");
    assert_eq!(alert.labels["service"], "cpu");
    assert_eq!(alert.labels["team"], "db", "an attribute");
    assert_eq!(alert.labels["prod"], "true", "a tag");
    assert_eq!(alert.annotations["description"], "load 12");
    assert_eq!(alert.annotations["metric"], "0.5");
    assert_eq!(
        alert.generator_url.as_deref(),
        Some("https://mon.example.com/statecast/?query=host%20%3D%20%22web1%22%20and%20service%20%3D%20%22cpu%22")
    );
    assert_eq!(firing.firing_count(), 1);

    let out = firing.apply(&state(2, event("web1", "ok", 20), "critical"), 99);
    assert_eq!(summary(&out), [s("web1", "critical", false)]);
    assert_eq!(out[0].resolved_at, Some(99));
    assert_eq!(out[0].starts_at, 10);
    assert!(firing.firing().is_empty());
    assert_eq!(firing.firing_count(), 0);
}

#[test]
fn a_state_change_between_alert_states_replaces_the_alert() {
    let mut firing = Firing::new(rules());
    firing.apply(&state(1, event("web1", "critical", 10), "ok"), 0);
    let out = firing.apply(&state(2, event("web1", "warning", 20), "critical"), 30);
    assert_eq!(
        summary(&out),
        [s("web1", "critical", false), s("web1", "warning", true)]
    );
    assert_eq!(out[1].starts_at, 20);
    assert_eq!(firing.firing_count(), 1);
}

#[test]
fn ack_resolves_unack_fires_again_with_the_first_start() {
    let mut firing = Firing::new(rules());
    firing.apply(&state(1, event("web1", "critical", 10), "ok"), 0);
    let ack = ActionRecord::Ack(AckInfo {
        host: Some("web1".into()),
        service: Some("cpu".into()),
        note: "on it".into(),
        by: "ann".into(),
        at: 15,
        expires_at: None,
    });
    let out = firing.apply(&Change::action(2, ack), 16);
    assert_eq!(summary(&out), [s("web1", "critical", false)]);
    assert!(firing.firing().is_empty(), "acked: not resent");
    // Still acked through a change between problem states: nothing fires.
    let out = firing.apply(&state(3, event("web1", "warning", 20), "critical"), 21);
    assert!(out.is_empty(), "{out:?}");

    let unack = ActionRecord::Unack {
        host: Some("web1".into()),
        service: Some("cpu".into()),
        reason: UnackReason::Deleted,
        by: Some("ann".into()),
    };
    let out = firing.apply(&Change::action(4, unack), 30);
    assert_eq!(summary(&out), [s("web1", "warning", true)]);
    assert_eq!(out[0].starts_at, 20);
    assert_eq!(firing.firing_count(), 1);
}

#[test]
fn silenced_keys_do_not_fire_until_unsilenced() {
    let mut firing = Firing::new(rules());
    let silenced = Change::state(
        1,
        StateChange {
            previous_state: "ok".into(),
            event: event("web1", "critical", 10),
            silenced: true,
            ..Default::default()
        },
    );
    assert!(firing.apply(&silenced, 0).is_empty());
    firing.apply(&state(2, event("web2", "critical", 10), "ok"), 0);
    let record = ActionRecord::Silence {
        id: 3,
        change: crate::action::SilenceChange::Ended,
        silence: None,
        silenced: vec![key("web2")],
        unsilenced: vec![key("web1")],
    };
    let out = firing.apply(&Change::action(3, record), 50);
    assert_eq!(
        summary(&out),
        [s("web2", "critical", false), s("web1", "critical", true)]
    );
}

#[test]
fn expired_keys_alert_as_silent_removed_ones_resolve_and_the_query_narrows() {
    let mut rules = rules();
    rules.query = Some(Query::parse(r#"host != "ignored""#).unwrap());
    let mut firing = Firing::new(rules);
    let out = firing.apply(&state(1, event("web1", "expired", 10), "ok"), 0);
    assert_eq!(
        out[0].annotations["description"],
        "went silent: no event within its TTL"
    );
    let removed = Change::state(
        2,
        StateChange {
            previous_state: "expired".into(),
            event: event("web1", "expired", 10),
            removed: true,
            ..Default::default()
        },
    );
    assert_eq!(
        summary(&firing.apply(&removed, 5)),
        [s("web1", "expired", false)]
    );
    assert!(firing
        .apply(&state(3, event("ignored", "critical", 10), "ok"), 0)
        .is_empty());
    // A change already applied (a snapshot covered it) is ignored.
    assert!(firing
        .apply(&state(3, event("web9", "critical", 10), "ok"), 0)
        .is_empty());
}

#[test]
fn a_resync_resolves_what_stopped_firing_and_sends_what_fires() {
    let mut firing = Firing::new(rules());
    firing.apply(&state(1, event("web1", "critical", 10), "ok"), 0);
    firing.apply(&state(2, event("web2", "critical", 10), "ok"), 0);
    let snapshot = Snapshot {
        seq: 9,
        events: vec![
            event("web2", "critical", 40),
            event("web3", "warning", 50),
            event("web4", "ok", 50),
        ],
        actions: Actions::default(),
    };
    let out = firing.resync(&snapshot, 60);
    assert_eq!(
        summary(&out),
        [
            s("web1", "critical", false),
            s("web2", "critical", true),
            s("web3", "warning", true)
        ]
    );
    assert_eq!(out[1].starts_at, 10, "the start it knew is kept");
    assert_eq!(out[2].starts_at, 50);
    assert_eq!(firing.firing_count(), 2);
    assert!(firing
        .apply(&state(9, event("web5", "critical", 10), "ok"), 0)
        .is_empty());
}

#[test]
fn a_flapping_key_fires_one_flapping_alert_until_it_settles() {
    let minute = 60 * 1_000_000;
    let mut firing = Firing::new(rules());
    let mut all = Vec::new();
    let states = ["critical", "ok", "critical", "ok", "critical", "ok"];
    for (i, to) in states.iter().enumerate() {
        let previous = if i % 2 == 0 { "ok" } else { "critical" };
        let at = i as i64 * minute;
        all = firing.apply(&state(i as u64 + 1, event("web1", to, at), previous), at);
    }
    // The sixth change (to ok) resolves the critical alert and starts flapping: one alert,
    // without a state.
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(summary(&all[..1]), [s("web1", "critical", false)]);
    let flapping = &all[1];
    assert_eq!(flapping.labels["flapping"], "true");
    assert!(!flapping.labels.contains_key("state"));
    assert_eq!(flapping.starts_at, 5 * minute);
    assert_eq!(flapping.resolved_at, None);
    assert_eq!(
        flapping.annotations["description"],
        "flapping: 6 changes of state within 10 minutes"
    );
    // More changes: it goes on flapping, nothing new to say.
    let out = firing.apply(&state(7, event("web1", "critical", 6 * minute), "ok"), 0);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(firing.firing().len(), 1);
    assert!(
        firing.settle(12 * minute).is_empty(),
        "still 3 changes in the window"
    );
    // Settled (the changes at 5 and 6 minutes left): the flapping alert resolves and the
    // problem, still there, fires.
    let out = firing.settle(14 * minute + 1);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].labels["flapping"], "true");
    assert_eq!(out[0].resolved_at, Some(14 * minute + 1));
    assert_eq!(summary(&out[1..]), [s("web1", "critical", true)]);
    assert_eq!(firing.firing_count(), 1);
}
