//! Generates the Riemann wire types from `proto/riemann.proto`.
//!
//! `protox` parses the schema in pure Rust, so a fresh machine needs no `protoc`:
//! `cargo build` is the whole set-up.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/riemann.proto");
    // The dashboard is embedded with include_dir, which cannot tell cargo about its inputs.
    println!("cargo:rerun-if-changed=static");
    // For `statecast_build_info{rustc=…}` in /metrics: which compiler built this binary.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|v| {
            let v = v.trim();
            v.strip_prefix("rustc ")
                .unwrap_or(v)
                .replace(['"', '\\', '\n'], "")
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=STATECAST_RUSTC_VERSION={version}");
    let descriptors = protox::compile(["proto/riemann.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
