//! Redaction for recordings that leave the device: document bodies and blob bytes
//! replaced by placeholders of the same length and shape, so the session replays the same
//! way without the data.
//!
//! A body keeps its keys, its structure and every blob reference (the replay fetches the
//! same blobs); each text value becomes as many `x` bytes, each byte string as many
//! zeros, each number the smallest of its encoded width (so the body stays canonical and
//! the same size), booleans and null stay. Redacting a placeholder gives it back
//! unchanged, which is what lets a replay compare its outputs with the recorded ones.

use bytes::Bytes;

use crate::cbor::{self, major};
use crate::{Body, Frame, Input, Output, Request, Response, Revision, StorageOp, StorageReply};

/// The placeholder of `body`: same length, same keys and structure, same blob
/// references, no content. A body that cannot be walked becomes empty.
pub fn redact_body(body: &Body) -> Body {
    let mut out = Vec::with_capacity(body.len());
    let mut pos = 0;
    if value(body.as_bytes(), &mut pos, &mut out).is_some()
        && pos == body.len()
        && let Ok(redacted) = Body::from_cbor(out)
    {
        return redacted;
    }
    Body::empty()
}

/// Walks one item at `pos`, writing its placeholder to `out`.
fn value(buf: &[u8], pos: &mut usize, out: &mut Vec<u8>) -> Option<()> {
    let start = *pos;
    let head = cbor::read_head(buf, pos).ok()?;
    match head.major {
        major::UINT | major::NINT => {
            // The smallest argument with the same head width keeps the body canonical.
            let arg = match *pos - start {
                1 => 0,
                2 => 24,
                3 => 256,
                5 => 1 << 16,
                _ => 1 << 32,
            };
            cbor::write_head(out, head.major, arg);
        }
        major::BYTES | major::TEXT => {
            let len = usize::try_from(head.arg).ok()?;
            let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
            out.extend_from_slice(&buf[start..*pos]);
            let fill = if head.major == major::TEXT { b'x' } else { 0 };
            out.resize(out.len() + len, fill);
            *pos = end;
        }
        major::ARRAY => {
            out.extend_from_slice(&buf[start..*pos]);
            for _ in 0..head.arg {
                value(buf, pos, out)?;
            }
        }
        major::MAP => {
            let entries = *pos;
            if is_blob_reference(buf, *pos, head.arg)? {
                for _ in 0..head.arg * 2 {
                    skip(buf, pos)?;
                }
                out.extend_from_slice(&buf[start..*pos]);
                return Some(());
            }
            *pos = entries;
            out.extend_from_slice(&buf[start..*pos]);
            for _ in 0..head.arg {
                let key = *pos;
                skip(buf, pos)?;
                out.extend_from_slice(&buf[key..*pos]);
                value(buf, pos, out)?;
            }
        }
        major::SIMPLE => match *pos - start {
            // The shortest float that is exactly representable only at this width.
            3 => out.extend_from_slice(&[0xf9, 0, 0]),
            5 => {
                out.push(0xfa);
                out.extend_from_slice(&0.1f32.to_bits().to_be_bytes());
            }
            9 => {
                out.push(0xfb);
                out.extend_from_slice(&0.1f64.to_bits().to_be_bytes());
            }
            _ => out.extend_from_slice(&buf[start..*pos]),
        },
        _ => return None,
    }
    Some(())
}

/// Skips one item at `pos`.
fn skip(buf: &[u8], pos: &mut usize) -> Option<()> {
    let head = cbor::read_head(buf, pos).ok()?;
    match head.major {
        major::BYTES | major::TEXT => {
            let len = usize::try_from(head.arg).ok()?;
            *pos = pos.checked_add(len).filter(|e| *e <= buf.len())?;
        }
        major::ARRAY => {
            for _ in 0..head.arg {
                skip(buf, pos)?;
            }
        }
        major::MAP => {
            for _ in 0..head.arg * 2 {
                skip(buf, pos)?;
            }
        }
        major::TAG => skip(buf, pos)?,
        _ => {}
    }
    Some(())
}

/// Whether the map of `n` entries at `pos` is a blob reference (`"@type": "blob"`).
fn is_blob_reference(buf: &[u8], mut pos: usize, n: u64) -> Option<bool> {
    for _ in 0..n {
        let key = pos;
        skip(buf, &mut pos)?;
        let val = pos;
        skip(buf, &mut pos)?;
        if buf[key..val] == *b"\x65@type" && buf[val..pos] == *b"\x64blob" {
            return Some(true);
        }
    }
    Some(false)
}

fn revision(r: &Revision) -> Revision {
    Revision {
        body: redact_body(&r.body),
        ..r.clone()
    }
}

fn zeros(bytes: &Bytes) -> Bytes {
    Bytes::from(vec![0; bytes.len()])
}

