//! The TOML configuration file (`--config FILE`, `STATECAST_CONFIG`): every flag is a key, values
//! take the flags' units, precedence is flag > environment > file > default, and a bad file is
//! one line naming the file and the key. Also the short listening addresses (`:8080`,
//! `localhost:8080`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use statecast::config::Config;
use statecast::config_file::LoadError;

/// Writes `text` to a fresh `statecast.toml` and returns its path.
fn config_file(text: &str) -> PathBuf {
    let path = fresh_dir("config").join("statecast.toml");
    std::fs::write(&path, text).expect("write the config file");
    path
}

fn load(path: &Path, flags: &[&str]) -> Result<Config, LoadError> {
    let mut args = vec!["statecast".to_owned(), "--config".to_owned()];
    args.push(path.display().to_string());
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    Config::load_from(args)
}

fn file_error(path: &Path, flags: &[&str]) -> String {
    match load(path, flags) {
        Err(LoadError::File(message)) => message,
        other => panic!("expected a config file error, got {other:?}"),
    }
}

#[test]
fn every_kind_of_value_is_read_from_the_file() {
    let path = config_file(
        r#"
# sizes and durations with units, as on the flags
max-frame-bytes = "64KiB"
ws_ping = "3s"              # `_` for `-`
default-ttl = 0.5           # a float: seconds
max-keys = 5000             # an integer
tcp-queries = false         # a boolean for an on/off flag
allow-fresh-database = true # a switch
allowed-host = ["a.example", "b.example"]
http = ":8081"
tcp = "off"
init-state = "critical"
"#,
    );
    let config = load(&path, &[]).expect("the file loads");
    assert_eq!(config.max_frame_bytes, 64 * 1024);
    assert_eq!(config.ws_ping, Duration::from_secs(3));
    assert_eq!(config.default_ttl, Duration::from_millis(500));
    assert_eq!(config.max_keys, 5000);
    assert!(!config.tcp_queries);
    assert!(config.allow_fresh_database);
    assert_eq!(config.allowed_host, ["a.example", "b.example"]);
    assert_eq!(config.http, "127.0.0.1:8081".parse::<SocketAddr>().unwrap());
    assert_eq!(config.tcp, None);
    assert_eq!(config.init_state, "critical");
    // What the file does not name keeps its default.
    assert_eq!(config.max_datagram_bytes, 16 * 1024);
}

#[test]
fn a_flag_beats_the_file() {
    let path = config_file("max-keys = 5000\nws-ping = \"3s\"\nallowed-host = [\"a.example\"]\n");
    let config = load(
        &path,
        &["--max-keys", "7", "--allowed-host", "c.example,d.example"],
    )
    .expect("loads");
    assert_eq!(config.max_keys, 7);
    assert_eq!(config.allowed_host, ["c.example", "d.example"]);
    assert_eq!(
        config.ws_ping,
        Duration::from_secs(3),
        "the file still counts"
    );
}

