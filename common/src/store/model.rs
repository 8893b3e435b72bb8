//! Plain data passed in and out of the [`Store`](super::Store).

/// A row of the `box` table: a maildrop with its limits and counters (design.md "Schema").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxInfo {
    /// `box_address`, lowercase.
    pub address: String,
    /// `box_user`: the owning `user.user_id`.
    pub user: i64,
    /// `box_max_size`: byte limit, 0 = unlimited.
    pub max_size: i64,
    /// `box_size`: bytes stored.
    pub size: i64,
    /// `box_max_mails`: message limit, 0 = unlimited.
    pub max_mails: i64,
    /// `box_mails`: messages stored.
    pub mails: i64,
}

impl BoxInfo {
    /// Whether the box refuses a new message at RCPT time (spec/mail.md §3.5): the count
    /// or the size limit is already reached, or the announced `SIZE=` (bytes, 0 if none)
    /// would take it over the size limit.
    pub fn is_full(&self, announced: u64) -> bool {
        let announced = i64::try_from(announced).unwrap_or(i64::MAX);
        (self.max_mails > 0 && self.mails >= self.max_mails)
            || (self.max_size > 0 && self.size >= self.max_size)
            || (self.max_size > 0 && announced > 0 && self.size.saturating_add(announced) > self.max_size)
    }
}

/// Where a recipient address leads (design.md "Mail rules", spec/mail.md §3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The address is a box, or the most specific matching alias names these boxes.
    Boxes(Vec<BoxInfo>),
    /// The domain is served here but nothing matches the address: `550 5.1.1`.
    UnknownUser,
    /// No box or alias serves the domain: relaying denied, `550 5.7.1`.
    NotLocal,
}

/// One copy of a message to store in one box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailCopy {
    /// The target `box_address`.
    pub box_address: String,
    /// The POP3 UIDL for this copy: 1–70 printable ASCII characters, unique.
    pub uid: String,
    /// Trace fields for this copy (`Return-Path:`, `Received: … for <rcpt>`), CRLF-ended.
    pub trace: Vec<u8>,
}

/// A message to store: the body once, one [`MailCopy`] per distinct box.
#[derive(Clone, Debug)]
pub struct Delivery<'a> {
    /// The message as received (CRLF line ends, dot-unstuffed), without trace fields.
    pub body: &'a [u8],
    /// One entry per distinct target box.
    pub copies: Vec<MailCopy>,
}

/// An entry of a maildrop listing, in delivery order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailEntry {
    /// `mail_id`, the row key.
    pub id: i64,
    /// `mail_uid`, the UIDL.
    pub uid: String,
    /// Octets of the message as retrieved (trace fields + body).
    pub size: i64,
}

/// Why [`Store::deliver`](super::Store::deliver) stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// This box reached its count or size limit (or vanished) since RCPT; nothing was
    /// stored anywhere. SMTP answers `452 4.2.2`.
    #[error("box {0} is full")]
    NoRoom(String),
    /// The database failed; nothing was stored.
    #[error(transparent)]
    Store(#[from] crate::error::StoreError),
}

impl From<sqlx::Error> for DeliverError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// What the POP3 UPDATE state did (RFC 1939 §6, [`Store::commit_deletions`](super::Store::commit_deletions)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// This many messages were deleted (ids already gone are not counted), and the
    /// maildrop lock was released with them.
    Deleted(u64),
    /// The session's lease had expired or been taken over: nothing was deleted, and
    /// the lock (another session's, if any) was left alone.
    LockLost,
}

/// A stored message as POP3 sends it: the copy's trace fields, then the shared body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retrieved {
    /// `Return-Path:`/`Received:` of this copy, CRLF-ended.
    pub trace: Vec<u8>,
    /// The message as received.
    pub body: Vec<u8>,
}

/// A run of consecutive messages of one box to read in one query
/// ([`super::Store::retrieve_run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// `mail_id` of the first message.
    pub first: i64,
    /// `mail_id` of the last message.
    pub last: i64,
    /// Octets (`mail_size`) of the largest message wanted: no larger one is read.
    pub max_size: i64,
    /// Messages read at most.
    pub messages: i64,
}

impl Retrieved {
    /// Octets of trace + body: what LIST reports.
    pub fn len(&self) -> usize {
        self.trace.len() + self.body.len()
    }

