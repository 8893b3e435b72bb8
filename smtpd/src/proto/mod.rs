//! The SMTP protocol layer, pure (no I/O): commands, replies, the DATA receiver.

pub mod command;
pub mod data;
pub mod reply;
