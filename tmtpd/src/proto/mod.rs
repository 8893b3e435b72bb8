//! TMTP as mnm speaks it (spec/tmtp.md), without I/O: frames, client headers, the
//! server's canonical JSON and `headsum`, mnm's base32.

pub mod base32;
pub mod frame;
pub mod header;
pub mod json;
pub mod message;

/// Why the server ends a connection with a `quit` frame (spec/tmtp.md §16.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quit {
    /// The 4 hex digits are not a length of at least 8.
    InvalidHeaderLength,
    /// The header is not valid for its op (§2).
    InvalidHeader,
    /// Login `node` is not base32.
    CorruptBase32,
    /// TmtpRev after TmtpRev.
    Repetition,
    /// Ops 3–12 before login.
    Unauthenticated,
    /// Register/Login on a logged-in link.
    Connected,
    /// Register/Login before TmtpRev.
    TmtpRevOmitted,
    /// Register without a valid OpenID Connect token where one is required.
    AuthenticationRequired,
    /// The account could not be stored.
    RegisterFailure,
    /// Unknown uid or node.
    LoginFailed,
    /// That node has a live connection.
    NodeConnected,
    /// Quit (op 12).
    LogoutOk,
    /// Ping/GroupInvite text over 420 bytes or 140 UTF-16 units.
    DataTooLong,
    /// PostNotify with `datalen` ≤ `notelen`.
    DataTooShort,
    /// Ping/GroupInvite text not UTF-8.
    NotUtf8,
    /// PostNotify `fornotself` with an empty `for`.
    RecipientListEmpty,
}

impl Quit {
    /// The `error` text of the quit frame.
    pub fn text(self) -> &'static str {
        match self {
            Quit::InvalidHeaderLength => "invalid header length",
            Quit::InvalidHeader => "invalid header",
            Quit::CorruptBase32 => "corrupt base32 value",
            Quit::Repetition => "disallowed op repetition",
            Quit::Unauthenticated => "disallowed op on unauthenticated link",
            Quit::Connected => "disallowed op on connected link",
            Quit::TmtpRevOmitted => "tmtprev was omitted",
            Quit::AuthenticationRequired => "authentication required",
            Quit::RegisterFailure => "register failure",
            Quit::LoginFailed => "login failed",
            Quit::NodeConnected => "node already connected",
            Quit::LogoutOk => "logout ok",
            Quit::DataTooLong => "data too long for request type",
            Quit::DataTooShort => "data too short for request type",
            Quit::NotUtf8 => "data not valid UTF8",
            Quit::RecipientListEmpty => "recipient list empty",
        }
    }
}
