//! mmtmtpd: the TMTP server of mmmail, compatible with mnm's clients and test suite
//! (spec/tmtp.md). This crate holds, so far, the pure protocol layer ([`proto`]).

#![forbid(unsafe_code)]

pub mod proto;