    /// Whether both parts are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Trace and body in one buffer (a copy; tests and small messages).
    pub fn to_vec(&self) -> Vec<u8> {
        [self.trace.as_slice(), self.body.as_slice()].concat()
    }
}

/// The user owning a box, with the stored password value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxOwner {
    /// `user.user_id`.
    pub user_id: i64,
    /// `user.user_name`.
    pub user_name: String,
    /// `user.user_passwd`: a PHC string or a legacy MD5 digest.
    pub passwd: String,
}

/// `(bytes, messages)` of a box counted from its copies ([`Store::recount`](super::Store::recount)),
/// to compare with its `box_size`/`box_mails` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of every copy (trace fields and body).
    pub bytes: i64,
    /// Copies.
    pub messages: i64,
}

/// A row of the `user` table as a login needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// `user_id`.
    pub id: i64,
    /// `user_passwd`: a PHC string or a legacy MD5 digest.
    pub passwd: String,
}

/// A TMTP node: an account's device (spec/tmtp.md §10.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// The account.
    pub uid: String,
    /// The node's number within the account (from 1).
    pub num: i64,
}

/// A message waiting in a node's queue, in delivery order: `'E'` (UserEdit results)
/// before `'M'`, then by id (spec/tmtp.md §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// `E` or `M`.
    pub prio: String,
    /// The message id.
    pub message: i64,
}

/// A TMTP message whose data came whole, to be stored and queued in one transaction
/// ([`crate::store::Store::tmtp_store_messages`]).
#[derive(Clone, Copy, Debug)]
pub struct WholeMessage<'a> {
    /// The message id.
    pub id: i64,
    /// Length digits and JSON header, as sent.
    pub header: &'a [u8],
    /// All its data (at most one 64 KiB chunk).
    pub data: &'a [u8],
    /// `E` or `M` (spec/tmtp.md §4.5).
    pub prio: &'a str,
    /// The recipient nodes; none: the message is not stored.
    pub nodes: &'a [Node],
}

/// A part of a streamed TMTP message written in one commit
/// ([`crate::store::Store::tmtp_upload`]): its start, a data chunk, and its making
/// deliverable, each optional, in that order.
#[derive(Clone, Debug, Default)]
pub struct UploadPart<'a> {
    /// The message row is created first (the upload's first write).
    pub begin: bool,
    /// Chunk number `.0` (from 0; at most 64 KiB, spec/tmtp.md §8.1) with data `.1`,
    /// handed over (not copied) until its transaction is committed.
    pub chunk: Option<(i64, Vec<u8>)>,
    /// Then the message is made deliverable and queued.
    pub ready: Option<ReadyMessage<'a>>,
}

/// A streamed TMTP message made deliverable: its frame header, size and recipients
/// ([`UploadPart::ready`]).
#[derive(Clone, Copy, Debug)]
pub struct ReadyMessage<'a> {
    /// Length digits and JSON header (with headsum), as its recipients get it.
    pub header: &'a [u8],
    /// Data bytes, all chunks together.
    pub size: i64,
    /// `E` or `M` (spec/tmtp.md §4.5).
    pub prio: &'a str,
    /// The recipient nodes; none: the message is deleted.
    pub nodes: &'a [Node],
    /// This instance's name when some recipient is not connected here (see
    /// `Store::tmtp_store_messages`).
    pub remote: Option<&'a str>,
}

/// One TMTP write of a transaction that holds several (a group commit,
/// `Store::tmtp_store_messages`), in the order written.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TmtpOp<'a> {
    /// A message that came whole, with its chunk and queue rows, and work rows for other
    /// instances when the instance name is given (`Store::tmtp_store_messages`).
    Whole(WholeMessage<'a>, Option<&'a str>),
    /// A streamed message begun (`Store::tmtp_upload`).
    Begin(i64),
    /// Chunk `seq` of streamed message `id` (`Store::tmtp_upload`).
    Chunk { id: i64, seq: i64, data: &'a [u8] },
    /// A streamed message made deliverable (`Store::tmtp_upload`); with no nodes it is
    /// deleted.
    Ready { id: i64, header: &'a [u8], size: i64, prio: &'a str, nodes: &'a [Node], remote: Option<&'a str> },
    /// Recipient acks (`Store::tmtp_acks`).
    Acks(&'a [(Node, i64)]),
}

/// Work for this mmtmtpd instance left by another on the same database (`tmtp_wake`,
/// issue 19): node `node`'s queue has new messages, or `frame` is to be written to every
/// node of `node.uid` connected here (an `ohi` note; `node.num` is 0 then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wake {
    /// The node (or the account, number 0).
    pub node: Node,
    /// The frame to write, or None: read the node's queue.
    pub frame: Option<Vec<u8>>,
}

