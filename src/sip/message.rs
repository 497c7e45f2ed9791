//! CPM-flavoured SIP messages on rsip: the session INVITE with its MSRP SDP
//! offer, the CPM session ICSI feature tag, Conversation-ID and
//! Contribution-ID, and small accessors the harness and the SUT share.
//!
//! Messages are written as text and parsed by rsip, so what leaves is exactly
//! what a reader of the code sees, and rsip's parser checks it on the way.

use std::net::SocketAddr;

use rsip::prelude::*;

use super::transaction::{TransportKind, tag_param};

/// The IMS Communication Service Identifier of a CPM session (OMA CPM).
pub const CPM_SESSION_ICSI: &str = "urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.session";

/// The methods the harness's users and the reference SUT answer: the Allow
/// of their INVITEs and of a 501 for any other method.
pub const ALLOWED_METHODS: &str = "INVITE, ACK, CANCEL, BYE, UPDATE, REFER, OPTIONS";

/// Errors building or reading a message; they say which header failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("built SIP text did not parse ({reason}):\n{text}")]
    Build { reason: String, text: String },
    #[error("SIP message lacks a usable {header} header: {reason}")]
    Header {
        header: &'static str,
        reason: String,
    },
}

/// Everything that distinguishes one CPM session INVITE from another.
#[derive(Debug, Clone)]
pub struct CpmInvite {
    /// Originator, e.g. `sip:alice.r7s3@test.invalid`.
    pub from: String,
    pub from_tag: String,
    /// Recipient, the Request-URI and To.
    pub to: String,
    pub call_id: String,
    /// Where the originator sends from and wants requests back (Via, Contact).
    pub local: SocketAddr,
    pub transport: TransportKind,
    pub branch: String,
    pub conversation_id: String,
    pub contribution_id: String,
    /// The MSRP port offered in SDP; MSRP itself is out of scope.
    pub msrp_port: u16,
}

fn transport_token(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Udp => "UDP",
        TransportKind::Tcp => "TCP",
    }
}

/// The Contact of a CPM user agent, with the CPM session feature tag.
pub fn cpm_contact(user: &str, local: SocketAddr, transport: TransportKind) -> String {
    let t = transport_token(transport).to_ascii_lowercase();
    format!("<sip:{user}@{local};transport={t}>;+g.3gpp.icsi-ref=\"{CPM_SESSION_ICSI}\"")
}

/// An MSRP SDP offer or answer for a CPM session (RFC 4975 path, CPIM).
pub fn msrp_sdp(local: SocketAddr, msrp_port: u16, session: &str, offer: bool) -> String {
    let ip = local.ip();
    let family = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let setup = if offer { "actpass" } else { "passive" };
    format!(
        "v=0\r\no=- 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=message {msrp_port} TCP/MSRP *\r\na=accept-types:message/cpim\r\n\
         a=accept-wrapped-types:*\r\na=path:msrp://{ip}:{msrp_port}/{session};tcp\r\n\
         a=setup:{setup}\r\na=sendrecv\r\n"
    )
}

/// Builds the initial INVITE of a 1-1 CPM session.
pub fn cpm_invite(p: &CpmInvite) -> Result<rsip::Request, MessageError> {
    let user = uri_user(&p.from).unwrap_or("anonymous");
    let sdp = msrp_sdp(p.local, p.msrp_port, &p.call_id_token(), true);
    let text = format!(
        "INVITE {to} SIP/2.0\r\n\
         Via: SIP/2.0/{t} {local};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <{from}>;tag={from_tag}\r\n\
         To: <{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: {contact}\r\n\
         Accept-Contact: *;+g.3gpp.icsi-ref=\"{icsi}\"\r\n\
         Conversation-ID: {conv}\r\n\
         Contribution-ID: {contrib}\r\n\
         Allow: {allow}\r\n\
         Supported: timer\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        to = p.to,
        t = transport_token(p.transport),
        local = p.local,
        branch = p.branch,
        from = p.from,
        from_tag = p.from_tag,
        call_id = p.call_id,
        contact = cpm_contact(user, p.local, p.transport),
        icsi = CPM_SESSION_ICSI,
        conv = p.conversation_id,
        contrib = p.contribution_id,
        allow = ALLOWED_METHODS,
        len = sdp.len(),
    );
    parse_request(text)
}