#[test]
fn an_unknown_key_names_the_key_and_the_file_with_a_hint() {
    let path = config_file("max-frame-byte = \"16MiB\"\n");
    let message = file_error(&path, &[]);
    assert!(message.contains("`max-frame-byte`"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("did you mean `max-frame-bytes`"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");

    let message = file_error(&config_file("nothing-like-a-flag = 1\n"), &[]);
    assert!(message.contains("`nothing-like-a-flag`"), "{message}");
    assert!(
        !message.contains("did you mean"),
        "no far-fetched hint: {message}"
    );

    // The file cannot name another file (nor --help/--version).
    let message = file_error(&config_file("config = \"other.toml\"\n"), &[]);
    assert!(message.contains("unknown key `config`"), "{message}");
}

#[test]
fn a_bad_value_names_the_key_the_value_and_the_file() {
    for (text, key, value) in [
        ("max-frame-bytes = \"lots\"\n", "max-frame-bytes", "lots"),
        ("ws-ping = \"-1s\"\n", "ws-ping", "-1s"),
        ("tcp = \"nonsense\"\n", "tcp", "nonsense"),
        ("max-keys = 0\n", "max-keys", "0"),
        (
            "allow-fresh-database = \"maybe\"\n",
            "allow-fresh-database",
            "maybe",
        ),
        ("max-keys = [1, 2]\n", "max-keys", "[1, 2]"),
        ("ws-ping = { seconds = 3 }\n", "ws-ping", "seconds"),
    ] {
        let path = config_file(text);
        let message = file_error(&path, &[]);
        assert!(message.contains(&format!("`{key}`")), "{text}: {message}");
        assert!(message.contains(value), "{text}: {message}");
        assert!(
            message.contains(&path.display().to_string()),
            "{text}: {message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

#[test]
fn a_missing_or_malformed_file_is_one_line_naming_it() {
    let missing = fresh_dir("config").join("absent.toml");
    let message = file_error(&missing, &[]);
    assert!(message.contains("cannot read"), "{message}");
    assert!(message.contains("absent.toml"), "{message}");

    let path = config_file("tcp = \"off\"\nmax-keys = = 3\n");
    let message = file_error(&path, &[]);
    assert!(message.contains("line 2"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn listening_addresses_take_a_port_alone_or_a_name() {
    let config = Config::load_from([
        "statecast",
        "--http",
        ":9090",
        "--tcp",
        "localhost:5556",
        "--udp",
        ":0",
    ])
    .expect("loads");
    assert_eq!(config.http, "127.0.0.1:9090".parse::<SocketAddr>().unwrap());
    assert_eq!(config.tcp, Some("127.0.0.1:5556".parse().unwrap()));
    assert_eq!(config.udp, Some("127.0.0.1:0".parse().unwrap()));
    for bad in [":", ":http", "localhost", "no-such-host.invalid:80"] {
        assert!(
            Config::load_from(["statecast", "--http", bad]).is_err(),
            "{bad} accepted"
        );
    }
}

/// Runs the binary with `args` and `env`, and returns its ready line (parsed), then stops it.
fn ready_line(args: &[&str], env: &[(&str, &str)]) -> Value {
    let data_dir = fresh_dir("config-data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn statecast");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(TIMEOUT);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data_dir);
    let line = line.expect("a ready line within the timeout");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// flag > environment > file > default, seen on the real binary: the file turns TCP off and
/// moves UDP and HTTP; the environment moves UDP and HTTP back; a flag moves HTTP again.
#[test]
fn precedence_is_flag_then_environment_then_file_then_default() {
    let path = config_file("tcp = \"off\"\nudp = \"127.0.0.2:0\"\nhttp = \"127.0.0.2:0\"\n");
    let path = path.display().to_string();
    let ready = ready_line(
        &["--http", "127.0.0.4:0"],
        &[
            ("STATECAST_CONFIG", path.as_str()),
            ("STATECAST_UDP", "127.0.0.3:0"),
            ("STATECAST_HTTP", "127.0.0.3:0"),
        ],
    );
    let ip = |name: &str| {
        let addr: SocketAddr = ready[name].as_str().expect(name).parse().expect(name);
        addr.ip().to_string()
    };
    assert_eq!(ready["tcp"], Value::Null, "file over default: {ready}");
    assert_eq!(ip("udp"), "127.0.0.3", "environment over file: {ready}");
    assert_eq!(ip("http"), "127.0.0.4", "flag over environment: {ready}");
}

#[test]
fn the_binary_reports_a_bad_file_in_one_line_and_exits_1() {
    let path = config_file("max-frame-bytes = \"lots\"\n");
    let output = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("run statecast");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {lines:#?}");
    assert!(lines[0].starts_with("statecast: config file "), "{lines:?}");
    assert!(lines[0].contains("max-frame-bytes"), "{lines:?}");
}

/// `--help` shows the file's values as the defaults, but not the secrets.
#[test]
fn help_shows_the_files_values_but_not_its_tokens() {
    let path = config_file("max-keys = 4242\ndashboard-token = \"s3cret-value\"\n");
    let output = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .arg("--config")
        .arg(&path)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("run statecast --help");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("[default: 4242]"), "{help}");
    assert!(!help.contains("s3cret-value"), "{help}");
}

/// The limits of issue 20 (items 12, 15, 16) are keys like every flag, with their defaults when
/// the file does not name them, and their environment variables.
#[test]
fn the_connection_and_read_limits_are_keys_too() {
    let path = config_file(
        "tcp-first-frame-timeout = \"5s\"\ntcp-frame-timeout = \"7s\"\nmax-tls-handshakes = 9\nmax-large-reads = 3\n",
    );
    let config = load(&path, &[]).expect("the file loads");
    assert_eq!(config.tcp_first_frame_timeout, Duration::from_secs(5));
    assert_eq!(config.tcp_frame_timeout, Duration::from_secs(7));
    assert_eq!(config.max_tls_handshakes, 9);
    assert_eq!(config.max_large_reads, 3);
    let defaults = load(&config_file(""), &[]).expect("an empty file loads");
    assert_eq!(defaults.tcp_first_frame_timeout, Duration::from_secs(30));
    assert_eq!(defaults.tcp_frame_timeout, Duration::from_secs(30));
    assert_eq!(defaults.max_tls_handshakes, 128);
    assert_eq!(defaults.max_large_reads, 4);
    let help = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .arg("--help")
        .output()
        .expect("run statecast --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for env in [
        "STATECAST_TCP_FIRST_FRAME_TIMEOUT",
        "STATECAST_TCP_FRAME_TIMEOUT",
        "STATECAST_MAX_TLS_HANDSHAKES",
        "STATECAST_MAX_LARGE_READS",
    ] {
        assert!(help.contains(env), "{env} in --help");
    }
}

/// Issue 23: `--metrics-max-bytes` (the bound on a `metrics` frame) is a key like every flag,
/// 64 KiB unless set, refused outside 4 KiB–1 MiB, and named in `--help` with its variable.
#[test]
fn the_metrics_frame_bound_is_a_key_too() {
    let config = load(&config_file("metrics-max-bytes = \"16KiB\"\n"), &[]).expect("loads");
    assert_eq!(config.metrics_max_bytes, 16 * 1024);
    let defaults = load(&config_file(""), &[]).expect("an empty file loads");
    assert_eq!(defaults.metrics_max_bytes, 64 * 1024);
    for bad in ["1KiB", "2MiB"] {
        let text = format!("metrics-max-bytes = \"{bad}\"\n");
        assert!(load(&config_file(&text), &[]).is_err(), "{bad} refused");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_statecast"))
        .arg("--help")
        .output()
        .expect("run statecast --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--metrics-max-bytes") && help.contains("STATECAST_METRICS_MAX_BYTES"));
}
