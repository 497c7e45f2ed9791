//! RFC 3261 §12 dialogs, sans-IO: dialog state from the messages that create
//! it, in-dialog requests built from that state, checks on what the peer sends.

use std::net::{IpAddr, SocketAddr};

use rsip::headers::UntypedHeader;
use thiserror::Error;

use super::framing::split_list;
use super::transaction::{TransportKind, call_id_of, cseq_of, tag_param};

/// Identifies a dialog from our side.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The id of the dialog an incoming request belongs to (local tag = To
    /// tag, remote tag = From tag); None without both tags.
    pub fn from_incoming_request(request: &rsip::Request) -> Option<DialogId> {
        Some(DialogId {
            call_id: call_id_of(&request.headers)?,
            local_tag: tag_param(header_value(&request.headers, HeaderName::To)?)?,
            remote_tag: tag_param(header_value(&request.headers, HeaderName::From)?)?,
        })
    }

    /// The id of the dialog a response to our request belongs to (local tag =
    /// From tag, remote tag = To tag); None without both tags.
    pub fn from_incoming_response(response: &rsip::Response) -> Option<DialogId> {
        Some(DialogId {
            call_id: call_id_of(&response.headers)?,
            local_tag: tag_param(header_value(&response.headers, HeaderName::From)?)?,
            remote_tag: tag_param(header_value(&response.headers, HeaderName::To)?)?,
        })
    }
}

impl std::fmt::Display for DialogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (local tag {}, remote tag {})",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DialogError {
    #[error("{message} lacks a {header} header")]
    MissingHeader {
        header: &'static str,
        message: &'static str,
    },
    #[error("{header} of the {message} has no tag parameter: {value:?}")]
    MissingTag {
        header: &'static str,
        message: &'static str,
        value: String,
    },
    #[error("{header} URI {value:?} is not parseable: {detail}")]
    BadUri {
        header: &'static str,
        value: String,
        detail: String,
    },
    #[error("{method} request is for dialog {got}, not {expected}")]
    WrongDialog {
        method: String,
        expected: DialogId,
        got: String,
    },
    #[error("{method} request CSeq {got} does not rise above the last remote CSeq {last}")]
    CSeqNotIncreasing { method: String, got: u32, last: u32 },
}

/// One dialog, UAC or UAS side.
#[derive(Clone, Debug)]
pub struct Dialog {
    id: DialogId,
    /// Our From (as UAC) / To (as UAS) header value, with our tag.
    pub local_uri: String,
    /// The peer's header value, with its tag.
    pub remote_uri: String,
    pub local_seq: u32,
    pub remote_seq: Option<u32>,
    /// Route set, each entry a name-addr such as `<sip:10.0.0.1:5060;lr>`.
    pub route_set: Vec<String>,
    pub remote_target: rsip::Uri,
    pub local_contact: rsip::Uri,
}

#[derive(Clone, Copy)]
enum HeaderName {
    From,
    To,
}

fn header_value(headers: &rsip::Headers, name: HeaderName) -> Option<&str> {
    headers.iter().find_map(|h| match (h, name) {
        (rsip::Header::From(v), HeaderName::From) => Some(v.value()),
        (rsip::Header::To(v), HeaderName::To) => Some(v.value()),
        _ => None,
    })
}

/// The URI inside a name-addr or addr-spec (`"A" <sip:a@h;lr>;p=1` →
/// `sip:a@h;lr`; `sip:a@h;p=1` → `sip:a@h`).
pub fn uri_text(value: &str) -> &str {
    let value = value.trim();
    if let (Some(start), Some(end)) = (value.find('<'), value.rfind('>'))
        && start < end
    {
        return value[start + 1..end].trim();
    }
    value.split(';').next().unwrap_or(value).trim()
}

fn parse_uri(header: &'static str, value: &str) -> Result<rsip::Uri, DialogError> {
    let text = uri_text(value);
    rsip::Uri::try_from(text).map_err(|e| DialogError::BadUri {
        header,
        value: value.to_string(),
        detail: e.to_string(),
    })
}

fn contact_uri(headers: &rsip::Headers) -> Option<&str> {
    headers.iter().find_map(|h| match h {
        rsip::Header::Contact(c) => Some(c.value()),
        _ => None,
    })
}

