//! [`MqttCodec`]: the MQTT [`Decoder`] and
//! [`Packet::encode`] as a `tokio_util` codec, so that
//! `tokio_util::codec::Framed<TcpStream, MqttCodec>` reads and writes packets.
//! Only with the `tokio-codec` feature.

use std::fmt;
use std::io;

use bytes::BytesMut;

use super::packet::Packet;
use super::stream::Decoder;
use super::types::{EncodeError, Sender, Version};
use crate::limits::Limits;
use crate::violation::Violation;

/// Why a framed MQTT stream stopped.
#[derive(Debug)]
pub enum CodecError {
    /// Reading or writing the transport failed.
    Io(io::Error),
    /// The peer sent a packet that breaks a rule; the connection must close
    /// (see the violation's reason code and close reason).
    Violation(Violation),
    /// A packet to send cannot be encoded.
    Encode(EncodeError),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Io(e) => write!(f, "I/O error: {e}"),
            CodecError::Violation(v) => v.fmt(f),
            CodecError::Encode(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        CodecError::Io(e)
    }
}

/// An MQTT codec for one connection: decodes what the peer sends, encodes
/// what this side sends, in the connection's version.
#[derive(Debug)]
pub struct MqttCodec {
    decoder: Decoder,
    /// The version to encode in until the decoder knows one.
    version: Version,
}

impl MqttCodec {
    /// A server's codec: decodes a client's packets (CONNECT first, which
    /// sets the version), encodes the server's.
    pub fn server(limits: &Limits) -> MqttCodec {
        MqttCodec {
            decoder: Decoder::server(limits),
            version: Version::V311,
        }
    }

    /// A client's codec for `version`: decodes a server's packets, encodes
    /// the client's.
    pub fn client(version: Version, limits: &Limits) -> MqttCodec {
        MqttCodec {
            decoder: Decoder::new(version, Sender::Server, limits),
            version,
        }
    }

    /// The version in force.
    pub fn version(&self) -> Version {
        self.decoder.version().unwrap_or(self.version)
    }
}

impl tokio_util::codec::Decoder for MqttCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        self.decoder.decode(src).map_err(CodecError::Violation)
    }
}

impl tokio_util::codec::Encoder<Packet> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(self.version(), dst).map_err(CodecError::Encode)
    }
}
