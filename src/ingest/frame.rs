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
    /// A TLS ClientHello's first bytes read as a length of ~369 MB: say what it is instead.
    #[error("looks like TLS (statecast's Riemann TCP port speaks plain protobuf)")]
    LooksLikeTls,
    #[error("looks like HTTP (statecast's Riemann TCP port speaks protobuf; HTTP is on the --http port)")]
    LooksLikeHttp,
}

/// What an oversize length prefix really is, when it is the start of another protocol. Only
/// consulted for lengths past the limit, so no valid frame is ever misread.
fn classify_oversize(header: &[u8], announced: usize, limit: usize) -> FrameError {
    // TLS record: handshake (0x16), version 3.x (SSL 3.0 to TLS 1.3 all say 3.0-3.4).
    if header[0] == 0x16 && header[1] == 0x03 && header[2] <= 0x04 {
        return FrameError::LooksLikeTls;
    }
    const HTTP_METHODS: [&[u8; 4]; 9] = [
        b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC",
    ];
    if HTTP_METHODS.iter().any(|m| header[..4] == m[..]) {
        return FrameError::LooksLikeHttp;
    }
    FrameError::TooLarge {
        announced: announced as u64,
        limit,
    }
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
            return Err(classify_oversize(
                &buf[..HEADER_LEN],
                announced,
                self.max_frame_len,
            ));
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
    // Only small replies (`ok`, an error) are encoded here: a query's reply, the one that can be
    // large, is written straight from its snapshot by the connection's writer.
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
    fn other_protocols_are_named() {
        let dec = FrameDecoder::new(16 * 1024 * 1024);
        // The first bytes of a TLS 1.2/1.3 ClientHello record.
        let mut buf = BytesMut::from(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::LooksLikeTls));
        assert!(FrameError::LooksLikeTls
            .to_string()
            .starts_with("looks like TLS"));
        for request in [&b"GET / HTTP/1.1\r\n"[..], b"POST /api/event HTTP/1.1"] {
            let mut buf = BytesMut::from(request);
            assert_eq!(dec.decode(&mut buf), Err(FrameError::LooksLikeHttp));
        }
        // Under the limit a length is a length, whatever its bytes.
        let dec = FrameDecoder::new(u32::MAX as usize);
        let mut buf = BytesMut::from(&b"GET "[..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
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
