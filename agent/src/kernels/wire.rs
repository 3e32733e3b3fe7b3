//! The Jupyter messaging protocol's wire format (v5.3), as ipykernel speaks it over
//! ZeroMQ: every message is the routing identities, the `<IDS|MSG>` delimiter, the hex
//! HMAC-SHA256 of the four JSON frames that follow (header, parent header, metadata,
//! content), those four frames, then any binary buffers.

use std::time::SystemTime;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use zeromq::ZmqMessage;

/// Separates the routing identities from the message proper.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";
/// The protocol version this agent speaks.
pub const PROTOCOL_VERSION: &str = "5.3";

/// One Jupyter message, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub identities: Vec<Bytes>,
    pub header: Value,
    pub parent_header: Value,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Bytes>,
}

impl Message {
    pub fn msg_type(&self) -> &str {
        self.header["msg_type"].as_str().unwrap_or("")
    }

    pub fn msg_id(&self) -> &str {
        self.header["msg_id"].as_str().unwrap_or("")
    }

    /// The `msg_id` of the request that caused this message, if any.
    pub fn parent_id(&self) -> Option<&str> {
        self.parent_header.get("msg_id")?.as_str().filter(|id| !id.is_empty())
    }
}

/// Why frames received from a kernel are not a message this agent accepts.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("no <IDS|MSG> delimiter")]
    NoDelimiter,
    #[error("only {0} frames after the delimiter (need a signature and four JSON frames)")]
    TooFewFrames(usize),
    #[error("the signature does not match (wrong key, or the message was altered)")]
    BadSignature,
    #[error("the {0} frame is not a JSON object: {1}")]
    NotJson(&'static str, String),
}

/// One client session with a kernel: the connection file's key signs every message,
/// and every request's header names the session.
#[derive(Clone)]
pub struct Session {
    key: Vec<u8>,
    id: String,
}

impl Session {
    /// A new session (a fresh session id) signing with `key`; an empty key means
    /// unsigned messages, as Jupyter defines it.
    pub fn new(key: &[u8]) -> Session {
        Session { key: key.to_vec(), id: uuid::Uuid::new_v4().to_string() }
    }

    /// A new request of this session: no parent, no metadata.
    pub fn request(&self, msg_type: &str, content: Value) -> Message {
        Message {
            identities: Vec::new(),
            header: json!({
                "msg_id": uuid::Uuid::new_v4().to_string(),
                "session": self.id,
                "username": "atelier",
                "date": rfc3339(SystemTime::now()),
                "msg_type": msg_type,
                "version": PROTOCOL_VERSION,
            }),
            parent_header: json!({}),
            metadata: json!({}),
            content,
            buffers: Vec::new(),
        }
    }

    /// The hex HMAC-SHA256 of the frames, or "" without a key.
    pub fn sign(&self, frames: &[&[u8]]) -> String {
        if self.key.is_empty() {
            return String::new();
        }
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else { return String::new() };
        for frame in frames {
            mac.update(frame);
        }
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The frames of `message`, signed.
    pub fn encode(&self, message: &Message) -> ZmqMessage {
        let json = [&message.header, &message.parent_header, &message.metadata, &message.content]
            .map(|v| Bytes::from(serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())));
        let signature = self.sign(&[&json[0], &json[1], &json[2], &json[3]]);
        let mut frames: Vec<Bytes> = message.identities.clone();
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(Bytes::from(signature));
        frames.extend(json);
        frames.extend(message.buffers.iter().cloned());
        let mut zmq = ZmqMessage::from(frames[0].clone());
        for frame in frames.into_iter().skip(1) {
            zmq.push_back(frame);
        }
        zmq
    }

    /// Parses and checks the frames a kernel sent.
    pub fn decode(&self, frames: Vec<Bytes>) -> Result<Message, WireError> {
        let at = frames.iter().position(|f| f.as_ref() == DELIMITER).ok_or(WireError::NoDelimiter)?;
        let mut frames = frames;
        let rest = frames.split_off(at);
        if rest.len() < 6 {
            return Err(WireError::TooFewFrames(rest.len() - 1));
        }
        let (signature, json) = (&rest[1], &rest[2..6]);
        let expected = self.sign(&[&json[0], &json[1], &json[2], &json[3]]);
        if !self.key.is_empty() && !constant_time_eq(expected.as_bytes(), signature) {
            return Err(WireError::BadSignature);
        }
        let parse = |name: &'static str, frame: &Bytes| -> Result<Value, WireError> {
            match serde_json::from_slice::<Value>(frame) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(other) => Err(WireError::NotJson(name, format!("got {other}"))),
                Err(err) => Err(WireError::NotJson(name, err.to_string())),
            }
        };
        Ok(Message {
            identities: frames,
            header: parse("header", &json[0])?,
            parent_header: parse("parent_header", &json[1])?,
            metadata: parse("metadata", &json[2])?,
            content: parse("content", &json[3])?,
            buffers: rest[6..].to_vec(),
        })
    }
}

