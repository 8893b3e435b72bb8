//! The POP3 protocol layer, pure (no I/O): commands, replies, message transfer.

pub mod command;
pub mod message;
pub mod reply;
