//! RFC 5321 mailbox and path parsing with the normalisation mmmail uses for lookups.
//!
//! Grammar: RFC 5321 §4.1.2 (`Path`, `Mailbox`, `Local-part`, `Domain`,
//! `address-literal`), extended by RFC 6531 §3.3 (UTF-8 in atoms, quoted strings and
//! domain labels) when the transaction announced `SMTPUTF8`. Size limits: RFC 5321
//! §4.5.3.1 (local part 64 octets, domain 255 octets, path 256 octets).
//!
//! An [`Address`] keeps the mailbox exactly as the client gave it (RFC 5321 §2.4: local
//! parts are case-sensitive, and a server must not change them): that is what trace
//! fields show. Lookups (boxes, aliases: design.md "Mail rules") use its [`Address::key`]:
//! the local part lowercased and unquoted when its content is a dot-string (`"Bob"@x` is
//! `bob@x`), the domain lowercased in U-label form (IDNA, RFC 5890/5891 with UTS 46
//! mapping), so that `xn--exmple-cua.test` and `Exämple.test` are one domain.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Maximum octets in a local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Maximum octets in a domain (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Maximum octets in a path, including the angle brackets (RFC 5321 §4.5.3.1.3).
pub const MAX_PATH: usize = 256;

/// A mailbox `local@domain` as given, with its lookup form (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    domain: String,
    key_local: String,
    key_domain: String,
}

/// Why an address or path did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not of the RFC 5321 form.
    #[error("bad address syntax")]
    Syntax,
    /// Over one of the RFC 5321 §4.5.3.1 size limits.
    #[error("address too long")]
    TooLong,
    /// Contains non-ASCII but the transaction did not announce SMTPUTF8 (RFC 6531 §3.4).
    #[error("non-ASCII address without SMTPUTF8")]
    NeedsUtf8,
}

impl Address {
    /// Parses an RFC 5321 `Mailbox` (no angle brackets) and normalises it.
    ///
    /// `utf8` allows RFC 6531 UTF-8 characters.
    ///
    /// # Errors
    /// [`AddressError`] when the text is not a mailbox, is over a size limit, or holds
    /// UTF-8 while `utf8` is false.
    pub fn parse(text: &str, utf8: bool) -> Result<Self, AddressError> {
        if !utf8 && !text.is_ascii() {
            return Err(AddressError::NeedsUtf8);
        }
        let at = split_at_sign(text).ok_or(AddressError::Syntax)?;
        let (local_raw, domain_raw) = (&text[..at], &text[at + 1..]);
        let local = parse_local_part(local_raw)?;
        if domain_raw.len() > MAX_DOMAIN {
            return Err(AddressError::TooLong);
        }
        if !is_domain(domain_raw) && !is_address_literal(domain_raw) {
            return Err(AddressError::Syntax);
        }
        if local_raw.len() > MAX_LOCAL_PART {
            return Err(AddressError::TooLong);
        }
        Ok(Self {
            local: local_raw.to_owned(),
            domain: domain_raw.to_owned(),
            key_local: local.to_lowercase(),
            key_domain: domain_key(domain_raw),
        })
    }

    /// The local part as given (quotes included).
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The domain (or `[address-literal]`) as given.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The lookup form `local@domain`: local part lowercased (unquoted where it may be),
    /// domain lowercased in U-label form.
    pub fn key(&self) -> String {
        format!("{}@{}", self.key_local, self.key_domain)
    }

    /// The domain of the lookup form (lowercase, U-labels).
    pub fn key_domain(&self) -> &str {
        &self.key_domain
    }

    /// Every lookup form: [`Address::key`], then, for an internationalised domain, the
    /// same with the domain in A-label (`xn--`) form, since a box may be stored either way.
    pub fn keys(&self) -> Vec<String> {
        let mut keys = vec![self.key()];
        if let Some(ascii) = domain_ascii(&self.key_domain)
            && ascii != self.key_domain
        {
            keys.push(format!("{}@{ascii}", self.key_local));
        }
        keys
    }

    /// The domains of [`Address::keys`], in the same order.
    pub fn key_domains(&self) -> Vec<String> {
        let mut domains = vec![self.key_domain.clone()];
        if let Some(ascii) = domain_ascii(&self.key_domain)
            && ascii != self.key_domain
        {
            domains.push(ascii);
        }
        domains
    }
}

