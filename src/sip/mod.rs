//! SIP for the harness and the reference SUT, on rsip.
//!
//! Layers, bottom up: `framing` (bytes to messages on streams), `transaction`
//! and `dialog` (sans-IO, time passed in), `transport` and `endpoint` (tokio
//! sockets driving the transaction layer), `message` (CPM request builders),
//! `agent` (the harness's test users on one endpoint).
