//! The server's JSON output, byte for byte as mnm writes it (spec/tmtp.md §4.1): compact,
//! object keys in ascending byte order (nested objects too), strings escaped the way Go's
//! `encoding/json` does (`<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes, control
//! characters as `\u00xx` except `\n`, `\r`, `\t`). `headsum` (§4.3) is computed over
//! exactly these bytes, so they must not differ.

use serde_json::Value;

/// Appends the canonical encoding of `v` to `out`.
///
/// Numbers are written as serde_json holds them (the server only emits integers).
pub fn encode_into(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                encode_into(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                if let Some(v) = map.get(k) {
                    encode_into(v, out);
                }
            }
            out.push(b'}');
        }
    }
}

/// The canonical encoding of `v`.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode_into(v, &mut out);
    out
}

fn string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes());
            }
            c if u32::from(c) < 0x20 => {
                let b = u32::from(c) as u8;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorted_compact_go_escaped() {
        let v = json!({"op":"tmtprev","id":"1","authby":[{"token":["t","c&d"],"label":"X"}],"n":-5});
        assert_eq!(
            String::from_utf8(encode(&v)).unwrap(),
            r#"{"authby":[{"label":"X","token":["t","c\u0026d"]}],"id":"1","n":-5,"op":"tmtprev"}"#
        );
        let s = json!("a\"b\\c\nd\re\tf\u{8}g\u{1f}<>&\u{2028}\u{2029}é×😀");
        assert_eq!(
            String::from_utf8(encode(&s)).unwrap(),
            "\"a\\\"b\\\\c\\nd\\re\\tf\\u0008g\\u001f\\u003c\\u003e\\u0026\\u2028\\u2029é×😀\""
        );
        // Keys sort by bytes: upper case before lower case.
        assert_eq!(String::from_utf8(encode(&json!({"b":1,"Id":2,"a":3}))).unwrap(), r#"{"Id":2,"a":3,"b":1}"#);
    }
}
