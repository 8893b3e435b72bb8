//! Client headers (spec/tmtp.md §2): one JSON object whose keys match case-insensitively
//! (the last occurrence of a key wins, in any spelling), unknown keys ignored, types
//! strict (a wrong type anywhere invalidates the header), then the per-op presence rules
//! of §2.2. Every failure is the quit `"invalid header"`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::Quit;

/// The client operations (spec/tmtp.md §16.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// 0: protocol revision, always first.
    TmtpRev,
    /// 1: create an account and its first node.
    Register,
    /// 2: log a node in.
    Login,
    /// 3: add an alias or a node.
    UserEdit,
    /// 4: presence subscription list.
    OhiEdit,
    /// 5: invite to a group.
    GroupInvite,
    /// 6: join, re-alias or drop in a group.
    GroupEdit,
    /// 7: store a message for recipients.
    Post,
    /// 8: a post plus a notification.
    PostNotify,
    /// 9: a short text to an alias.
    Ping,
    /// 10: acknowledge a queued message.
    Ack,
    /// 11: keep-alive.
    Pulse,
    /// 12: log out.
    Quit,
}

impl Op {
    fn from_number(n: u64) -> Option<Op> {
        use Op::*;
        Some(match n {
            0 => TmtpRev,
            1 => Register,
            2 => Login,
            3 => UserEdit,
            4 => OhiEdit,
            5 => GroupInvite,
            6 => GroupEdit,
            7 => Post,
            8 => PostNotify,
            9 => Ping,
            10 => Ack,
            11 => Pulse,
            12 => Quit,
            _ => return None,
        })
    }
}

/// One element of `for` / `notefor`: a uid (type 1) or a group (2 with the sender, 3
/// without), spec/tmtp.md §5.7, §7.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Uid or gid.
    pub id: String,
    /// 1, 2 or 3 (OhiEdit: any int8, echoed).
    pub kind: i8,
}

/// The `oidc` object of Register (spec/tmtp.md §12); only `id_token` is used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Oidc {
    /// The provider's signed JWT.
    pub id_token: Option<String>,
}

/// A decoded and checked client header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The operation.
    pub op: Op,
    /// Request id (echoed in `ack`), or for Ack the message id.
    pub id: Option<String>,
    /// Login: the uid.
    pub uid: Option<String>,
    /// Login: the node secret.
    pub node: Option<String>,
    /// Register/UserEdit: a node label.
    pub newnode: Option<String>,
    /// Register/UserEdit/GroupEdit: an alias.
    pub newalias: Option<String>,
    /// GroupInvite/GroupEdit: the group.
    pub gid: Option<String>,
    /// GroupInvite/Ping: the sender's alias.
    pub from: Option<String>,
    /// GroupInvite/GroupEdit/Ping: the recipient's alias.
    pub to: Option<String>,
    /// OhiEdit: `init`/`add`/`drop`; Ack: any non-empty text.
    pub kind: Option<String>,
    /// GroupEdit: `join`/`alias`/`drop`.
    pub act: Option<String>,
    /// Bytes of data after the header.
    pub datalen: i64,
    /// Bytes at the start of the data that are a client header.
    pub datahead: i64,
    /// PostNotify: bytes of notification at the start of the data.
    pub notelen: i64,
    /// PostNotify: client header bytes of the notification.
    pub notehead: i64,
    /// Client checksum of the data (echoed, never verified).
    pub datasum: u64,
    /// Client checksum of the notification (echoed).
    pub notesum: u64,
    /// Recipients (`for`).
    pub targets: Option<Vec<Target>>,
    /// PostNotify: recipients of the notification only.
    pub notefor: Option<Vec<Target>>,
    /// PostNotify: the sender's other nodes do not get the post.
    pub fornotself: bool,
    /// Register: OpenID Connect token response.
    pub oidc: Option<Oidc>,
}

/// Go's key matching: Unicode simple case folding (close enough: lower case, and the
/// long s that Go folds to `s`).
fn fold(key: &str) -> String {
    key.chars().flat_map(char::to_lowercase).map(|c| if c == 'ſ' { 's' } else { c }).collect()
}