/// A deliverable TMTP message: its frame header, the size of its data and the first
/// chunk of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TmtpMessage {
    /// Length digits and JSON header, as sent.
    pub header: Vec<u8>,
    /// Data bytes, stored in 64 KiB chunks.
    pub size: i64,
    /// Chunk 0 of the data (at most 64 KiB); None when there is none (no data, or the
    /// chunk is missing).
    pub first: Option<Vec<u8>>,
}

/// What adding an alias did (spec/tmtp.md §10.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddAlias {
    /// The alias is the user's (now, or already).
    Added,
    /// Another user has it.
    Taken,
    /// A group has that id (aliases and gids share one namespace).
    NotAvailable,
}

/// What adding a node did (spec/tmtp.md §10.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddNode {
    /// The new node's number.
    Added(i64),
    /// The user already has the maximum of live nodes.
    TooMany,
}

/// A group member's standing (spec/tmtp.md §10.5); stored as 1, 2, 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// Invited, not joined yet.
    Invited,
    /// A member: receives the group's posts.
    Joined,
    /// Left or removed; may not rejoin by itself.
    Barred,
}

impl MemberStatus {
    /// The stored value.
    pub fn code(self) -> i64 {
        match self {
            MemberStatus::Invited => 1,
            MemberStatus::Joined => 2,
            MemberStatus::Barred => 3,
        }
    }

    /// The status a stored value means (anything unknown counts as barred: it never
    /// receives posts).
    pub fn from_code(code: i64) -> MemberStatus {
        match code {
            1 => MemberStatus::Invited,
            2 => MemberStatus::Joined,
            _ => MemberStatus::Barred,
        }
    }
}

/// A TMTP group member (spec/tmtp.md §10.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's uid.
    pub uid: String,
    /// The alias recorded for the member in this group.
    pub alias: String,
    /// Invited, joined or barred.
    pub status: MemberStatus,
}

/// A user as `mmadmin user list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    /// `user_id`.
    pub id: i64,
    /// `user_name`.
    pub name: String,
    /// How many boxes the user owns.
    pub boxes: i64,
}

/// A box as `mmadmin box list` shows it; sizes in bytes, 0 = unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoxEntry {
    /// `box_address`.
    pub address: String,
    /// The owner's `user_name`; `None` when no such user exists.
    pub owner: Option<String>,
    /// `box_max_size`, bytes.
    pub max_size: i64,
    /// `box_size`, bytes.
    pub size: i64,
    /// `box_max_mails`.
    pub max_mails: i64,
    /// `box_mails`.
    pub mails: i64,
}

/// Why a user was not deleted: boxes still belong to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnsBoxes;

/// What the plain-SQL route can leave behind (`mmadmin check`, design.md "Schema").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Boxes not stored in lowercase (up to 20): they receive nothing and cannot log in.
    pub mixed_case_boxes: Vec<String>,
    /// `(pattern, box)` of aliases whose box does not exist.
    pub dangling_aliases: Vec<(String, String)>,
    /// Boxes whose owner does not exist.
    pub ownerless_boxes: Vec<String>,
    /// `(box, counters, recount)` of boxes whose counters differ from their copies.
    pub counter_drift: Vec<(String, Usage, Usage)>,
    /// Message bodies no copy refers to.
    pub orphan_messages: i64,
    /// `(box, owner)` of POP3 leases past their expiry.
    pub stale_leases: Vec<(String, String)>,
}

impl Findings {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        *self == Findings::default()
    }
}

/// What `mmadmin check --fix` repaired, in one transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Boxes whose counters were set to a recount.
    pub counters: usize,
    /// Message bodies deleted.
    pub messages: u64,
    /// Leases deleted.
    pub leases: u64,
}
