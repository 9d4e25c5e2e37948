//! `statecast` binary: parse flags, start the server, print the ready line, stop on SIGINT/SIGTERM.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use statecast::config::{Config, LogFormat};
use statecast::config_file::LoadError;

/// Events are decoded on connection tasks and freed by the engine on another thread; glibc's
/// malloc spends about half the ingest time on that pattern (see BENCHMARKS.md), mimalloc's
/// thread-free lists do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(LoadError::Args(error)) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(LoadError::Args(error)) => {
            eprintln!("statecast: {}", statecast::config_file::one_line(&error));
            return ExitCode::FAILURE;
        }
        Err(LoadError::File(message)) => {
            eprintln!("statecast: {message}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("statecast: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ready_file = config.ready_file.clone();
    runtime.block_on(async {
        // Signal handlers exist before anything is announced: whoever reads the ready line (a
        // supervisor, a test) may send SIGTERM at once, and a signal that arrives before its
        // handler is registered takes the default action — death with no drain and no exit 0.
        let shutdown_signal = ShutdownSignal::register();
        let running = match statecast::server::start(config).await {
            Ok(running) => running,
            Err(error) => {
                eprintln!("statecast: {error}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(path) = &ready_file {
            if let Err(error) = running.write_ready_file(path) {
                eprintln!(
                    "statecast: cannot write the ready file {}: {error}",
                    path.display()
                );
                running.shutdown().await;
                return ExitCode::FAILURE;
            }
        }
        // The one line statecast prints on stdout (logs go to stderr); a closed stdout is no
        // reason to stop serving.
        let _ = writeln!(std::io::stdout(), "{}", running.ready_line());
        shutdown_signal.recv().await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), as text or one JSON object per
/// line (`--log-format json`: fields at the top level beside `timestamp`, `level`, `target` and
/// `message`, which is what log shippers index).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// SIGINT or SIGTERM, whichever comes first. Registered up front (see `main`) so that no signal
/// sent after the ready line can find the process without a handler; a handler that cannot be
/// registered leaves that signal's default action (termination) in place.
struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    fn register() -> ShutdownSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignal {
                term: signal(SignalKind::terminate()).ok(),
                interrupt: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignal {}
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<&mut tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(self.term.as_mut()) => {}
                _ = next(self.interrupt.as_mut()) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
