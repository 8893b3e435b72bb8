//! mmmail's `*`/`?` wildcard patterns, used by the `alias` and `nofrom` tables
//! (design.md "Mail rules", case-insensitive: [`matches`]) and by stat key patterns
//! (spec/mail.md §5.2, case-sensitive: [`matches_case`]).
//!
//! `*` matches any run of characters (including none), `?` exactly one character; every
//! other character matches itself, ASCII case-insensitively. There is no escape
//! character. Matching is anchored at both ends and runs in O(len(pattern) × len(text))
//! worst case (greedy star with single backtrack point), so hostile patterns or
//! addresses cannot make it explode.

use std::cmp::Ordering;

/// Whether `text` matches the whole of `pattern`.
///
/// Comparison is ASCII case-insensitive; `?` consumes one Unicode scalar value.
///
/// ```
/// use common::pattern::matches;
/// assert!(matches("*@example.org", "bob@example.org"));
/// assert!(matches("b?b@*", "BOB@example.org"));
/// assert!(!matches("*@example.org", "bob@example.org.evil"));
/// ```
pub fn matches(pattern: &str, text: &str) -> bool {
    matches_by(pattern, text, |p, t| p.eq_ignore_ascii_case(&t))
}

/// Whether `text` matches the whole of `pattern`, comparing characters exactly (stat
/// keys, spec/mail.md §5.2).
///
/// ```
/// use common::pattern::matches_case;
/// assert!(matches_case("mmsmtpd|who|*", "mmsmtpd|who|192.0.2.7"));
/// assert!(!matches_case("MMSMTPD|*", "mmsmtpd|total|connections"));
/// ```
pub fn matches_case(pattern: &str, text: &str) -> bool {
    matches_by(pattern, text, |p, t| p == t)
}

/// The literal text before the first wildcard of `pattern` (all of it when it has
/// none): every key `pattern` matches with [`matches_case`] starts with it.
pub fn literal_prefix(pattern: &str) -> &str {
    pattern.find(['*', '?']).map_or(pattern, |i| &pattern[..i])
}

fn matches_by(pattern: &str, text: &str, same: impl Fn(char, char) -> bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` seen in the pattern and the text index it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || same(c, t[ti]) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last star swallow one more character and retry after it.
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Orders patterns from most to least specific, the rule that picks the winning alias
/// (spec/mail.md §3.4 step 6): more literal (non-wildcard) characters first; on a tie,
/// fewer `*`; on a tie, the smaller pattern in byte order.
pub fn specificity_order(a: &str, b: &str) -> Ordering {
    fn literals(p: &str) -> usize {
        p.chars().filter(|c| *c != '*' && *c != '?').count()
    }
    fn stars(p: &str) -> usize {
        p.chars().filter(|c| *c == '*').count()
    }
    literals(b).cmp(&literals(a)).then_with(|| stars(a).cmp(&stars(b))).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything@at.all", true),
            ("?", "", false),
            ("?", "x", true),
            ("?", "é", true),
            ("??", "x", false),
            ("a*b", "ab", true),
            ("a*b", "axxxb", true),
            ("a*b", "axxxbc", false),
            ("*@example.org", "mmondor@example.org", true),
            ("*@example.org", "mmondor@EXAMPLE.ORG", true),
            ("*@example.org", "mmondor@sub.example.org", false),
            ("*@*.example.org", "mmondor@sub.example.org", true),
            ("sales-*@example.org", "sales-eu@example.org", true),
            ("sales-*@example.org", "sales@example.org", false),
            ("*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("127.0.0.*", "127.0.0.1", true),
            ("127.0.0.?", "127.0.0.12", false),
            ("localhost", "LocalHost", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(matches(p, t), *want, "pattern {p:?} text {t:?}");
        }
    }

    #[test]
    fn pathological_pattern_is_fast_enough_to_finish() {
        let p = "*a".repeat(200) + "b";
        let t = "a".repeat(5000);
        assert!(!matches(&p, &t));
    }

    #[test]
    fn most_specific_first() {
        let mut v = vec!["*@example.org", "*", "sales-*@example.org", "?ales-*@example.org", "s*@example.org"];
        v.sort_by(|a, b| specificity_order(a, b));
        assert_eq!(v, ["sales-*@example.org", "?ales-*@example.org", "s*@example.org", "*@example.org", "*"]);
        // tie on literals: fewer stars wins, then byte order ('*' < '?')
        let mut w = vec!["a*b*", "a?b*", "a*?b"];
        w.sort_by(|a, b| specificity_order(a, b));
        assert_eq!(w, ["a*?b", "a?b*", "a*b*"]);
    }
}
