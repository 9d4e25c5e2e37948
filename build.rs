//! Generates the Riemann wire types from `proto/riemann.proto`.
//!
//! `protox` parses the schema in pure Rust, so a fresh machine needs no `protoc`:
//! `cargo build` is the whole set-up.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/riemann.proto");
    let descriptors = protox::compile(["proto/riemann.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
