//! The reference CPM server's task: binds SIP, the Charging Enabler's link
//! and the admin interface, and drives the shape's sans-IO session core
//! ([`B2buaCore`] or [`ProxyCore`], through [`SessionCore`]).
//!
//! The task only moves messages: SIP events, operator commands and timer
//! expiries into the core, the core's [`Action`]s out to the SIP endpoint
//! and to one ordered charging queue per (session, charged function), so a
//! slow Charging Enabler delays charging but never reorders it nor blocks
//! SIP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::b2bua::B2buaCore;
use super::config::{ConferenceConfig, Shape, SutConfig};
use super::core::{Action, SessionCore, WithFocus};
use super::deviation::Deviation;
use super::focus::{FocusCharging, FocusConfig, FocusCore, FocusOnline};
use super::proxy::ProxyCore;
use crate::charging::ch1::Ch1Request;
use crate::charging::ch2::{Ch2Request, Ch2Response};
use crate::charging::client::{ChargingClient, ClientConfig};
use crate::diameter::commands::{AppId, LocalIdentity};
use crate::diameter::{VENDOR_3GPP, app};
use crate::profile::{ChargedFunction, Transport};
use crate::sip::endpoint::{Endpoint, EndpointConfig};
use crate::sip::transaction::{TransportKind, TxEvent};

