//! Generates the `tollgate.v1` code with a vendored `protoc`, so a fresh machine needs no
//! system protoc (and we never mutate the process environment with `set_var("PROTOC")`).
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let include = protoc_bin_vendored::include_path()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("tollgate_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                PathBuf::from("tollgate/v1/check.proto"),
                PathBuf::from("tollgate/v1/auth.proto"),
                PathBuf::from("tollgate/v1/admin.proto"),
            ],
            &[PathBuf::from("."), include],
        )?;
    println!("cargo:rerun-if-changed=tollgate");
    Ok(())
}
