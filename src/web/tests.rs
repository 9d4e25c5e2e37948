//! Handlers through `Router::oneshot`, without a server or a socket: the router is the one the
//! server runs, built from flags, over an in-memory engine (no store) whose input goes through a
//! fake [`Sequencer`] that records what reaches it and answers as the test says. What a handler
//! decides before the engine (a body's limits, a query's syntax) is checked here; what needs
//! the transports, the binary or real clients stays in `tests/it`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clap::Parser;
use serde_json::Value;
use tokio::sync::{oneshot, watch};
use tower::ServiceExt as _;

use super::*;
use crate::config::Config;
use crate::engine::{Applied, Connection, EngineError, Input, Sequencer, SubmitFuture};

/// Where the test router says it listens (the Host its requests carry).
const ADDR: &str = "127.0.0.1:5556";

/// A sequencer that applies nothing: it keeps every input it is handed and answers each with
/// `answer` (what the engine would have said).
struct Recording {
    inputs: Mutex<Vec<Input>>,
    answer: Result<(), EngineError>,
}

impl Recording {
    fn answering(answer: Result<(), EngineError>) -> Arc<Self> {
        Arc::new(Self {
            inputs: Mutex::new(Vec::new()),
            answer,
        })
    }

    fn inputs(&self) -> Vec<Input> {
        self.inputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Sequencer for Recording {
    fn submit<'a>(
        &'a self,
        input: Input,
        ack: Option<oneshot::Sender<Applied>>,
        _connection: Option<&'a Arc<Connection>>,
    ) -> SubmitFuture<'a> {
        self.inputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(input);
        if let Some(ack) = ack {
            let _ = ack.send(Applied::Done(self.answer.clone()));
        }
        Box::pin(async { Ok(()) })
    }

    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// The server's router for `flags`, over an in-memory engine whose input goes to `sequencer`
/// (reads, like `/api/state`'s snapshot, are the engine's own). Also the engine itself, for
/// filling the index without the fake, and the counters.
fn router_with(
    flags: &[&str],
    sequencer: Arc<Recording>,
) -> (Router, crate::engine::EngineHandle, Arc<Counters>) {
    let (app, engine, counters) = app_with(flags, sequencer);
    // The ingest routes are the transport's; the server hands them to the router the same way.
    let ingest = crate::ingest::http::routes(&app);
    (router(app, ingest), engine, counters)
}

/// The router's state for `flags` (see [`router_with`]), for a test that changes a part of it.
fn app_with(
    flags: &[&str],
    sequencer: Arc<Recording>,
) -> (AppState, crate::engine::EngineHandle, Arc<Counters>) {
    let args = ["statecast", "--data-dir", "/nonexistent"]
        .into_iter()
        .chain(flags.iter().copied());
    let config = Config::try_parse_from(args).expect("flags");
    let counters = Arc::new(Counters::default());
    let (engine, _task) = crate::engine::spawn(config.engine(), Arc::clone(&counters), None, None);
    let (_stats_tx, stats) = watch::channel(Utf8Bytes::from_static(r#"{"type":"stats"}"#));
    let addr: SocketAddr = ADDR.parse().expect("an address");
    let app = AppState {
        engine: engine.with_sequencer(sequencer),
        counters: Arc::clone(&counters),
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        stats,
        ws_permits: Arc::new(Semaphore::new(config.max_ws_connections)),
        ws: config.ws(),
        access: Arc::new(config.access(addr)),
        max_body_bytes: config.max_body_bytes,
        store: None,
        epoch: "test".into(),
        json_limits: config.json_limits(),
        body_timeout: config.http_body_timeout,
        rates: Arc::new(rates::RateRing::new(config.stats_interval)),
        large_reads: large_reads::LargeReads::new(config.max_large_reads),
        series: None,
        prometheus_max_keys: config.prometheus_max_keys,
    };
    (app, engine, counters)
}

/// One request through the router: its status and its body as JSON.
async fn call(router: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, ADDR)
        .body(Body::from(body.to_owned()))
        .expect("a request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

fn error_of(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn post_event_hands_the_decoded_batch_to_the_engine_and_answers_its_count() {
    let sequencer = Recording::answering(Ok(()));
    let (router, _, _) = router_with(&[], Arc::clone(&sequencer));
    let body = r#"[{"host":"a","service":"cpu","state":"ok"},{"host":"b","service":"cpu"}]"#;
    let (status, answer) = call(&router, "POST", "/api/event", body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, serde_json::json!({"ok": true, "accepted": 2}));
    let inputs = sequencer.inputs();
    let [Input::Events(events)] = inputs.as_slice() else {
        panic!("one batch: {inputs:?}");
    };
    let hosts: Vec<_> = events.iter().map(|e| e.host.as_deref()).collect();
    assert_eq!(hosts, [Some("a"), Some("b")]);
}

#[tokio::test]
async fn post_event_body_errors_are_answered_before_the_engine_hears_of_them() {
    let sequencer = Recording::answering(Ok(()));
    let (router, _, counters) = router_with(
        &["--max-body-bytes", "1024", "--max-events-per-request", "2"],
        Arc::clone(&sequencer),
    );
    let cases = [
        ("{not json", StatusCode::BAD_REQUEST, "at line 1"),
        (
            r#"[{"host":"a"},{"host":"b"},{"host":"c"}]"#,
            StatusCode::PAYLOAD_TOO_LARGE,
            "--max-events-per-request",
        ),
        (
            r#"[{"host":"a"},{"host":"b","metric":"high"}]"#,
            StatusCode::BAD_REQUEST,
            "index 1",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = call(&router, "POST", "/api/event", body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(error_of(&answer).contains(needle), "{body}: {answer}");
    }
    let oversize = format!(r#"{{"host":"{}"}}"#, "x".repeat(2000));
    let (got, answer) = call(&router, "POST", "/api/event", &oversize).await;
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert!(error_of(&answer).contains("1024 byte limit"), "{answer}");

    assert!(sequencer.inputs().is_empty(), "{:?}", sequencer.inputs());
    assert_eq!(Counters::get(&counters.http_rejected), 4);
}

#[tokio::test]
async fn post_event_says_what_the_engine_refused() {
    let refused = EngineError::Storage("storage unavailable: disk full".into());
    let (router, _, _) = router_with(&[], Recording::answering(Err(refused)));
    let (status, answer) = call(&router, "POST", "/api/event", r#"{"host":"a"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(error_of(&answer).contains("disk full"), "{answer}");

    let full = EngineError::IndexFull { max_keys: 1 };
    let (router, _, _) = router_with(&[], Recording::answering(Err(full)));
    let (status, answer) = call(&router, "POST", "/api/event", r#"{"host":"a"}"#).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert!(error_of(&answer).contains("--max-keys"), "{answer}");
}

#[tokio::test]
async fn api_state_query_errors_are_400_with_where_and_matches_are_filtered() {
    let (router, engine, _) = router_with(&[], Recording::answering(Ok(())));
    let event = |host: &str, state: &str| crate::event::Event {
        host: Some(host.into()),
        service: Some("cpu".into()),
        state: Some(state.into()),
        time_micros: crate::event::now_micros(),
        ..Default::default()
    };
    // Straight to the engine (the fake sequencer applies nothing).
    let applied = engine
        .apply(vec![event("web1", "critical"), event("web2", "ok")])
        .await;
    assert_eq!(applied, Ok(()));

    let (status, answer) = call(&router, "GET", "/api/state?query=state%20%3D", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(!error_of(&answer).is_empty(), "{answer}");
    let (status, answer) = call(
        &router,
        "GET",
        "/api/state?query=nonsense%20%3D%3D%3D%201",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    let (status, answer) = call(
        &router,
        "GET",
        "/api/state?query=state%20%3D%20%22critical%22",
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let hosts: Vec<&str> = answer
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|e| e["host"].as_str())
        .collect();
    assert_eq!(hosts, ["web1"]);
}

#[tokio::test]
async fn a_series_store_that_cannot_be_read_answers_503_with_a_sentence_not_a_cut_answer() {
    let (mut app, _, _) = app_with(&[], Recording::answering(Ok(())));
    app.series = Some(crate::series::SeriesReader::failing_for_tests());
    let ingest = crate::ingest::http::routes(&app);
    let router = router(app, ingest);
    let (status, answer) = call(&router, "GET", "/api/series", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    let error = error_of(&answer);
    assert!(
        error.contains("No space left on device")
            && error.contains("series cannot be read until the series store works again"),
        "{error}"
    );
}
