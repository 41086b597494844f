//! Tollgate's wire API: the generated `tollgate.v1` messages and services.
//!
//! Domain code lives in `tollgate-server`; this crate holds only generated wire types so the
//! client and the server share one definition.

/// Package `tollgate.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("tollgate.v1");

    /// Encoded `FileDescriptorSet` for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tollgate_descriptor");
}
