//! `statecast-bench-peer`: the two ingest baselines of the benchmarks, in one binary.
//!
//! * `--mode framing-only`: splits the TCP stream into Riemann frames and answers `ok` to each
//!   without decoding it — what loopback and syscalls allow.
//! * `--mode decode-only`: also decodes every `Msg` and converts each event into statecast's own
//!   `Event` (`statecast::event::convert::from_proto`), then drops it — what a Riemann-native
//!   receiver can at best do.
//!
//! Both answer in request order and batch replies: everything read in one `read` is answered
//! with one `write`. Prints `bench-peer listening mode=… addr=…` on stderr once bound.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use prost::Message;
use statecast::event::convert::from_proto;
use statecast::event::now_micros;
use statecast::ingest::frame::{encode, FrameDecoder};
use statecast::proto::Msg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    FramingOnly,
    DecodeOnly,
}

#[derive(Debug, Parser)]
#[command(
    name = "statecast-bench-peer",
    about = "Ingest baselines for the benchmarks: framing-only or decode-only Riemann TCP servers"
)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Largest frame accepted.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_frame_bytes: usize,
}

/// Events decoded, so the optimiser cannot drop the decoding work.
static EVENTS: AtomicU64 = AtomicU64::new(0);

fn reply(ok: bool, error: Option<String>) -> Bytes {
    let mut buf = BytesMut::new();
    encode(
        &Msg {
            ok: Some(ok),
            error,
            ..Default::default()
        },
        &mut buf,
    );
    buf.freeze()
}

async fn serve(mut socket: TcpStream, mode: Mode, max_frame: usize, ok: Arc<Bytes>) {
    let _ = socket.set_nodelay(true);
    let decoder = FrameDecoder::new(max_frame);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // One arrival time per read, as statecast stamps them.
        let now = now_micros();
        let mut fatal = false;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => {
                    if mode == Mode::DecodeOnly {
                        match Msg::decode(body) {
                            Ok(msg) => {
                                let mut n = 0u64;
                                for e in msg.events {
                                    let event = from_proto(e, now);
                                    n += u64::from(event.state.is_some());
                                    drop(std::hint::black_box(event));
                                }
                                EVENTS.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(e) => {
                                out.extend_from_slice(&reply(
                                    false,
                                    Some(format!("invalid protobuf Msg: {e}")),
                                ));
                                fatal = true;
                                break;
                            }
                        }
                    }
                    out.extend_from_slice(&ok);
                }
                Ok(None) => break,
                Err(e) => {
                    out.extend_from_slice(&reply(false, Some(e.to_string())));
                    fatal = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            if socket.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if fatal {
            let _ = socket.shutdown().await;
            return;
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("statecast-bench-peer: cannot listen on {}: {e}", args.addr);
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    let mode = match args.mode {
        Mode::FramingOnly => "framing-only",
        Mode::DecodeOnly => "decode-only",
    };
    eprintln!("bench-peer listening mode={mode} addr={addr}");
    let ok = Arc::new(reply(true, None));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    tokio::spawn(serve(socket, args.mode, args.max_frame_bytes, Arc::clone(&ok)));
                }
                Err(e) => {
                    eprintln!("statecast-bench-peer: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
    eprintln!(
        "bench-peer stopped; events decoded: {}",
        EVENTS.load(Ordering::Relaxed)
    );
    std::process::ExitCode::SUCCESS
}
