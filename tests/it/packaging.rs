//! packaging/: the systemd unit passes `systemd-analyze verify` (pointed at the binary the tests
//! built), and the Dockerfile builds the way the tests build and starts with flags statecast
//! accepts. (No container engine in CI: the image itself is not built here.)

use std::path::Path;
use std::process::Command;

use statecast::config::Config;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A unique empty directory (the unit's copy must be named `statecast.service`).
fn fresh_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("statecast-test-packaging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    let unit = read("packaging/statecast.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let (program, flags) = exec.split_once(' ').expect("ExecStart has flags");
    assert_eq!(program, "/usr/local/bin/statecast");
    for needed in [
        "DynamicUser=yes",
        "StateDirectory=statecast",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed:?}");
    }
    // The flags must be ones statecast takes.
    let args = std::iter::once("statecast").chain(flags.split_whitespace());
    Config::load_from(args).unwrap_or_else(|e| panic!("ExecStart flags: {e}"));

    // systemd-analyze checks that ExecStart exists: point it at the binary the tests built.
    let dir = fresh_dir();
    let copy = dir.join("statecast.service");
    let unit = unit.replace(program, env!("CARGO_BIN_EXE_statecast"));
    std::fs::write(&copy, unit).expect("write the unit's copy");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze (Debian package systemd; scripts/test installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    assert!(stderr.trim().is_empty(), "warnings: {stderr}");
}

#[test]
fn the_dockerfile_builds_like_the_tests_and_starts_with_valid_flags() {
    let dockerfile = read("packaging/Dockerfile");
    assert!(
        dockerfile.contains("RUN cargo build --release --locked --bin statecast\n"),
        "the build command"
    );
    assert!(dockerfile.contains("COPY --from=build /src/target/release/statecast "));
    // The builder image is the toolchain Cargo.toml's rust-version names.
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"');
    assert!(
        dockerfile.contains(&format!("FROM rust:{rust_version}-")),
        "builder image matches rust-version {rust_version}"
    );
    assert!(
        dockerfile.contains("\nUSER statecast\n"),
        "runs as non-root"
    );
    // CMD's JSON array (continued over lines) parses as statecast's flags.
    let cmd = dockerfile
        .split("\nCMD ")
        .nth(1)
        .expect("a CMD")
        .replace("\\\n", " ");
    let cmd = cmd.lines().next().unwrap_or_default();
    let flags: Vec<String> = serde_json::from_str(cmd).expect("CMD is a JSON array");
    let config = Config::load_from(std::iter::once("statecast".to_owned()).chain(flags))
        .unwrap_or_else(|e| panic!("CMD flags: {e}"));
    assert_eq!(config.http.to_string(), "0.0.0.0:8080");
    assert_eq!(
        config.tcp.map(|a| a.to_string()).as_deref(),
        Some("0.0.0.0:5555")
    );
}