/// One JSON object's members in document order, keys folded; `for`, `notefor` and
/// `oidc` are decoded as nested objects in the same way.
#[derive(Debug, Default)]
struct Fields(Vec<(String, Slot)>);

#[derive(Debug)]
enum Slot {
    Value(Value),
    List(Option<Vec<Option<Fields>>>),
    Object(Option<Fields>),
}

impl<'de> de::Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let key = fold(&key);
                    let slot = match key.as_str() {
                        "for" | "notefor" => Slot::List(map.next_value()?),
                        "oidc" => Slot::Object(map.next_value()?),
                        _ => Slot::Value(map.next_value()?),
                    };
                    out.push((key, slot));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct Bad;

impl Fields {
    /// The last member named `key` (already folded).
    fn last(&self, key: &str) -> Option<&Slot> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, s)| s)
    }

    fn value(&self, key: &str) -> Result<Option<&Value>, Bad> {
        match self.last(key) {
            None | Some(Slot::Value(Value::Null)) => Ok(None),
            Some(Slot::Value(v)) => Ok(Some(v)),
            Some(_) => Err(Bad),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, Bad> {
        match self.value(key)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Bad),
        }
    }

    fn int(&self, key: &str) -> Result<i64, Bad> {
        match self.value(key)? {
            None => Ok(0),
            Some(Value::Number(n)) => n.as_i64().ok_or(Bad),
            Some(_) => Err(Bad),
        }
    }

    fn uint(&self, key: &str) -> Result<u64, Bad> {
        match self.value(key)? {
            None => Ok(0),
            Some(Value::Number(n)) => n.as_u64().ok_or(Bad),
            Some(_) => Err(Bad),
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, Bad> {
        match self.value(key)? {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(Bad),
        }
    }

    fn targets(&self, key: &str) -> Result<Option<Vec<Target>>, Bad> {
        match self.last(key) {
            None | Some(Slot::List(None)) => Ok(None),
            Some(Slot::List(Some(items))) => items
                .iter()
                .map(|item| match item {
                    None => Ok(Target { id: String::new(), kind: 0 }),
                    Some(f) => {
                        let id = f.string("id")?.unwrap_or_default();
                        let kind = i8::try_from(f.int("type")?).map_err(|_| Bad)?;
                        Ok(Target { id, kind })
                    }
                })
                .collect::<Result<Vec<_>, Bad>>()
                .map(Some),
            Some(_) => Err(Bad),
        }
    }

    fn oidc(&self) -> Result<Option<Oidc>, Bad> {
        match self.last("oidc") {
            None | Some(Slot::Object(None)) => Ok(None),
            Some(Slot::Object(Some(f))) => {
                for k in ["scope", "token_type", "access_token", "refresh_token"] {
                    f.string(k)?;
                }
                f.uint("expires_in")?;
                Ok(Some(Oidc { id_token: f.string("id_token")? }))
            }
            Some(_) => Err(Bad),
        }
    }
}

fn present(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// Decodes and checks a header (spec/tmtp.md §2, §2.1, §2.2).
///
/// # Errors
/// [`Quit::InvalidHeader`] for anything wrong.
pub fn decode(bytes: &[u8]) -> Result<Header, Quit> {
    let fields: Fields = serde_json::from_slice(bytes).map_err(|_| Quit::InvalidHeader)?;
    let h = from_fields(&fields).map_err(|Bad| Quit::InvalidHeader)?;
    check(&h).then_some(h).ok_or(Quit::InvalidHeader)
}

fn from_fields(f: &Fields) -> Result<Header, Bad> {
    let op = match f.value("op")? {
        Some(Value::Number(n)) => {
            let n = n.as_u64().filter(|n| *n <= 255).ok_or(Bad)?;
            Op::from_number(n).ok_or(Bad)?
        }
        Some(_) => return Err(Bad),
        None => return Err(Bad),
    };
    let h = Header {
        op,
        id: f.string("id")?,
        uid: f.string("uid")?,
        node: f.string("node")?,
        newnode: f.string("newnode")?,
        newalias: f.string("newalias")?,
        gid: f.string("gid")?,
        from: f.string("from")?,
        to: f.string("to")?,
        kind: f.string("type")?,
        act: f.string("act")?,
        datalen: f.int("datalen")?,
        datahead: f.int("datahead")?,
        notelen: f.int("notelen")?,
        notehead: f.int("notehead")?,
        datasum: f.uint("datasum")?,
        notesum: f.uint("notesum")?,
        targets: f.targets("for")?,
        notefor: f.targets("notefor")?,
        fornotself: f.boolean("fornotself")?,
        oidc: f.oidc()?,
    };
    Ok(h)
}

/// The presence rules of spec/tmtp.md §2.2.
fn check(h: &Header) -> bool {
    use Op::*;
    if h.datahead < 0 || h.datalen < h.datahead || h.notehead < 0 || h.notelen < h.notehead {
        return false;
    }
    let for_ok = |list: &Option<Vec<Target>>| {
        list.as_ref()
            .is_none_or(|l| l.iter().all(|t| !t.id.is_empty() && (h.op == OhiEdit || (1..=3).contains(&t.kind))))
    };
    if !for_ok(&h.targets) || !for_ok(&h.notefor) {
        return false;
    }
    let no_data = h.datalen == 0 && h.notelen == 0;
    match h.op {
        TmtpRev | UserEdit => present(&h.id) && no_data,
        Register => present(&h.newnode) && present(&h.newalias) && no_data,
        Login => present(&h.uid) && present(&h.node) && no_data,
        OhiEdit => present(&h.id) && present(&h.kind) && no_data && h.targets.as_ref().is_some_and(|l| !l.is_empty()),
        GroupInvite => present(&h.id) && present(&h.gid) && present(&h.from) && present(&h.to) && h.notelen == 0,
        GroupEdit => present(&h.id) && present(&h.act) && present(&h.gid) && no_data,
        Post => present(&h.id) && h.datalen > 0 && h.notelen == 0 && h.targets.is_some(),
        PostNotify => present(&h.id) && h.datalen > 0 && h.notelen > 0 && h.targets.is_some(),
        Ping => present(&h.id) && present(&h.from) && present(&h.to) && h.notelen == 0,
        Ack => present(&h.id) && present(&h.kind) && no_data,
        Pulse | Quit => no_data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Header {
        decode(s.as_bytes()).unwrap_or_else(|_| panic!("refused: {s}"))
    }
    fn bad(s: &str) {
        assert_eq!(decode(s.as_bytes()), Err(Quit::InvalidHeader), "accepted: {s}");
    }

    #[test]
    fn keys_fold_case_and_the_last_one_wins() {
        assert_eq!(ok(r#"{"Op":0,"Id":"1"}"#).op, Op::TmtpRev);
        assert_eq!(ok(r#"{"OP":0,"iD":"1"}"#).id.as_deref(), Some("1"));
        assert_eq!(ok(r#"{"op":3,"Op":0,"id":"1"}"#).op, Op::TmtpRev);
        assert_eq!(ok(r#"{"op":0,"id":"1","NoId":"x","whatever":[1,{"a":null}]}"#).op, Op::TmtpRev);
        assert_eq!(ok("{\"op\":0,\"id\":\"1\"}  \n").op, Op::TmtpRev);
        let h = ok(r#"{"Op":7,"Id":"zyx","Datalen":15,"Datahead":5,"Datasum":1,"For":[{"Id":"u1","Type":1}]}"#);
        assert_eq!((h.datalen, h.datahead, h.datasum), (15, 5, 1));
        assert_eq!(h.targets, Some(vec![Target { id: "u1".into(), kind: 1 }]));
        assert!(ok(r#"{"op":8,"id":"x","datalen":14,"notelen":5,"for":[],"fornotself":true}"#).fornotself);
        assert_eq!(ok(r#"{"op":4,"id":"0","for":[{"Id":"u"}],"type":"init"}"#).targets.unwrap()[0].kind, 0);
        assert_eq!(
            ok(r#"{"op":1,"newnode":"a","newalias":"_","oidc":{"id_token":"t","expires_in":5}}"#)
                .oidc
                .unwrap()
                .id_token
                .as_deref(),
            Some("t")
        );
        assert_eq!(ok(r#"{"op":12,"id":null}"#).op, Op::Quit);
    }

    #[test]
    fn types_are_strict() {
        bad(r#"{"op":"2","uid":"u","node":"n"}"#);
        bad(r#"{"op":0,"id":123}"#);
        bad(r#"{"op":0.0,"id":"1"}"#);
        bad(r#"{"op":1e0,"id":"1"}"#);
        bad(r#"{"op":-1,"id":"1"}"#);
        bad(r#"{"op":256,"id":"1"}"#);
        bad(r#"{"op":13,"id":"1"}"#);
        bad(r#"{"op":7,"id":"x","datalen":1,"for":[{"id":"u","type":1.0}]}"#);
        bad(r#"{"op":7,"id":"x","datalen":1,"for":[{"id":"u","type":128}]}"#);
        bad(r#"{"op":8,"id":"x","datalen":2,"notelen":1,"for":[],"fornotself":"true"}"#);
        bad(r#"{"op":7,"id":"x","datalen":9223372036854775808,"for":[]}"#);
        bad(r#"{"op":7,"id":"x","datalen":1,"datasum":-1,"for":[]}"#);
        bad(r#"{"op":7,"id":"x","datalen":1,"for":"u"}"#);
        bad(r#"{"op":1,"newnode":"a","newalias":"_","oidc":{"expires_in":-1}}"#);
        bad(r#"{"op":0,"id":"1"}x"#);
        bad(r#"[{"op":0,"id":"1"}]"#);
        bad(r#""op""#);
        bad("null");
        bad(r#"{"id":"1"}"#);
        bad("{\"Op\":12f3");
    }

    #[test]
    fn per_op_presence_rules() {
        bad(r#"{"op":0}"#);
        bad(r#"{"op":0,"id":""}"#);
        bad(r#"{"op":0,"id":"1","datalen":1}"#);
        bad(r#"{"op":1,"newnode":"a"}"#);
        bad(r#"{"op":2,"uid":"noone","noid":"none"}"#);
        bad(r#"{"op":2,"uid":"u","node":"n","datalen":5}"#);
        bad(r#"{"op":4,"id":"0","type":"init","for":[]}"#);
        bad(r#"{"op":4,"id":"0","for":[{"id":"u"}]}"#);
        bad(r#"{"op":5,"id":"0","gid":"g","from":"a"}"#);
        bad(r#"{"op":5,"id":"0","gid":"g","from":"a","to":"b","notelen":1}"#);
        ok(r#"{"op":5,"id":"0","gid":"g","from":"a","to":"b","datalen":5}"#);
        bad(r#"{"op":6,"id":"0","gid":"g"}"#);
        bad(r#"{"op":7,"id":"x","datalen":0,"for":[]}"#);
        bad(r#"{"op":7,"id":"x","datalen":1}"#);
        bad(r#"{"op":7,"id":"x","datalen":1,"for":null}"#);
        bad(r#"{"op":7,"id":"x","datalen":1,"for":[{"type":1}]}"#);
        bad(r#"{"op":7,"id":"x","datalen":1,"for":[{"id":"u","type":4}]}"#);
        bad(r#"{"op":7,"id":"x","datalen":1,"for":[null]}"#);
        bad(r#"{"op":7,"id":"x","datalen":5,"datahead":6,"for":[]}"#);
        bad(r#"{"op":7,"id":"x","datalen":5,"datahead":-1,"for":[]}"#);
        bad(r#"{"op":8,"id":"x","datalen":5,"for":[]}"#);
        bad(r#"{"op":8,"id":"x","datalen":5,"notelen":2,"notehead":3,"for":[]}"#);
        ok(r#"{"op":9,"id":"1","from":"a","to":"b"}"#);
        bad(r#"{"op":9,"id":"1","from":"a"}"#);
        bad(r#"{"op":10,"id":"1"}"#);
        ok(r#"{"op":10,"id":"1","type":"n"}"#);
        bad(r#"{"op":11,"datalen":1}"#);
        bad(r#"{"op":2,"uid":"u","node":"n","for":[{"id":"x"}]}"#);
        ok(r#"{"op":2,"uid":"u","node":"n","for":[{"id":"x","type":1}]}"#);
    }
}
