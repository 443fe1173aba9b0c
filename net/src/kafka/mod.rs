//! The Kafka protocol side: bytes on a client connection in, responses out.
//!
//! - `frame`: the length-prefixed request/response codec (public: the fuzz target and the
//!   sample frames of every API use it);
//! - `frame_pool`: receive buffers for large frames, reused per thread (`*_MAX` bound);
//! - `request_bytes`: a shard's budget of request bytes (`queued.max.request.bytes`);
//! - `conn`: one client connection (reader, in-order writer, in-flight bound), over plain
//!   TCP or TLS (handshake on the serving shard), with its security `Session`;
//! - `handlers`: one file per Kafka API, all listed in one table (`handlers::APIS`);
//! - `errors`: the Kafka error codes, chosen here and nowhere else;
//! - `runs`: items in runs of equal keys gathered (partitions under their topic).
//!
//! Invariants: responses on a connection leave in request order; bad input closes the
//! connection or gets an error answer, never a panic.

pub(crate) mod conn;
pub(crate) mod errors;
pub mod frame;
pub(crate) mod frame_pool;
pub mod handlers;
pub(crate) mod request_bytes;
pub(crate) mod runs;
