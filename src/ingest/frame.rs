//! Riemann's TCP framing: a 4-byte big-endian length, then that many bytes of protobuf `Msg`.
//!
//! This module knows bytes only — it never touches a socket and never decodes protobuf — so split
//! reads, several frames in one read and hostile lengths are all testable on plain buffers.
//! The announced length is checked against the limit *before* anything is reserved for it: a peer
//! announcing 4 GiB costs us nothing but a reply.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;

use crate::proto::Msg;

/// Length prefix size.
const HEADER_LEN: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {announced} bytes exceeds the {limit} byte limit")]
    TooLarge { announced: u64, limit: usize },
}

/// Splits a byte stream into frame bodies.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_len: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_len: usize) -> Self {
        Self { max_frame_len }
    }

    /// Takes the next complete frame body out of `buf`, or returns `Ok(None)` when more bytes are
    /// needed. An oversize length is an error as soon as the header is buffered.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let announced = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if announced > self.max_frame_len {
            return Err(FrameError::TooLarge {
                announced: announced as u64,
                limit: self.max_frame_len,
            });
        }
        if buf.len() < HEADER_LEN + announced {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(announced).freeze()))
    }
}

/// Appends one length-prefixed `Msg` to `dst`.
pub fn encode(msg: &Msg, dst: &mut BytesMut) {
    let len = msg.encoded_len();
    dst.reserve(HEADER_LEN + len);
    // A reply never approaches 4 GiB: replies are built by us, bounded by the frame limit.
    dst.put_u32(len as u32);
    // Cannot fail: capacity was reserved above.
    let _ = msg.encode(dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn waits_for_a_whole_header_and_body() {
        let dec = FrameDecoder::new(1024);
        let wire = framed(b"hello");
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.put_u8(*byte);
            let got = dec.decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(got, None, "frame reported complete after {} bytes", i + 1);
            } else {
                assert_eq!(got.as_deref(), Some(&b"hello"[..]));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn several_frames_in_one_read() {
        let dec = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&framed(b"a"));
        buf.extend_from_slice(&framed(b""));
        buf.extend_from_slice(&framed(b"ccc"));
        buf.extend_from_slice(&framed(b"dd")[..3]);
        assert_eq!(dec.decode(&mut buf).unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(dec.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(dec.decode(&mut buf).unwrap().as_deref(), Some(&b"ccc"[..]));
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 3, "partial frame stays buffered");
    }

    #[test]
    fn oversize_length_is_rejected_from_the_header_alone() {
        let dec = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let capacity_before = buf.capacity();
        assert_eq!(
            dec.decode(&mut buf),
            Err(FrameError::TooLarge {
                announced: u32::MAX as u64,
                limit: 16
            })
        );
        assert_eq!(buf.capacity(), capacity_before, "nothing reserved for it");
        assert_eq!(
            FrameError::TooLarge {
                announced: 17,
                limit: 16
            }
            .to_string(),
            "frame of 17 bytes exceeds the 16 byte limit"
        );
    }

    #[test]
    fn limit_is_inclusive() {
        let dec = FrameDecoder::new(3);
        let mut buf = BytesMut::from(&framed(b"abc")[..]);
        assert_eq!(dec.decode(&mut buf).unwrap().as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn encode_round_trips() {
        let msg = Msg {
            ok: Some(true),
            ..Default::default()
        };
        let mut buf = BytesMut::new();
        encode(&msg, &mut buf);
        encode(&msg, &mut buf);
        let dec = FrameDecoder::new(1024);
        for _ in 0..2 {
            let body = dec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(Msg::decode(body).unwrap(), msg);
        }
    }
}