impl fmt::Display for Address {
    /// The mailbox as the client gave it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// The lookup form of a domain: lowercase; an internationalised one in U-labels (UTS 46
/// mapping, as IDNA 2008 lookups do); an address literal only lowercased.
fn domain_key(domain: &str) -> String {
    if domain.starts_with('[') {
        return domain.to_lowercase();
    }
    let (unicode, ok) = idna::domain_to_unicode(domain);
    if ok.is_ok() { unicode } else { domain.to_lowercase() }
}

/// The A-label (ASCII) form of a lookup domain, when it has one.
fn domain_ascii(key_domain: &str) -> Option<String> {
    if key_domain.starts_with('[') || key_domain.is_ascii() {
        return None;
    }
    idna::domain_to_ascii(key_domain).ok()
}

/// The A-label form of an internationalised domain name (RFC 5890 §2.3.2.1; UTS 46
/// processing by the `idna` crate); `None` when `domain` is not a valid one.
pub fn a_label_domain(domain: &str) -> Option<String> {
    idna::domain_to_ascii(domain).ok().filter(|a| is_domain(a))
}

/// A parsed `Reverse-path` / `Forward-path` (RFC 5321 §4.1.2) and what followed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedPath<'a> {
    /// `None` for the null path `<>`.
    pub address: Option<Address>,
    /// The bare word between the brackets when it has no `@` (RCPT `<Postmaster>`).
    pub bare_local: Option<String>,
    /// Text after the closing `>`, with leading spaces removed (the ESMTP parameters).
    pub rest: &'a str,
}

/// Parses `<[A-d-l:]Mailbox>` or `<>` at the start of `text`; a source route (A-d-l) is
/// accepted and dropped (RFC 5321 §4.1.2, Appendix C). A bare local part without a
/// domain (`<postmaster>`) is returned in [`ParsedPath::bare_local`] for the caller to
/// decide on (RFC 5321 §4.5.1).
///
/// # Errors
/// [`AddressError`] for a missing bracket, bad mailbox, or a path over 256 octets.
pub fn parse_path(text: &str, utf8: bool) -> Result<ParsedPath<'_>, AddressError> {
    let inner_start = text.strip_prefix('<').ok_or(AddressError::Syntax)?;
    let close = find_path_end(inner_start).ok_or(AddressError::Syntax)?;
    if close + 2 > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    let mut inner = &inner_start[..close];
    let rest = inner_start[close + 1..].trim_start_matches(' ');
    if inner.is_empty() {
        return Ok(ParsedPath { address: None, bare_local: None, rest });
    }
    if inner.starts_with('@') {
        // Source route: "@a,@b:mailbox". Each hop must be "@" Domain.
        let colon = inner.find(':').ok_or(AddressError::Syntax)?;
        for hop in inner[..colon].split(',') {
            let d = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
            if !is_domain(d) && !is_address_literal(d) {
                return Err(AddressError::Syntax);
            }
        }
        inner = &inner[colon + 1..];
    }
    if split_at_sign(inner).is_none() {
        if !utf8 && !inner.is_ascii() {
            return Err(AddressError::NeedsUtf8);
        }
        if is_dot_string(inner) {
            return Ok(ParsedPath { address: None, bare_local: Some(inner.to_lowercase()), rest });
        }
        return Err(AddressError::Syntax);
    }
    let address = Address::parse(inner, utf8)?;
    Ok(ParsedPath { address: Some(address), bare_local: None, rest })
}

/// Index of the `>` closing a path, skipping quoted strings.
fn find_path_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

/// Index of the `@` separating local part and domain (the last one outside quotes).
fn split_at_sign(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    let mut at = None;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '@' if !quoted => at = Some(i),
            _ => {}
        }
    }
    if quoted { None } else { at }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || (!c.is_ascii() && !c.is_control())
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// Returns the normalised local part: a dot-string as is; a quoted string unquoted when
/// its content is a dot-string, otherwise kept quoted.
fn parse_local_part(s: &str) -> Result<String, AddressError> {
    if is_dot_string(s) {
        return Ok(s.to_owned());
    }
    let inner = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')).ok_or(AddressError::Syntax)?;
    let mut content = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) if (' '..='~').contains(&e) => content.push(e),
                _ => return Err(AddressError::Syntax),
            },
            '"' => return Err(AddressError::Syntax),
            c if (' '..='~').contains(&c) || (!c.is_ascii() && !c.is_control()) => content.push(c),
            _ => return Err(AddressError::Syntax),
        }
    }
    if is_dot_string(&content) { Ok(content) } else { Ok(s.to_owned()) }
}