fn record_routes(headers: &rsip::Headers) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::RecordRoute(r) => Some(split_list(r.value())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// A numeric `host[:port]` of a SIP URI text as a socket address (port 5060
/// by default).
pub fn uri_socket_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri
        .trim()
        .strip_prefix("sips:")
        .or_else(|| uri.trim().strip_prefix("sip:"))
        .unwrap_or(uri.trim());
    let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let hostport = rest.split([';', '?']).next().unwrap_or(rest);
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Some(addr);
    }
    let host = hostport.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 5060))
}

impl Dialog {
    /// UAC side, from the INVITE we sent and a 2xx (or 1xx with To-tag) we
    /// received. Route set = reversed Record-Route; remote target = Contact.
    pub fn uac(request: &rsip::Request, response: &rsip::Response) -> Result<Dialog, DialogError> {
        const MSG: &str = "response";
        let call_id = call_id_of(&request.headers).ok_or(DialogError::MissingHeader {
            header: "Call-ID",
            message: "request",
        })?;
        let from =
            header_value(&request.headers, HeaderName::From).ok_or(DialogError::MissingHeader {
                header: "From",
                message: "request",
            })?;
        let local_tag = tag_param(from).ok_or_else(|| DialogError::MissingTag {
            header: "From",
            message: "request",
            value: from.to_string(),
        })?;
        let to =
            header_value(&response.headers, HeaderName::To).ok_or(DialogError::MissingHeader {
                header: "To",
                message: MSG,
            })?;
        let remote_tag = tag_param(to).ok_or_else(|| DialogError::MissingTag {
            header: "To",
            message: MSG,
            value: to.to_string(),
        })?;
        let contact = contact_uri(&response.headers).ok_or(DialogError::MissingHeader {
            header: "Contact",
            message: MSG,
        })?;
        let remote_target = parse_uri("Contact", contact)?;
        let local_contact = match contact_uri(&request.headers) {
            Some(c) => parse_uri("Contact", c)?,
            None => parse_uri("From", from)?,
        };
        let mut route_set = record_routes(&response.headers);
        route_set.reverse();
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag,
                remote_tag,
            },
            local_uri: from.to_string(),
            remote_uri: to.to_string(),
            local_seq: cseq_of(&request.headers).map(|(n, _)| n).unwrap_or(1),
            remote_seq: None,
            route_set,
            remote_target,
            local_contact,
        })
    }

    /// UAS side, from the INVITE we received, our To-tag and our Contact.
    /// Route set = Record-Route in order. Our CSeq space starts at a random
    /// value (RFC 3261 §12.1.1 leaves it empty, §8.1.1.5 picks it), so our
    /// requests never share a Call-ID and CSeq with the peer's: through a
    /// proxy both parties' requests carry the same Call-ID.
    pub fn uas(
        request: &rsip::Request,
        local_tag: &str,
        local_contact: rsip::Uri,
    ) -> Result<Dialog, DialogError> {
        const MSG: &str = "request";
        let call_id = call_id_of(&request.headers).ok_or(DialogError::MissingHeader {
            header: "Call-ID",
            message: MSG,
        })?;
        let from =
            header_value(&request.headers, HeaderName::From).ok_or(DialogError::MissingHeader {
                header: "From",
                message: MSG,
            })?;
        let remote_tag = tag_param(from).ok_or_else(|| DialogError::MissingTag {
            header: "From",
            message: MSG,
            value: from.to_string(),
        })?;
        let to =
            header_value(&request.headers, HeaderName::To).ok_or(DialogError::MissingHeader {
                header: "To",
                message: MSG,
            })?;
        let local_uri = match tag_param(to) {
            Some(_) => to.to_string(),
            None => format!("{to};tag={local_tag}"),
        };
        let contact = contact_uri(&request.headers).ok_or(DialogError::MissingHeader {
            header: "Contact",
            message: MSG,
        })?;
        let remote_target = parse_uri("Contact", contact)?;
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag: tag_param(&local_uri).unwrap_or_else(|| local_tag.to_string()),
                remote_tag,
            },
            local_uri,
            remote_uri: from.to_string(),
            local_seq: initial_seq(),
            remote_seq: cseq_of(&request.headers).map(|(n, _)| n),
            route_set: record_routes(&request.headers),
            remote_target,
            local_contact,
        })
    }

    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Request-URI and Route headers per RFC 3261 §12.2.1.1 (loose routing;
    /// a strict first route becomes the Request-URI).
    fn uri_and_routes(&self) -> (rsip::Uri, Vec<String>) {
        match self.route_set.first() {
            Some(first) if !uri_text(first).contains(";lr") => {
                if let Ok(uri) = rsip::Uri::try_from(uri_text(first)) {
                    let mut routes: Vec<String> = self.route_set[1..].to_vec();
                    routes.push(format!("<{}>", self.remote_target));
                    return (uri, routes);
                }
                (self.remote_target.clone(), self.route_set.clone())
            }
            _ => (self.remote_target.clone(), self.route_set.clone()),
        }
    }

    fn build(
        &self,
        method: rsip::Method,
        cseq: u32,
        via_host: SocketAddr,
        transport: TransportKind,
    ) -> rsip::Request {
        let (uri, routes) = self.uri_and_routes();
        let mut headers = rsip::Headers::default();
        headers.push(rsip::Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/{} {};branch={};rport",
            transport.via_token(),
            via_host,
            new_branch()
        ))));
        headers.push(rsip::Header::MaxForwards(rsip::headers::MaxForwards::new(
            "70",
        )));
        for r in routes {
            headers.push(rsip::Header::Route(rsip::headers::Route::new(r)));
        }
        headers.push(rsip::Header::From(rsip::headers::From::new(
            self.local_uri.clone(),
        )));
        headers.push(rsip::Header::To(rsip::headers::To::new(
            self.remote_uri.clone(),
        )));
        headers.push(rsip::Header::CallId(rsip::headers::CallId::new(
            self.id.call_id.clone(),
        )));
        headers.push(rsip::Header::CSeq(rsip::headers::CSeq::new(format!(
            "{cseq} {method}"
        ))));
        if matches!(
            method,
            rsip::Method::Invite
                | rsip::Method::Update
                | rsip::Method::Subscribe
                | rsip::Method::Notify
                | rsip::Method::Refer
        ) {
            headers.push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
                "<{}>",
                self.local_contact
            ))));
        }
        headers.push(rsip::Header::ContentLength(
            rsip::headers::ContentLength::new("0"),
        ));
        rsip::Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        }
    }

    /// A new in-dialog request (BYE, re-INVITE, INFO, ...): CSeq =
    /// ++local_seq, Request-URI = remote target, Route headers from the route
    /// set, From/To with tags, Call-ID, Max-Forwards, Contact for
    /// target-refresh; a Via with a fresh `z9hG4bK` branch.
    pub fn new_request(
        &mut self,
        method: rsip::Method,
        via_host: SocketAddr,
        transport: TransportKind,
    ) -> rsip::Request {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.build(method, self.local_seq, via_host, transport)
    }

    /// ACK for a 2xx to the INVITE with CSeq number `invite_cseq`.
    pub fn ack(
        &self,
        invite_cseq: u32,
        via_host: SocketAddr,
        transport: TransportKind,
    ) -> rsip::Request {
        self.build(rsip::Method::Ack, invite_cseq, via_host, transport)
    }

    /// Checks an in-dialog request (CSeq must rise; ACK/CANCEL share the
    /// INVITE's), updates the remote target on a re-INVITE's Contact.
    pub fn handle_request(&mut self, request: &rsip::Request) -> Result<(), DialogError> {
        let method = request.method.to_string();
        let got = DialogId::from_incoming_request(request);
        if got.as_ref() != Some(&self.id) {
            return Err(DialogError::WrongDialog {
                method,
                expected: self.id.clone(),
                got: got.map_or_else(|| "a request without both tags".into(), |g| g.to_string()),
            });
        }
        let Some((seq, _)) = cseq_of(&request.headers) else {
            return Err(DialogError::MissingHeader {
                header: "CSeq",
                message: "request",
            });
        };
        if !matches!(request.method, rsip::Method::Ack | rsip::Method::Cancel) {
            if let Some(last) = self.remote_seq
                && seq <= last
            {
                return Err(DialogError::CSeqNotIncreasing {
                    method,
                    got: seq,
                    last,
                });
            }
            self.remote_seq = Some(seq);
        }
        if matches!(request.method, rsip::Method::Invite | rsip::Method::Update)
            && let Some(c) = contact_uri(&request.headers)
            && let Ok(uri) = parse_uri("Contact", c)
        {
            self.remote_target = uri;
        }
        Ok(())
    }

    /// Updates the remote target from a 2xx to our re-INVITE (or UPDATE).
    pub fn handle_response(&mut self, response: &rsip::Response) {
        let code = response.status_code.code();
        let refresh = matches!(
            cseq_of(&response.headers).map(|(_, m)| m).as_deref(),
            Some("INVITE" | "UPDATE")
        );
        if (200..300).contains(&code)
            && refresh
            && let Some(c) = contact_uri(&response.headers)
            && let Ok(uri) = parse_uri("Contact", c)
        {
            self.remote_target = uri;
        }
    }

    /// The next hop to send in-dialog requests to, if the first route /
    /// remote target is a numeric host:port.
    pub fn next_hop(&self) -> Option<SocketAddr> {
        match self.route_set.first() {
            Some(r) => uri_socket_addr(uri_text(r)),
            None => uri_socket_addr(&self.remote_target.to_string()),
        }
    }
}

