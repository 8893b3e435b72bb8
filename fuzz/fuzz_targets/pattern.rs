//! The `*`/`?` matcher of aliases, `nofrom` and mmstat (mmmail): input is a pattern and
//! a text split at the first NUL. Matching is linear (a slow input is a hang to
//! libFuzzer), a pattern matches its own text, and what matches starts with the
//! pattern's literal prefix.
#![no_main]

use common::pattern::{literal_prefix, matches, matches_case};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let (pattern, text) = input.split_once('\0').unwrap_or((input, ""));
    let _ = matches(pattern, text);
    if matches_case(pattern, text) {
        assert!(text.starts_with(literal_prefix(pattern)), "{pattern:?} {text:?}");
    }
    if !pattern.contains(['*', '?']) {
        assert!(matches_case(pattern, pattern));
    }
    assert!(matches_case("*", text));
});