/// Builds the INVITE that starts an ad-hoc group session: to the conference
/// factory, with its SDP and the recipient list (RFC 5366: a multipart body
/// with an `application/resource-lists+xml` part, `Require:
/// recipient-list-invite`).
pub fn cpm_group_invite(
    p: &CpmInvite,
    recipients: &[String],
) -> Result<rsip::Request, MessageError> {
    let mut request = cpm_invite(p)?;
    let sdp = String::from_utf8_lossy(&request.body).into_owned();
    let boundary = format!("cpm-{}", p.call_id_token());
    let entries: String = recipients
        .iter()
        .map(|r| format!("      <entry uri=\"{}\"/>\r\n", xml_escape(r)))
        .collect();
    let body = format!(
        "--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}\
         --{boundary}\r\nContent-Type: application/resource-lists+xml\r\n\
         Content-Disposition: recipient-list\r\n\r\n\
         <?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <resource-lists xmlns=\"urn:ietf:params:xml:ns:resource-lists\">\r\n\
         \x20 <list>\r\n{entries}  </list>\r\n</resource-lists>\r\n\
         --{boundary}--\r\n"
    );
    set_body(
        &mut request.headers,
        &mut request.body,
        &format!("multipart/mixed;boundary={boundary}"),
        body.as_bytes(),
    );
    request.headers.push(rsip::Header::Other(
        "Require".into(),
        "recipient-list-invite".into(),
    ));
    Ok(request)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl CpmInvite {
    fn call_id_token(&self) -> String {
        self.call_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect()
    }
}

/// Parses request text built by this module.
pub fn parse_request(text: String) -> Result<rsip::Request, MessageError> {
    rsip::Request::try_from(text.as_str()).map_err(|e| MessageError::Build {
        reason: e.to_string(),
        text,
    })
}

/// Puts `body` with its Content-Type into a request, fixing Content-Length.
pub fn set_body(headers: &mut rsip::Headers, body: &mut Vec<u8>, content_type: &str, new: &[u8]) {
    headers.retain(|h| {
        !matches!(
            h,
            rsip::Header::ContentType(_) | rsip::Header::ContentLength(_)
        )
    });
    headers.push(rsip::Header::ContentType(content_type.into()));
    headers.push(rsip::Header::ContentLength(new.len().to_string().into()));
    *body = new.to_vec();
}

/// The value of a header rsip does not type (Conversation-ID, Accept-Contact…),
/// by case-insensitive name.
pub fn other_header<'a>(headers: &'a rsip::Headers, name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| match h {
        rsip::Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.as_str()),
        _ => None,
    })
}

/// The user part of an address as SUTs write it in SIP headers and charging
/// AVPs: `sip:bob@x`, `<SIPS:bob@x>;tag=1`, `tel:+123` (the number), an NAI
/// or User-Name `bob@x`. Scheme names are case-insensitive (RFC 3261 §19.1.4).
pub fn uri_user(uri: &str) -> Option<&str> {
    let mut text = uri.trim();
    // A quoted display name may hold '<', '@' or ':' of its own.
    if let Some(rest) = text.strip_prefix('"') {
        text = rest.split_once('"').map(|(_, after)| after).unwrap_or("");
    }
    if let Some((_, inner)) = text.split_once('<') {
        text = inner.split_once('>').map(|(uri, _)| uri).unwrap_or(inner);
    }
    let rest = match text.split_once(':') {
        Some((scheme, rest)) if !scheme.contains('@') => {
            if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
                rest
            } else if scheme.eq_ignore_ascii_case("tel") {
                let number = rest.split(';').next().unwrap_or(rest);
                return (!number.is_empty()).then_some(number);
            } else {
                return None; // mailto:, http: and the like name no SIP user
            }
        }
        _ => text, // an NAI or User-Name: user@realm
    };
    let (userinfo, _host) = rest.split_once('@')?;
    // user[:password]; the user part itself may carry ';' parameters.
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    (!user.is_empty()).then_some(user)
}

/// The user part of a request's Request-URI.
///
/// rsip 0.4 does not split a user part that contains a dot
/// (`sip:alice.r7s3@x` parses as a host `alice.r7s3@x`), which RFC 3261
/// allows; the URI's text is read instead when rsip finds no user.
pub fn request_uri_user(request: &rsip::Request) -> Option<String> {
    match request.uri.user() {
        Some(user) => Some(user.to_owned()),
        None => uri_user(&request.uri.to_string()).map(str::to_owned),
    }
}

/// The Call-ID of any message.
pub fn call_id(message: &impl HeadersExt) -> Result<String, MessageError> {
    message
        .call_id_header()
        .map(|h| h.value().to_owned())
        .map_err(|e| MessageError::Header {
            header: "Call-ID",
            reason: e.to_string(),
        })
}

/// The tag of the From header, if any. Read from the header's text, not
/// through rsip's typed From (which loses a tag behind whitespace, RFC 4475
/// wsinv, or behind a display name of odd tokens, intmeth).
pub fn from_tag(message: &impl HeadersExt) -> Option<String> {
    let from = message.from_header().ok()?;
    tag_param(from.value())
}

/// The tag of the To header, if any (read as [`from_tag`] reads).
pub fn to_tag(message: &impl HeadersExt) -> Option<String> {
    let to = message.to_header().ok()?;
    tag_param(to.value())
}

