//! SIP for the harness and the reference SUT, on rsip.
//!
//! Layers, bottom up: `framing` (bytes to messages on streams), `transaction`
//! and `dialog` (sans-IO, time passed in), `transport` and `endpoint` (tokio
//! sockets driving the transaction layer), `message` (CPM request builders),
//! `agent` (the harness's test users on one endpoint).

pub mod agent;
pub mod dialog;
pub mod endpoint;
pub mod framing;
pub mod message;
pub mod transaction;
pub mod transport;

pub use dialog::{Dialog, DialogError, DialogId, cancel_for, new_branch, new_call_id, new_tag};
pub use endpoint::{Endpoint, EndpointConfig, EndpointError};
pub use framing::{FramingError, ParseError, StreamDecoder, encode, parse_datagram, parse_message};
pub use transaction::{
    Role, Target, Timers, TransactionLayer, TransportKind, TxError, TxEvent, TxKey, response_to,
};
pub use transport::TransportError;
