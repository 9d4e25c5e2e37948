//! Riemann protobuf over UDP: one Msg per datagram, no reply; bad datagrams are dropped and
//! counted, never fatal. The server runs in process.

use crate::common::*;
use tokio::net::UdpSocket;

async fn udp_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind udp")
}

#[tokio::test]
async fn riemann_client_over_udp_produces_a_change() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;

    let status = riemann_client_send(
        &server,
        &[
            "-U", "-h", "udp1", "-S", "load", "-s", "warning", "-d", "2.5",
        ],
    )
    .await;
    assert!(status.success(), "riemann-client send -U: {status}");
    let change = ws.next_change().await;
    assert_eq!(change["seq"], 1);
    assert_eq!(change["previous_state"], "ok");
    assert_eq!(change["event"]["host"], "udp1");
    assert_eq!(change["event"]["service"], "load");
    assert_eq!(change["event"]["state"], "warning");
    assert_eq!(change["event"]["metric"], 2.5);
}

#[tokio::test]
async fn a_datagram_with_an_event_produces_a_change() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    let socket = udp_socket().await;

    let msg = events_msg(vec![event("udp2", "disk", "critical")]);
    socket
        .send_to(&prost::Message::encode_to_vec(&msg), server.udp)
        .await
        .unwrap();
    let change = ws.next_change().await;
    assert_eq!(change["event"]["host"], "udp2");
    assert_eq!(change["event"]["state"], "critical");
}

#[tokio::test]
async fn malformed_and_oversize_datagrams_are_dropped_and_counted_and_the_server_keeps_working() {
    let server = InProcess::start(&[]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    let socket = udp_socket().await;

    // Not protobuf.
    socket
        .send_to(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01], server.udp)
        .await
        .unwrap();
    // A valid Msg, but over 16 KiB: dropped, not applied.
    let mut big = event("udp3", "oversize", "critical");
    big.description = Some("x".repeat(17 * 1024));
    let big = prost::Message::encode_to_vec(&events_msg(vec![big]));
    assert!(big.len() > 16 * 1024);
    socket.send_to(&big, server.udp).await.unwrap();
    // Then a good one: the server still works, and nothing of the two above was applied.
    let good = events_msg(vec![event("udp3", "marker", "critical")]);
    socket
        .send_to(&prost::Message::encode_to_vec(&good), server.udp)
        .await
        .unwrap();

    let change = ws.next_change_is("marker").await;
    assert_eq!(
        change["seq"], 1,
        "the oversize event was not applied: {change}"
    );
    // The datagrams are handled in order by one task: by now both bad ones were counted.
    assert_eq!(server.metric("statecast_udp_malformed_total").await, 2);
    assert_eq!(server.metric("statecast_udp_datagrams_total").await, 3);
    let (_late, snapshot) = WsClient::connect_with_snapshot(&server).await;
    assert_eq!(snapshot_services(&snapshot), ["marker"]);
}

#[tokio::test]
async fn a_datagram_over_the_per_event_limits_is_dropped_and_counted() {
    let server = InProcess::start(&["--max-attributes-per-event", "8"]);
    let (mut ws, _) = WsClient::connect_with_snapshot(&server).await;
    let socket = udp_socket().await;

    let mut wide = event("udp4", "wide", "critical");
    wide.attributes = (0..9).map(|i| attribute(&format!("a{i}"), "v")).collect();
    let wide = prost::Message::encode_to_vec(&events_msg(vec![wide]));
    socket.send_to(&wide, server.udp).await.unwrap();
    let good = events_msg(vec![event("udp4", "marker", "critical")]);
    socket
        .send_to(&prost::Message::encode_to_vec(&good), server.udp)
        .await
        .unwrap();

    let change = ws.next_change_is("marker").await;
    assert_eq!(change["seq"], 1, "the wide event was not applied: {change}");
    assert_eq!(server.metric("statecast_udp_malformed_total").await, 1);
}
