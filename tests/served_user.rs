//! Served users found where TS 32.299 puts them (issue 5, item 5): a
//! Subscription-Id at the top level or inside Service-Information, the
//! calling or called party by role, User-Name; and the report says where.
#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use cpmcc::charging::ch1::{Ch1Request, ChargedRole, ServedUserSource};
use cpmcc::diameter::{Avp, VENDOR_3GPP, code};

fn start(role: ChargedRole) -> Ch1Request {
    let mut r = Ch1Request::start("sid;1").role(role);
    r.calling_party = Some("sip:alice.1x@test.invalid".into());
    r.called_party = Some("tel:+15551234;phone-context=test.invalid".into());
    r
}

fn read(msg: &cpmcc::diameter::Message) -> Ch1Request {
    Ch1Request::from_acr(msg).unwrap()
}

fn acr(req: &Ch1Request) -> cpmcc::diameter::Message {
    let (_, local) = cpmcc::charging::rf::sample_acr_start();
    req.to_acr(&local, "cdf.test.invalid")
}

fn subscription(uri: &str) -> Avp {
    Avp::grouped(
        code::SUBSCRIPTION_ID,
        vec![
            Avp::enumerated(code::SUBSCRIPTION_ID_TYPE, 2),
            Avp::utf8(code::SUBSCRIPTION_ID_DATA, uri),
        ],
    )
}

#[test]
fn top_level_subscription_id_wins() {
    let req = start(ChargedRole::OriginatingPf).served_user("sip:bob.2x@test.invalid");
    let got = read(&acr(&req));
    assert_eq!(got.served_user.as_deref(), Some("sip:bob.2x@test.invalid"));
    assert_eq!(
        got.served_user_source,
        Some(ServedUserSource::SubscriptionId)
    );
}

#[test]
fn subscription_id_inside_service_information() {
    let mut msg = acr(&start(ChargedRole::OriginatingPf));
    let si = msg
        .avps
        .iter_mut()
        .find(|a| a.code == code::SERVICE_INFORMATION)
        .unwrap();
    let mut children = si.as_grouped().unwrap();
    children.insert(0, subscription("sip:carol.3x@test.invalid"));
    *si = Avp::grouped(code::SERVICE_INFORMATION, children)
        .vendor(VENDOR_3GPP)
        .mandatory(true);
    let got = read(&msg);
    assert_eq!(
        got.served_user.as_deref(),
        Some("sip:carol.3x@test.invalid")
    );
    assert_eq!(
        got.served_user_source,
        Some(ServedUserSource::ServiceInformationSubscriptionId)
    );
    assert_eq!(
        got.served_user_source.unwrap().to_string(),
        "Service-Information/Subscription-Id"
    );
}

#[test]
fn party_address_by_role_then_user_name() {
    let got = read(&acr(&start(ChargedRole::OriginatingPf)));
    assert_eq!(
        got.served_user.as_deref(),
        Some("sip:alice.1x@test.invalid")
    );
    assert_eq!(
        got.served_user_source,
        Some(ServedUserSource::CallingPartyAddress)
    );
    // A terminating function's served user is the called party, a tel: URI here.
    let got = read(&acr(&start(ChargedRole::TerminatingPf)));
    assert_eq!(
        got.served_user.as_deref(),
        Some("tel:+15551234;phone-context=test.invalid")
    );
    assert_eq!(
        got.served_user_source,
        Some(ServedUserSource::CalledPartyAddress)
    );
    assert_eq!(
        cpmcc::sip::message::uri_user(got.served_user.as_deref().unwrap()),
        Some("+15551234")
    );
    // No Subscription-Id, no party address: User-Name.
    let mut msg = acr(&Ch1Request::start("sid;2"));
    msg.push(Avp::utf8(code::USER_NAME, "dave.4x@test.invalid"));
    let got = read(&msg);
    assert_eq!(got.served_user.as_deref(), Some("dave.4x@test.invalid"));
    assert_eq!(got.served_user_source, Some(ServedUserSource::UserName));
    assert_eq!(
        cpmcc::sip::message::uri_user(got.served_user.as_deref().unwrap()),
        Some("dave.4x")
    );
}