/// The CSeq number and method of any message.
pub fn cseq(message: &impl HeadersExt) -> Result<(u32, rsip::Method), MessageError> {
    let header = message.cseq_header().map_err(|e| MessageError::Header {
        header: "CSeq",
        reason: e.to_string(),
    })?;
    let typed = header.typed().map_err(|e| MessageError::Header {
        header: "CSeq",
        reason: e.to_string(),
    })?;
    Ok((typed.seq, typed.method))
}

/// The full From and To header values (URI and parameters), for a B2BUA that
/// copies identities from one leg to another.
pub fn from_uri(message: &impl HeadersExt) -> Option<String> {
    let from = message.from_header().ok()?.typed().ok()?;
    Some(from.uri.to_string())
}

/// The URI of the To header.
pub fn to_uri(message: &impl HeadersExt) -> Option<String> {
    let to = message.to_header().ok()?.typed().ok()?;
    Some(to.uri.to_string())
}

/// One line a person can read in a report: `INVITE sip:bob@x` or `200 OK (INVITE)`.
pub fn summary(message: &rsip::SipMessage) -> String {
    match message {
        rsip::SipMessage::Request(r) => format!("{} {}", r.method, r.uri),
        rsip::SipMessage::Response(r) => {
            let method = cseq(r).map(|(_, m)| m.to_string()).unwrap_or_default();
            format!("{} ({method})", r.status_code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite() -> rsip::Request {
        cpm_invite(&CpmInvite {
            from: "sip:alice.x1@test.invalid".into(),
            from_tag: "a1".into(),
            to: "sip:bob.x1@test.invalid".into(),
            call_id: "c1@127.0.0.1".into(),
            local: "127.0.0.1:5070".parse().unwrap(),
            transport: TransportKind::Udp,
            branch: "z9hG4bKb1".into(),
            conversation_id: "conv-1".into(),
            contribution_id: "contrib-1".into(),
            msrp_port: 9000,
        })
        .unwrap()
    }

    #[test]
    fn cpm_invite_carries_icsi_ids_and_msrp_offer() {
        let req = invite();
        assert_eq!(req.method, rsip::Method::Invite);
        assert_eq!(request_uri_user(&req).as_deref(), Some("bob.x1"));
        assert_eq!(call_id(&req).unwrap(), "c1@127.0.0.1");
        assert_eq!(from_tag(&req).as_deref(), Some("a1"));
        assert_eq!(to_tag(&req), None);
        assert_eq!(cseq(&req).unwrap(), (1, rsip::Method::Invite));
        assert_eq!(
            other_header(&req.headers, "conversation-id"),
            Some("conv-1")
        );
        assert_eq!(
            other_header(&req.headers, "Contribution-ID"),
            Some("contrib-1")
        );
        assert!(
            other_header(&req.headers, "Accept-Contact")
                .unwrap()
                .contains(CPM_SESSION_ICSI)
        );
        let body = String::from_utf8(req.body.clone()).unwrap();
        assert!(body.contains("m=message 9000 TCP/MSRP *"), "{body}");
        let text = req.to_string();
        assert!(
            text.contains(&format!("Content-Length: {}", body.len())),
            "{text}"
        );
    }

    #[test]
    fn request_uri_user_survives_dots_rsip_does_not_split() {
        let req = parse_request(
            "OPTIONS sip:bob.r7s3@test.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
                .into(),
        )
        .unwrap();
        assert_eq!(request_uri_user(&req).as_deref(), Some("bob.r7s3"));
    }

    #[test]
    fn uri_user_reads_name_addr_forms() {
        assert_eq!(uri_user("<sip:bob@x>;tag=1"), Some("bob"));
        assert_eq!(uri_user("sips:carol@y"), Some("carol"));
        assert_eq!(uri_user("SIP:dave.r7@y;user=phone"), Some("dave.r7"));
        assert_eq!(uri_user("\"Eve\" <sip:eve@y>"), Some("eve"));
        assert_eq!(uri_user("tel:+123"), Some("+123"));
        assert_eq!(uri_user("frank@nai.example"), Some("frank"));
        assert_eq!(uri_user("sip:host.only"), None);
        assert_eq!(uri_user(""), None);
        assert_eq!(uri_user("sip:é@x"), Some("é"));
        assert_eq!(uri_user("\"a<b@c\" <sip:eve@y>"), Some("eve"));
        assert_eq!(
            uri_user("sip:+1234;phone-context=x@h"),
            Some("+1234;phone-context=x")
        );
        assert_eq!(uri_user("mailto:x@y"), None);
        assert_eq!(uri_user("sip:@x"), None);
        for odd in ["<", "<<<", "\"", "sip:", "tel:", "\u{10FFFF}", "sip:a@b@c"] {
            let _ = uri_user(odd);
        }
    }
}