/// Equal contents, in a time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `2024-05-01T12:00:00.000000Z`, the form Jupyter dates take.
pub fn rfc3339(t: SystemTime) -> String {
    let d = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn frames(message: ZmqMessage) -> Vec<Bytes> {
        message.into_vec()
    }

    #[test]
    fn a_signed_message_decodes_to_itself() {
        let session = Session::new(b"secret-key");
        let mut message = session.request("execute_request", json!({"code": "1+1"}));
        message.buffers.push(Bytes::from_static(b"\x00\x01binary"));
        let decoded = session.decode(frames(session.encode(&message))).expect("decodes");
        assert_eq!(decoded, message);
        assert_eq!(decoded.msg_type(), "execute_request");
        assert_eq!(decoded.parent_id(), None);
    }

    #[test]
    fn the_frame_layout_is_delimiter_signature_then_four_json_frames() {
        let session = Session::new(b"k");
        let mut message = session.request("kernel_info_request", json!({}));
        message.identities.push(Bytes::from_static(b"peer"));
        let f = frames(session.encode(&message));
        assert_eq!(f.len(), 7);
        assert_eq!(f[0].as_ref(), b"peer");
        assert_eq!(f[1].as_ref(), DELIMITER);
        assert_eq!(f[2].len(), 64, "hex SHA-256");
        let header: Value = serde_json::from_slice(&f[3]).expect("header");
        assert_eq!(header["msg_type"], "kernel_info_request");
        assert_eq!(header["version"], "5.3");
        assert_eq!(header["username"], "atelier");
        assert_eq!(f[4].as_ref(), b"{}");
        assert_eq!(f[5].as_ref(), b"{}");
        assert_eq!(f[6].as_ref(), b"{}");
        // The signature covers exactly the four JSON frames.
        let expected = session.sign(&[&f[3], &f[4], &f[5], &f[6]]);
        assert_eq!(f[2].as_ref(), expected.as_bytes());
        let decoded = session.decode(f).expect("decodes");
        assert_eq!(decoded.identities, vec![Bytes::from_static(b"peer")]);
    }

    #[test]
    fn tampered_content_or_a_wrong_key_fails_the_signature() {
        let session = Session::new(b"key");
        let message = session.request("execute_request", json!({"code": "1+1"}));
        let mut f = frames(session.encode(&message));
        f[5] = Bytes::from_static(br#"{"code":"import os; os.system('rm -rf /')"}"#);
        assert_eq!(session.decode(f), Err(WireError::BadSignature));

        let other = Session::new(b"other key");
        assert_eq!(other.decode(frames(session.encode(&message))), Err(WireError::BadSignature));
    }

    #[test]
    fn malformed_frames_are_refused() {
        let session = Session::new(b"key");
        assert_eq!(session.decode(vec![Bytes::from_static(b"x")]), Err(WireError::NoDelimiter));
        assert_eq!(
            session.decode(vec![Bytes::from_static(DELIMITER), Bytes::from_static(b"sig")]),
            Err(WireError::TooFewFrames(1))
        );
        let not_json: Vec<Bytes> = [b"not json".as_slice(), b"{}", b"{}", b"{}"].map(Bytes::copy_from_slice).into();
        let signature = session.sign(&[&not_json[0], &not_json[1], &not_json[2], &not_json[3]]);
        let mut f = vec![Bytes::from_static(DELIMITER), Bytes::from(signature)];
        f.extend(not_json);
        assert!(matches!(session.decode(f), Err(WireError::NotJson("header", _))));
    }

    #[test]
    fn replies_name_their_parent() {
        let session = Session::new(b"key");
        let request = session.request("execute_request", json!({}));
        let mut reply = session.request("execute_reply", json!({"status": "ok"}));
        reply.parent_header = request.header.clone();
        let decoded = session.decode(frames(session.encode(&reply))).expect("decodes");
        assert_eq!(decoded.parent_id(), Some(request.msg_id()));
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456)), "2023-11-14T22:13:20.123456Z");
    }
}
