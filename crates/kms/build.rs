//! Generates the KMS v2 gRPC code from proto/kms_v2.proto (needs `protoc`; Debian:
//! `apt-get install protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/kms_v2.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&[proto], &["../../proto"])
        .map_err(|e| {
            format!(
                "cannot compile {proto}: {e}\nhint: install protoc (Debian: apt-get install protobuf-compiler) or set PROTOC"
            )
        })?;
    Ok(())
}
