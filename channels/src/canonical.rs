//! Canonical JSON as TUF signs it (the securesystemslib / OLPC form): object keys sorted by their
//! bytes, no insignificant whitespace, strings escaping only `"` and `\`, integers only.
//!
//! Signatures cover these bytes, so the signer and the verifier must produce exactly the same
//! ones; both call [`to_canonical`] on the parsed value, never a pretty-printed file.

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("canonical JSON has no floating-point numbers, found {0}: TUF metadata uses integers only")]
pub struct CanonicalError(pub String);

pub fn to_canonical(v: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::new();
    write(v, &mut out)?;
    Ok(out)
}

fn write(v: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                out.extend_from_slice(n.to_string().as_bytes());
            } else {
                return Err(CanonicalError(n.to_string()));
            }
        }
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out)?;
            }
            out.push(b']');
        }
        Value::Object(m) => {
            // Sorted here rather than trusting the map's order: serde_json keeps insertion order
            // when any crate in the build enables its `preserve_order` feature.
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                if let Some(x) = m.get(k) {
                    write(x, out)?;
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, 2, {"z": null, "a": true}], "a": "x\"y\\z\n" }"#)
                .unwrap();
        assert_eq!(
            String::from_utf8(to_canonical(&v).unwrap()).unwrap(),
            "{\"a\":\"x\\\"y\\\\z\n\",\"b\":[1,2,{\"a\":true,\"z\":null}]}"
        );
    }

    #[test]
    fn refuses_floats_and_orders_by_bytes() {
        assert!(to_canonical(&json!({"x": 1.5})).is_err());
        assert_eq!(to_canonical(&json!(-3)).unwrap(), b"-3");
        // "Z" (0x5a) sorts before "a" (0x61), and "é" after both.
        assert_eq!(
            to_canonical(&json!({"a": 1, "é": 2, "Z": 3})).unwrap(),
            "{\"Z\":3,\"a\":1,\"é\":2}".as_bytes()
        );
    }
}
