//! Compiles `proto/meseta/v1/*.proto` (meseta's gRPC APIs) and
//! `proto/mesos/v1/**.proto` (Mesos' v1 HTTP API messages) with protox
//! (pure Rust), so a fresh machine needs no system `protoc`. The Mesos
//! descriptors are also written to `OUT_DIR/mesos_descriptors.bin`: the
//! JSON codec reads field names from them at run time.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let meseta = [
        "meseta/v1/master.proto",
        "meseta/v1/raft.proto",
        "meseta/v1/kv.proto",
        "meseta/v1/agent.proto",
    ];
    let mesos = [
        "mesos/v1/mesos.proto",
        "mesos/v1/scheduler/scheduler.proto",
        "mesos/v1/master/master.proto",
    ];
    for f in meseta.iter().chain(mesos.iter()) {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(meseta, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;

    let fds = protox::compile(mesos, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("mesos_descriptors.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
