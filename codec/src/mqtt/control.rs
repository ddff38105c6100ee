//! DISCONNECT and AUTH (PINGREQ and PINGRESP have no body and no type here).

use bytes::BufMut;

use super::fault::MqttFault;
use super::property::{Properties, Scope};
use super::types::{PacketType, Sender, Version};
use super::wire::{fault, Reader};
use crate::violation::Violation;

/// The last packet of a connection, from either side (from the server only
/// in 5.0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Disconnect {
    /// The reason code (5.0; 0 in 3.1.1).
    pub code: u8,
    /// DISCONNECT properties (5.0; empty in 3.1.1).
    pub properties: Properties,
}

/// DISCONNECT reason codes a client may send.
const DISCONNECT_CLIENT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
];
/// DISCONNECT reason codes a server may send.
const DISCONNECT_SERVER: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// Reads an optional reason code (in `allowed`) and an optional property
/// block, as DISCONNECT and AUTH carry them.
fn code_and_properties(
    r: &mut Reader<'_>,
    allowed: &[u8],
    packet: PacketType,
    scope: Scope,
    from: Sender,
) -> Result<(u8, Properties, bool), Violation> {
    if r.is_empty() {
        return Ok((0, Properties::new(), false));
    }
    let at = r.pos();
    let code = r.u8("reason code")?;
    if !allowed.contains(&code) {
        return Err(fault(MqttFault::ReasonCode { packet, code }, at));
    }
    if r.is_empty() {
        return Ok((code, Properties::new(), false));
    }
    let (properties, summary) = Properties::read(r, scope, packet, from)?;
    r.finish()?;
    Ok((code, properties, summary.auth_method))
}

impl Disconnect {
    pub(crate) fn read(
        r: &mut Reader<'_>,
        version: Version,
        from: Sender,
    ) -> Result<Disconnect, Violation> {
        if version == Version::V311 {
            r.finish()?;
            return Ok(Disconnect::default());
        }
        let allowed = match from {
            Sender::Client => DISCONNECT_CLIENT,
            Sender::Server => DISCONNECT_SERVER,
        };
        let (code, properties, _) =
            code_and_properties(r, allowed, PacketType::Disconnect, Scope::DISCONNECT, from)?;
        Ok(Disconnect { code, properties })
    }

    /// Canonical form: nothing for code 0 without properties, the code alone
    /// without properties.
    pub(crate) fn body_len(&self, version: Version) -> usize {
        match version {
            Version::V311 => 0,
            Version::V5 => short_len(self.code, &self.properties),
        }
    }

    pub(crate) fn put_body<B: BufMut>(&self, version: Version, buf: &mut B) {
        if version == Version::V5 {
            put_short(self.code, &self.properties, buf);
        }
    }
}

fn short_len(code: u8, properties: &Properties) -> usize {
    match (code, properties.is_empty()) {
        (0, true) => 0,
        (_, true) => 1,
        _ => 1 + properties.wire_len(),
    }
}

fn put_short<B: BufMut>(code: u8, properties: &Properties, buf: &mut B) {
    if code != 0 || !properties.is_empty() {
        buf.put_u8(code);
        if !properties.is_empty() {
            properties.put(buf);
        }
    }
}

/// A step of extended authentication (5.0 only), from either side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Auth {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub code: u8,
    /// AUTH properties; the authentication method is required when there are any.
    pub properties: Properties,
}

/// AUTH reason codes.
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

impl Auth {
    pub(crate) fn read(r: &mut Reader<'_>, from: Sender) -> Result<Auth, Violation> {
        let start = r.pos();
        let empty = r.is_empty();
        let (code, properties, has_method) =
            code_and_properties(r, AUTH_CODES, PacketType::Auth, Scope::AUTH, from)?;
        // Only an AUTH with no body at all may leave the method out.
        if !empty && !has_method {
            return Err(fault(MqttFault::MissingAuthMethod, start + 1));
        }
        Ok(Auth { code, properties })
    }

    pub(crate) fn body_len(&self) -> usize {
        short_len(self.code, &self.properties)
    }

    pub(crate) fn put_body<B: BufMut>(&self, buf: &mut B) {
        put_short(self.code, &self.properties, buf);
    }
}