/// `frame` with its document bodies and blob bytes redacted (any other frame, or one
/// that does not decode, as it is).
pub fn redact_frame(frame: &Bytes) -> Bytes {
    let limits = super::doctor::generous_limits();
    match Frame::decode_bytes(frame, &limits) {
        Ok(Frame::Request(
            n,
            Request::Revs {
                collection,
                docs,
                unavailable,
                oversized,
            },
        )) => {
            let docs = docs
                .into_iter()
                .map(|mut d| {
                    d.revisions = d.revisions.iter().map(revision).collect();
                    d
                })
                .collect();
            Frame::Request(
                n,
                Request::Revs {
                    collection,
                    docs,
                    unavailable,
                    oversized,
                },
            )
            .encode()
        }
        Ok(Frame::Response(n, Response::BlobChunk(bytes))) => {
            Frame::Response(n, Response::BlobChunk(zeros(&bytes))).encode()
        }
        _ => frame.clone(),
    }
}

/// `input` with the document bodies and blob bytes it carries redacted.
pub fn redact_input(input: &Input) -> Input {
    match input {
        Input::Frame(frame) => Input::Frame(redact_frame(frame)),
        Input::Storage(id, reply) => Input::Storage(
            *id,
            match reply {
                StorageReply::Revisions(revs) => {
                    StorageReply::Revisions(revs.iter().map(|r| r.as_ref().map(revision)).collect())
                }
                StorageReply::Leaves(docs) => StorageReply::Leaves(
                    docs.iter()
                        .map(|leaves| leaves.iter().map(revision).collect())
                        .collect(),
                ),
                StorageReply::BlobBytes(Some(bytes)) => StorageReply::BlobBytes(Some(zeros(bytes))),
                other => other.clone(),
            },
        ),
        other => other.clone(),
    }
}

/// `output` with the document bodies and blob bytes it carries redacted: what a
/// redacted recording digests, while recording and while replaying.
pub fn redact_output(output: &Output) -> Output {
    match output {
        Output::Send(frame) => Output::Send(redact_frame(frame)),
        Output::Storage(
            id,
            StorageOp::InsertRevisions {
                collection,
                inserts,
            },
        ) => {
            let inserts = inserts
                .iter()
                .map(|i| {
                    let mut i = i.clone();
                    i.revisions = i.revisions.iter().map(revision).collect();
                    i
                })
                .collect();
            Output::Storage(
                *id,
                StorageOp::InsertRevisions {
                    collection: collection.clone(),
                    inserts,
                },
            )
        }
        Output::Storage(id, StorageOp::WriteBlob { transfer, bytes }) => Output::Storage(
            *id,
            StorageOp::WriteBlob {
                transfer: *transfer,
                bytes: zeros(bytes),
            },
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Body {
        Body::from_json_str(json).unwrap()
    }

    #[test]
    fn a_placeholder_keeps_length_keys_structure_and_blob_references_but_no_value() {
        let original = body(
            r#"{"name": "Ada Lövelace", "age": 36, "debt": -70000, "ratio": 0.618,
                "small": 1.5, "tags": ["secret", true, null], "n": 5, "big": 18446744073709551615,
                "photo": {"@type": "blob", "digest": "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "length": 0, "content_type": "image/jpeg"}}"#,
        );
        let redacted = redact_body(&original);
        assert_eq!(redacted.len(), original.len());
        let json = redacted.to_json();
        assert_eq!(json["name"], "xxxxxxxxxxxxx", "as many bytes, ö is two");
        assert_eq!(json["tags"], serde_json::json!(["xxxxxx", true, null]));
        assert_eq!(
            (json["age"].clone(), json["n"].clone()),
            (24.into(), 0.into())
        );
        assert_ne!(json["debt"], -70000);
        assert_ne!(json["ratio"], 0.618);
        assert_eq!(
            json["photo"],
            original.to_json()["photo"],
            "blob references stay"
        );
        let text = String::from_utf8_lossy(redacted.as_bytes()).into_owned();
        assert!(!text.contains("Ada") && !text.contains("secret"), "{text}");
        // A placeholder redacts to itself: what lets a replay compare its outputs.
        assert_eq!(redact_body(&redacted), redacted);
    }

    proptest::proptest! {
        #[test]
        fn any_body_keeps_its_length_and_redacts_idempotently(
            n in proptest::num::i64::ANY, f in proptest::num::f64::NORMAL, s in ".{0,40}",
        ) {
            let original = Body::from_serialize(&serde_json::json!({"n": n, "f": f, "s": s, "a": [n, s]})).unwrap();
            let redacted = redact_body(&original);
            proptest::prop_assert_eq!(redacted.len(), original.len());
            proptest::prop_assert_eq!(redact_body(&redacted), redacted);
        }
    }
}
