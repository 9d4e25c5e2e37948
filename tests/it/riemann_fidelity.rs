//! Riemann's own decoding rules where a client sends an attribute named like a standard field:
//! Riemann's codec merges a decoded event's attributes into the event, so `description`,
//! `state`, `host` and `service` set those fields (collectd's notifications carry their text in
//! the attribute `description`), while `metric`, `tags`, `time` and `ttl` are dropped. The server
//! runs in process.

use crate::common::*;

#[tokio::test]
async fn a_description_attribute_is_the_description_as_in_riemann() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    // What collectd's write_riemann sends for a notification: the text only as an attribute.
    let status = riemann_client_send(
        &server,
        &[
            "-h",
            "db1",
            "-S",
            "collectd/df",
            "-s",
            "critical",
            "-a",
            "description=Filesystem / is 98% full",
            "-a",
            "plugin=df",
        ],
    )
    .await;
    assert!(status.success(), "riemann-client send: {status}");
    let change = ws.next_change().await;
    assert_eq!(change["event"]["description"], "Filesystem / is 98% full");
    assert_eq!(change["event"]["plugin"], "df", "other attributes stay");

    // The query sees the merged field too, and the Riemann reply carries it as the field.
    let mut tcp = RiemannTcp::connect(&server).await;
    let reply = tcp
        .request(&query_msg("description =~ \"Filesystem%\""))
        .await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");
    assert_eq!(reply.events.len(), 1, "{reply:?}");
    let event = &reply.events[0];
    assert_eq!(
        event.description.as_deref(),
        Some("Filesystem / is 98% full")
    );
    assert!(
        event.attributes.iter().all(|a| a.key != "description"),
        "no duplicate attribute: {event:?}"
    );
}

#[tokio::test]
async fn state_host_service_attributes_set_the_key_and_typed_names_are_dropped() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    let mut e = event("placeholder", "svc", "ok");
    e.attributes = vec![
        attribute("host", "web7"),
        attribute("state", "warning"),
        attribute("metric", "not a number"),
        attribute("ttl", "soon"),
        attribute("rack", "r12"),
    ];
    let mut tcp = RiemannTcp::connect(&server).await;
    let reply = tcp.request(&events_msg(vec![e])).await;
    assert_eq!(reply.ok, Some(true), "{reply:?}");

    let change = ws.next_change().await;
    assert_eq!(change["event"]["host"], "web7");
    assert_eq!(change["event"]["state"], "warning");
    assert_eq!(change["event"]["rack"], "r12");
    assert!(change["event"].get("metric").is_none(), "{change}");
    assert!(change["event"].get("ttl").is_none(), "{change}");

    let state = http_request(server.http, "GET", "/api/state", &[], b"").await;
    let hosts: Vec<String> = state
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|e| e["host"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(hosts, ["web7"], "indexed under the merged host");
}