/// A first CSeq number: random, below 2^31 with room to count up
/// (RFC 3261 §8.1.1.5).
fn initial_seq() -> u32 {
    1000 + rand::random::<u32>() % (1 << 30)
}

/// Copies the request's Record-Route headers, in order, into a response
/// that can create a dialog (RFC 3261 §12.1.1: a 1xx with a To-tag or a 2xx
/// to INVITE), so that the caller learns the route set.
pub fn copy_record_route(request: &rsip::Request, response: &mut rsip::Response) {
    let mut headers = rsip::Headers::default();
    let mut copied = false;
    for h in response.headers.iter() {
        // After Via, From, To, Call-ID, CSeq; before Content-Length.
        if !copied && matches!(h, rsip::Header::ContentLength(_)) {
            for rr in request.headers.iter() {
                if matches!(rr, rsip::Header::RecordRoute(_)) {
                    headers.push(rr.clone());
                }
            }
            copied = true;
        }
        headers.push(h.clone());
    }
    if !copied {
        for rr in request.headers.iter() {
            if matches!(rr, rsip::Header::RecordRoute(_)) {
                headers.push(rr.clone());
            }
        }
    }
    response.headers = headers;
}

/// A CANCEL for an INVITE we sent (RFC 3261 §9.1): same Request-URI, top Via
/// (so the same branch), Call-ID, From, To, Route; CSeq number with CANCEL.
pub fn cancel_for(invite: &rsip::Request) -> rsip::Request {
    let mut headers = rsip::Headers::default();
    if let Some(v) = invite
        .headers
        .iter()
        .find(|h| matches!(h, rsip::Header::Via(_)))
    {
        headers.push(v.clone());
    }
    headers.push(rsip::Header::MaxForwards(rsip::headers::MaxForwards::new(
        "70",
    )));
    for h in invite.headers.iter() {
        if matches!(
            h,
            rsip::Header::Route(_)
                | rsip::Header::From(_)
                | rsip::Header::To(_)
                | rsip::Header::CallId(_)
        ) {
            headers.push(h.clone());
        }
    }
    let seq = cseq_of(&invite.headers).map(|(n, _)| n).unwrap_or(1);
    headers.push(rsip::Header::CSeq(rsip::headers::CSeq::new(format!(
        "{seq} CANCEL"
    ))));
    headers.push(rsip::Header::ContentLength(
        rsip::headers::ContentLength::new("0"),
    ));
    rsip::Request {
        method: rsip::Method::Cancel,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A fresh From/To tag.
pub fn new_tag() -> String {
    random_hex(8)
}

/// A fresh RFC 3261 branch (with the `z9hG4bK` magic cookie).
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex(12))
}

/// A fresh Call-ID `random@host`.
pub fn new_call_id(host: &str) -> String {
    format!("{}@{host}", random_hex(12))
}
