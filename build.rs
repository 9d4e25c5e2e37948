//! Generates the Riemann wire types from `proto/riemann.proto`.
//!
//! `protox` parses the schema in pure Rust, so a fresh machine needs no `protoc`:
//! `cargo build` is the whole set-up.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/riemann.proto");
    // The dashboard is embedded with include_dir, which cannot tell cargo about its inputs.
    println!("cargo:rerun-if-changed=static");
    let descriptors = protox::compile(["proto/riemann.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
