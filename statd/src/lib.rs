//! mmstatd and mmstat: the counters daemon the other mmmail daemons report to, and its
//! viewer (spec/mail.md §5, design.md "Process model").
//!
//! Layers: [`record`] parses update datagrams and [`query`] the query protocol (pure),
//! [`table`] holds the counters (pure), [`persist`] makes them durable (snapshot and
//! journal), [`server`] does the I/O, [`prometheus`] renders and serves the exposition.

#![forbid(unsafe_code)]

pub mod config;
pub mod persist;
pub mod prometheus;
pub mod query;
pub mod record;
pub mod server;
pub mod state;
pub mod table;
