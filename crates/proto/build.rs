//! Compiles `proto/meseta/v1/*.proto` with protox (pure Rust), so a fresh
//! machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "meseta/v1/master.proto",
        "meseta/v1/raft.proto",
        "meseta/v1/kv.proto",
        "meseta/v1/agent.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