/// Why the reference server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SutError {
    #[error("reference server: cannot bind SIP on {address}: {reason}")]
    Sip { address: SocketAddr, reason: String },
    #[error("reference server: cannot reach the Charging Enabler at {address}: {reason}")]
    Charging { address: SocketAddr, reason: String },
    #[error("reference server: config: at `{key}`: {message}")]
    Config { key: String, message: String },
    #[error("reference server: cannot bind the admin interface on {address}: {source}")]
    Admin {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A running reference server.
#[derive(Debug)]
pub struct RunningSut {
    /// Where test users send their requests.
    pub sip: SocketAddr,
    /// The operator HTTP interface, when configured.
    pub admin: Option<SocketAddr>,
    commands: mpsc::UnboundedSender<Command>,
}

impl RunningSut {
    /// Stops the server (sessions are dropped without BYE).
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

/// What the admin interface (or a test) asks of the server.
#[derive(Debug)]
pub(crate) enum Command {
    /// Operator stimulus: end the session with this Call-ID (either leg).
    Terminate {
        call_id: String,
        reply: tokio::sync::oneshot::Sender<bool>,
    },
    Shutdown,
}

/// Starts the reference server: binds SIP, starts the Diameter client of
/// the Charging Enabler (it connects in the background, and again whenever
/// the link drops, so the Enabler may come and go), starts the admin
/// interface.
pub async fn start(config: SutConfig) -> Result<RunningSut, SutError> {
    // Like a real server: take calls at once; charging requests wait for the
    // Charging Enabler's link, in order, and are resent if a link drops.
    config.check().map_err(|(key, message)| SutError::Config {
        key: key.into(),
        message,
    })?;
    let charging = config.charging.as_ref().map(|c| {
        let mut identity = LocalIdentity::rf_client(&c.origin_host, &c.origin_realm, c.server.ip());
        if config.online.is_some() {
            // A Charging Enabler answers a CCR 3001 on a link whose CER did
            // not name Ro: online charging advertises both applications.
            identity.auth_application_ids = vec![app::CREDIT_CONTROL_RO];
            identity
                .vendor_specific_applications
                .push((VENDOR_3GPP, AppId::Auth(app::CREDIT_CONTROL_RO)));
        }
        ChargingClient::spawn(
            c.server,
            identity,
            c.destination_realm.clone(),
            ClientConfig {
                reconnect_max: c
                    .reconnect_max
                    .unwrap_or(ClientConfig::default().reconnect_max),
                first_attempt_after: c.connect_after.unwrap_or_default(),
                ..ClientConfig::default()
            },
        )
    });

    let transport = kind(config.sip.transport);
    let endpoint_config = EndpointConfig {
        udp: (transport == TransportKind::Udp).then_some(config.sip.listen),
        tcp: (transport == TransportKind::Tcp).then_some(config.sip.listen),
        timers: config.sip.timers(),
    };
    let (endpoint, events) = Endpoint::bind(endpoint_config)
        .await
        .map_err(|e| SutError::Sip {
            address: config.sip.listen,
            reason: e.to_string(),
        })?;
    let local = endpoint
        .local_addr(transport)
        .ok_or_else(|| SutError::Sip {
            address: config.sip.listen,
            reason: "no local address after bind".into(),
        })?;

    let (commands, command_rx) = mpsc::unbounded_channel();
    let admin = match config.admin {
        Some(address) => Some(
            super::admin::serve(address, commands.clone())
                .await
                .map_err(|source| SutError::Admin { address, source })?,
        ),
        None => None,
    };

    let deviations = config.deviations.clone();
    let config = Arc::new(config);
    let focus = config
        .conference
        .as_ref()
        .map(|c| FocusCore::new(focus_config(&config, c), local, transport));
    let one_to_one: Box<dyn SessionCore + Send> = match config.shape {
        Shape::B2bua => Box::new(B2buaCore::new(Arc::clone(&config), local, transport)),
        Shape::Proxy => Box::new(ProxyCore::new(Arc::clone(&config), local, transport)),
    };
    let core: Box<dyn SessionCore + Send> = match focus {
        Some(focus) => Box::new(WithFocus::new(one_to_one, focus)),
        None => one_to_one,
    };
    let (answers, answer_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        endpoint,
        charging,
        deviations,
        queues: HashMap::new(),
        credit_queues: HashMap::new(),
        answers,
        destination_realm: config
            .charging
            .as_ref()
            .map(|c| c.destination_realm.clone())
            .unwrap_or_default(),
        tx: config.online.as_ref().map(|o| o.tx).unwrap_or_default(),
    };
    tokio::spawn(run_core(core, driver, events, command_rx, answer_rx));
    Ok(RunningSut {
        sip: local,
        admin,
        commands,
    })
}

/// The Controlling Function's config from the server's: its groups, and its
/// charging identity when both the server and the conference charge.
fn focus_config(config: &SutConfig, conference: &ConferenceConfig) -> FocusConfig {
    FocusConfig {
        domain: config.domain.clone(),
        factory_user: conference.factory_user.clone(),
        groups: conference.groups.clone(),
        route_users_to: config.route_users_to,
        charging: config
            .charging
            .as_ref()
            .filter(|_| conference.charging)
            .map(|c| FocusCharging {
                origin_host: c.origin_host.clone(),
                service_context_id: c.service_context_id.clone(),
            }),
        // Online when the server's online functions list the Controlling
        // Function (and there is a Charging Enabler to ask).
        online: config
            .online
            .as_ref()
            .filter(|o| o.functions.contains(&ChargedFunction::ControllingFunction))
            .zip(config.charging.as_ref())
            .map(|(o, c)| FocusOnline {
                origin_host: c.origin_host.clone(),
                service_context_id: c.service_context_id.clone(),
                requested_time: o.requested_time,
                refusal_status: o.refusal_status,
                failure_handling: o.failure_handling,
                participant_threshold: o.participant_threshold,
            }),
        deviations: config.deviations.clone(),
    }
}

fn kind(t: Transport) -> TransportKind {
    match t {
        Transport::Udp => TransportKind::Udp,
        Transport::Tcp => TransportKind::Tcp,
    }
}

/// What executes a core's actions: the SIP endpoint, the Charging
/// Enabler's client and its ordered queues.
struct Driver {
    endpoint: Endpoint,
    charging: Option<ChargingClient>,
    deviations: Vec<Deviation>,
    queues: HashMap<(u64, ChargedFunction), mpsc::UnboundedSender<Ch1Request>>,
    credit_queues: HashMap<(u64, ChargedFunction), mpsc::UnboundedSender<Ch2Request>>,
    /// Where the CH-2 answers go back to the core.
    answers: mpsc::UnboundedSender<CreditAnswer>,
    destination_realm: String,
    /// RFC 4006 Tx: how long a CH-2 request waits for its answer.
    tx: std::time::Duration,
}

/// A CH-2 answer for the core: (session, function, the Response or why none).
type CreditAnswer = (u64, ChargedFunction, Result<Ch2Response, String>);

impl Driver {
    /// Executes every action `core` has, in order, until it has none; a
    /// request that cannot be sent goes back to the core.
    async fn execute(&mut self, core: &mut (dyn SessionCore + Send)) {
        while let Some(action) = core.poll_action() {
            match action {
                Action::Request {
                    key,
                    request,
                    target,
                } => match self.endpoint.send_request(request, target).await {
                    Ok(sent) if sent == key => {}
                    Ok(sent) => {
                        tracing::warn!(%sent, %key, "reference server: unexpected transaction key");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reference server: request not sent");
                        core.send_failed(key, Instant::now());
                    }
                },
                Action::Respond { key, response } => {
                    if let Err(e) = self.endpoint.send_response(&key, response).await {
                        tracing::debug!(error = %e, "reference server: response not sent");
                    }
                }
                Action::Stateless { message, target } => {
                    let _ = self.endpoint.send_stateless(message, target).await;
                }
                Action::Charge {
                    session,
                    function,
                    request,
                } => {
                    if let Some(client) = &self.charging {
                        let deviations = &self.deviations;
                        let queue = self
                            .queues
                            .entry((session, function))
                            .or_insert_with(|| charging_queue(client.clone(), deviations));
                        let _ = queue.send(request);
                    }
                }
                Action::Credit {
                    session,
                    function,
                    request,
                } => match &self.charging {
                    Some(client) => {
                        let (answers, realm, tx) =
                            (&self.answers, &self.destination_realm, self.tx);
                        let queue = self
                            .credit_queues
                            .entry((session, function))
                            .or_insert_with(|| {
                                credit_queue(
                                    client.clone(),
                                    realm.clone(),
                                    tx,
                                    (session, function),
                                    answers.clone(),
                                )
                            });
                        let _ = queue.send(request);
                    }
                    None => {
                        core.handle_charging_answer(
                            session,
                            function,
                            Err("no Charging Enabler configured".into()),
                            Instant::now(),
                        );
                    }
                },
                Action::Forget { session } => {
                    self.queues.retain(|(s, _), _| *s != session);
                    self.credit_queues.retain(|(s, _), _| *s != session);
                }
            }
        }
    }
}

/// The server's task: moves SIP events, operator commands and timer
/// expiries into the core, and its actions out through the driver.
///
/// One core today. A second (the conference focus) would sit beside it:
/// events dispatched by the focus's `wants`/`owns`, the earliest of both
/// `poll_timeout`s slept on, `Driver::execute` called on each. Session ids
/// are per core, so the charging queues would then be keyed by core too.
async fn run_core(
    mut core: Box<dyn SessionCore + Send>,
    mut driver: Driver,
    mut events: mpsc::UnboundedReceiver<TxEvent>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut answers: mpsc::UnboundedReceiver<CreditAnswer>,
) {
    loop {
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => core.handle_sip(event, Instant::now()),
                None => break,
            },
            command = commands.recv() => match command {
                Some(Command::Terminate { call_id, reply }) => {
                    let _ = reply.send(core.terminate(&call_id, Instant::now()));
                }
                Some(Command::Shutdown) | None => break,
            },
            Some((session, function, answer)) = answers.recv() => {
                core.handle_charging_answer(session, function, answer, Instant::now());
            }
            () = sleep => core.handle_timeout(Instant::now()),
        }
        driver.execute(core.as_mut()).await;
    }
    driver.endpoint.shutdown().await;
}

