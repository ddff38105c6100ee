//! Plain HTTP answers, shared by the polling transport and the WebSocket
//! upgrade.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

/// A response with a status and a body.
pub fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}
