//! What every capability builds on: the error type and its HTTP mapping, plain HTTP
//! values, the key-value trait, variables and the host's services ([`env::Env`]), crypto
//! primitives, JSON reading and writing, leases, log gaps and idempotent creates.

pub mod crypto;
pub mod env;
pub mod error;
pub mod gaps;
pub mod http;
pub mod json_reader;
pub mod json_writer;
pub mod kv;
pub mod lease;
pub mod multipart;
pub mod outbound;