/// One ordered CH-2 sender per (session, charged function): each CCR waits
/// for the answer to the one before; every answer (or its absence after
/// Tx, or the link's error) goes back to the core, in order.
fn credit_queue(
    client: ChargingClient,
    destination_realm: String,
    tx: std::time::Duration,
    (session, function): (u64, ChargedFunction),
    answers: mpsc::UnboundedSender<CreditAnswer>,
) -> mpsc::UnboundedSender<Ch2Request> {
    let (queue, mut rx) = mpsc::unbounded_channel::<Ch2Request>();
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            let ccr = req.to_ccr(client.identity(), &destination_realm);
            // The core keeps its own Tx; this one only keeps the queue
            // moving when the link never answers.
            let answer = match tokio::time::timeout(tx, client.request(ccr)).await {
                Ok(Ok(cca)) => Ch2Response::from_cca(&cca).map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no CH-2 answer within {tx:?}")),
            };
            if let Err(why) = &answer {
                tracing::warn!(%why, session = %req.session_id, "reference server: CH-2 request failed");
            }
            if answers.send((session, function, answer)).is_err() {
                break;
            }
        }
    });
    queue
}

/// One ordered sender per charged function: each request waits for the
/// answer to the one before (the client keeps it while the link is down).
fn charging_queue(
    client: ChargingClient,
    deviations: &[Deviation],
) -> mpsc::UnboundedSender<Ch1Request> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Ch1Request>();
    let wrong_app = deviations.contains(&Deviation::WrongApplicationId);
    // stop_with_start must put its Stop on the wire before the client's BYE
    // can arrive: its requests leave back to back, not each after the
    // previous answer (the link still sends them in order).
    let pipelined = deviations.contains(&Deviation::StopWithStart);
    let send = move |req: Ch1Request| {
        let client = client.clone();
        async move {
            let sent = client
                .send_shaped(&req, |acr| {
                    if wrong_app {
                        super::charging::name_wrong_application(acr);
                    }
                })
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, session = %req.session_id, "reference server: charging request failed");
            }
        }
    };
    tokio::spawn(async move {
        use futures::FutureExt as _;
        while let Some(req) = rx.recv().await {
            if pipelined {
                // The first poll hands the request to the link, in order;
                // its answer is not waited for.
                let _ = send(req).now_or_never();
            } else {
                send(req).await;
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::UdpSocket;

    use rsip::headers::UntypedHeader as _;

    use super::*;
    use crate::sip::dialog::{new_branch, new_call_id};
    use crate::sip::framing::{encode, parse_datagram};
    use crate::sip::message;
    use crate::sip::transaction::response_to;
    use crate::sut::config::SipConfig;

    /// A bare UDP peer: what it receives is read raw, so that nothing below
    /// it absorbs a retransmitted ACK.
    struct Peer(UdpSocket);

    impl Peer {
        async fn bind() -> Peer {
            Peer(UdpSocket::bind("127.0.0.1:0").await.unwrap())
        }

        fn addr(&self) -> SocketAddr {
            self.0.local_addr().unwrap()
        }

        async fn send(&self, message: impl Into<rsip::SipMessage>, to: SocketAddr) {
            self.0.send_to(&encode(&message.into()), to).await.unwrap();
        }

        /// The next message `wanted` accepts, within 3 s.
        async fn next(&self, wanted: impl Fn(&rsip::SipMessage) -> bool) -> rsip::SipMessage {
            let mut buf = vec![0u8; 65536];
            tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    let (n, _) = self.0.recv_from(&mut buf).await.unwrap();
                    let message = parse_datagram(&buf[..n]).unwrap();
                    if wanted(&message) {
                        return message;
                    }
                }
            })
            .await
            .expect("the expected message within 3 s")
        }
    }

    fn is_request(method: rsip::Method) -> impl Fn(&rsip::SipMessage) -> bool {
        move |m| matches!(m, rsip::SipMessage::Request(r) if r.method == method)
    }

    fn is_status(code: u16) -> impl Fn(&rsip::SipMessage) -> bool {
        move |m| matches!(m, rsip::SipMessage::Response(r) if r.status_code.code() == code)
    }

    async fn sut(shape: Shape, callee: SocketAddr) -> RunningSut {
        start(SutConfig {
            sip: SipConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                transport: crate::profile::Transport::Udp,
                t1: None,
            },
            shape,
            domain: "test.invalid".into(),
            route_users_to: callee,
            charging: None,
            inactivity_timer: None,
            admin: None,
            deviations: Vec::new(),
            conference: None,
            online: None,
        })
        .await
        .unwrap()
    }

    /// The caller's INVITE reaches the callee, which answers 200 OK; returns
    /// the INVITE as the callee got it and its 200 OK.
    async fn call(
        caller: &Peer,
        callee: &Peer,
        sut: SocketAddr,
    ) -> (rsip::Request, rsip::Response) {
        let invite = message::cpm_invite(&message::CpmInvite {
            from: "sip:alice@test.invalid".into(),
            from_tag: "a1".into(),
            to: "sip:bob@test.invalid".into(),
            call_id: new_call_id("127.0.0.1"),
            local: caller.addr(),
            transport: TransportKind::Udp,
            branch: new_branch(),
            conversation_id: "c".into(),
            contribution_id: "c".into(),
            msrp_port: 9,
        })
        .unwrap();
        caller.send(invite, sut).await;
        let rsip::SipMessage::Request(got) = callee.next(is_request(rsip::Method::Invite)).await
        else {
            unreachable!()
        };
        let mut ok = response_to(&got, rsip::StatusCode::OK, Some("b1"));
        ok.headers
            .push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
                "<sip:bob@{}>",
                callee.addr()
            ))));
        crate::sip::dialog::copy_record_route(&got, &mut ok);
        callee.send(ok.clone(), sut).await;
        (got, ok)
    }

    #[tokio::test]
    async fn the_b2bua_acks_every_retransmitted_2xx() {
        let (caller, callee) = (Peer::bind().await, Peer::bind().await);
        let running = sut(Shape::B2bua, callee.addr()).await;
        let (_, ok) = call(&caller, &callee, running.sip).await;
        callee.next(is_request(rsip::Method::Ack)).await;
        // The ACK was lost, say: the callee sends its 200 OK again, and the
        // B2BUA acknowledges it again (RFC 3261 13.2.2.4).
        callee.send(ok, running.sip).await;
        callee.next(is_request(rsip::Method::Ack)).await;
        running.shutdown();
    }

    #[tokio::test]
    async fn the_proxy_relays_a_retransmitted_2xx_to_the_caller() {
        let (caller, callee) = (Peer::bind().await, Peer::bind().await);
        let running = sut(Shape::Proxy, callee.addr()).await;
        let (invite, ok) = call(&caller, &callee, running.sip).await;
        assert!(
            invite
                .headers
                .iter()
                .any(|h| matches!(h, rsip::Header::RecordRoute(_))),
            "the proxy record-routes"
        );
        let first = caller.next(is_status(200)).await;
        let sent = std::time::Instant::now();
        callee.send(ok, running.sip).await;
        let again = caller.next(is_status(200)).await;
        assert!(
            sent.elapsed() < crate::sip::transaction::Timers::default().t1,
            "relayed at once, not the proxy's own retransmission after T1"
        );
        assert_eq!(
            message::call_id(&first).ok(),
            message::call_id(&again).ok(),
            "the same 200 OK"
        );
        running.shutdown();
    }
}