/// RFC 5321 `Domain` (with RFC 6531 U-labels): dot-separated labels of letters, digits and
/// inner hyphens, each 1–63 octets.
pub fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DOMAIN
        && s.split('.').all(|label| {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric());
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(ok_char)
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// RFC 5321 `address-literal`: `[IPv4]` or `[IPv6:addr]`. General literals are refused.
pub fn is_address_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().is_ok(),
        _ => inner.parse::<Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailboxes() {
        // (as given, lookup form)
        let ok: &[(&str, &str)] = &[
            ("bob@example.org", "bob@example.org"),
            ("Bob.Smith@Example.ORG", "bob.smith@example.org"),
            ("\"bob\"@example.org", "bob@example.org"),
            ("\"bob smith\"@example.org", "\"bob smith\"@example.org"),
            ("\"a\\\"b\"@x.org", "\"a\\\"b\"@x.org"),
            ("x+tag@[127.0.0.1]", "x+tag@[127.0.0.1]"),
            ("x@[IPv6:::1]", "x@[ipv6:::1]"),
            ("a@b", "a@b"),
            ("a@b-c.d", "a@b-c.d"),
            ("Bounce+ABC=Def@Sender.Example", "bounce+abc=def@sender.example"),
        ];
        for (input, want) in ok {
            let a = Address::parse(input, false).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(a.to_string(), *input, "RFC 5321 §2.4: kept exactly as given");
            assert_eq!(a.key(), *want, "{input}");
        }
        let bad = [
            "",
            "bob",
            "@example.org",
            "bob@",
            "bob@@x",
            "bob..x@y",
            ".bob@y",
            "bob.@y",
            "bob@-x.org",
            "bob@x-.org",
            "bob@x..org",
            "bob@x.org.",
            "bo b@x",
            "\"unterminated@x",
            "bob@[1.2.3]",
            "bob@[tag:stuff]",
            "b\0b@x",
            "bob@ex ample",
        ];
        for input in bad {
            assert_eq!(Address::parse(input, false), Err(AddressError::Syntax), "{input:?}");
        }
    }

    #[test]
    fn limits() {
        let local = "a".repeat(64);
        assert!(Address::parse(&format!("{local}@x.org"), false).is_ok());
        assert_eq!(Address::parse(&format!("a{local}@x.org"), false), Err(AddressError::TooLong));
        let label = "d".repeat(63);
        let long_domain = [label.as_str(); 4].join(".") + ".org"; // 259 octets
        assert_eq!(Address::parse(&format!("a@{long_domain}"), false), Err(AddressError::TooLong));
        let label64 = "d".repeat(64);
        assert_eq!(Address::parse(&format!("a@{label64}.org"), false), Err(AddressError::Syntax));
    }

    #[test]
    fn utf8_needs_smtputf8() {
        assert_eq!(Address::parse("jösé@example.org", false), Err(AddressError::NeedsUtf8));
        let a = Address::parse("JÖSÉ@Exämple.org", true).unwrap();
        assert_eq!((a.to_string().as_str(), a.key().as_str()), ("JÖSÉ@Exämple.org", "jösé@exämple.org"));
    }

    /// RFC 5890/5891: an A-label and its U-label are the same domain.
    #[test]
    fn a_labels_and_u_labels_are_one_domain() {
        let u = Address::parse("jösé@exämple.test", true).unwrap();
        let a = Address::parse("jösé@xn--exmple-cua.test", true).unwrap();
        let upper = Address::parse("JÖSÉ@XN--EXMPLE-CUA.TEST", true).unwrap();
        assert_eq!(u.key(), "jösé@exämple.test");
        assert_eq!(a.key(), u.key());
        assert_eq!(upper.key(), u.key());
        assert_eq!(u.keys(), vec!["jösé@exämple.test".to_owned(), "jösé@xn--exmple-cua.test".to_owned()]);
        assert_eq!(Address::parse("bob@example.org", false).unwrap().keys(), vec!["bob@example.org".to_owned()]);
    }

    #[test]
    fn paths() {
        let p = parse_path("<bob@x.org> SIZE=10 BODY=8BITMIME", false).unwrap();
        assert_eq!(p.address.unwrap().to_string(), "bob@x.org");
        assert_eq!(p.rest, "SIZE=10 BODY=8BITMIME");
        let p = parse_path("<>", false).unwrap();
        assert_eq!((p.address, p.bare_local, p.rest), (None, None, ""));
        let p = parse_path("<@relay.one,@relay.two:Bob@X.org>", false).unwrap();
        assert_eq!(p.address.unwrap().to_string(), "Bob@X.org");
        let p = parse_path("<Postmaster>", false).unwrap();
        assert_eq!(p.bare_local.as_deref(), Some("postmaster"));
        let p = parse_path("<\"a>b\"@x.org>", false).unwrap();
        assert_eq!(p.address.unwrap().to_string(), "\"a>b\"@x.org");
        for bad in ["bob@x.org", "<bob@x.org", "<@relay:>", "<@bad..relay:bob@x>", "<a b@x>"] {
            assert!(parse_path(bad, false).is_err(), "{bad}");
        }
        let long = format!("<{}@{}.org>", "a".repeat(64), vec!["d".repeat(60); 4].join("."));
        assert!(long.len() > MAX_PATH);
        assert_eq!(parse_path(&long, false), Err(AddressError::TooLong));
    }
}
