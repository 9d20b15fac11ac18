//! Canonical JSON bytes: object keys sorted, no whitespace. Idempotency compares bodies by a
//! digest of these bytes, so the same event sent with its keys in another order is the same.

use serde_json::{Map, Value};
use std::ops::Range;

pub fn canonical_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out);
    out
}

/// [`canonical_bytes`] of an object, and where in them the value of its top-level
/// `member` lies. serde_json writes a `Value` the same way (its maps keep keys in byte
/// order, and it adds no whitespace), so that range is the member's JSON text as serde_json
/// would write it: the recorder hands the log an event's data this way, and the log's
/// single writer thread seals the text instead of serialising the data again.
pub fn canonical_with_member(v: &Value, member: &str) -> (Vec<u8>, Option<Range<usize>>) {
    let mut out = Vec::with_capacity(256);
    let span = match v {
        Value::Object(map) => write_object(map, &mut out, Some(member)),
        other => {
            write(other, &mut out);
            None
        }
    };
    (out, span)
}

fn write_object(
    map: &Map<String, Value>,
    out: &mut Vec<u8>,
    member: Option<&str>,
) -> Option<Range<usize>> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    let mut span = None;
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, k).expect("strings serialise");
        out.push(b':');
        let start = out.len();
        write(&map[k], out);
        if member == Some(k.as_str()) {
            span = Some(start..out.len());
        }
    }
    out.push(b'}');
    span
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            write_object(map, out, None);
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other).expect("scalars serialise"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": null}});
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(canonical_bytes(&a), canonical_bytes(&b));
        assert_eq!(
            canonical_bytes(&a),
            br#"{"a":{"x":null,"y":[1,2]},"b":1}"#.to_vec()
        );
    }

    #[test]
    fn a_members_span_is_its_text_as_serde_json_writes_it() {
        let envelope: Value = serde_json::from_str(
            r#"{"type":"t","data":{"z":"\u00e9\"\n","a":[1.5,-2,true,null,{"b":"</"}],"m":{}},"id":"x"}"#,
        )
        .unwrap();
        let (bytes, span) = canonical_with_member(&envelope, "data");
        assert_eq!(bytes, canonical_bytes(&envelope));
        let text = std::str::from_utf8(&bytes[span.unwrap()]).unwrap();
        assert_eq!(text, serde_json::to_string(&envelope["data"]).unwrap());
        assert_eq!(canonical_with_member(&envelope, "absent").1, None);
        assert_eq!(canonical_with_member(&json!([1]), "data").1, None);
    }
}
