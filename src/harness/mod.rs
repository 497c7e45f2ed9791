//! The harness: starts the Charging Enabler and the SIP agent (and the
//! embedded reference SUT when the profile asks for it), runs the Gherkin
//! features with scenarios concurrent, checks the rules that hold for every
//! flow after each scenario, and turns it all into verdicts.

pub mod expect;
pub mod online;
pub mod rules;
pub mod steps;
pub mod stimulus;
pub mod verdict;
pub mod world;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cucumber::gherkin::tagexpr::TagOperation;
use cucumber::tag::Ext as _;
use cucumber::writer::Stats as _;
use cucumber::{World as _, WriterExt as _, event, gherkin};
use futures::FutureExt as _;

use crate::charging::enabler::ChargingRecord;
use crate::charging::enabler::{Enabler, EnablerConfig};
use crate::diameter::commands::LocalIdentity;
use crate::profile::{SutProfile, Transport};
use crate::sip::agent::Agent;
use crate::sip::transaction::{Target, TransportKind};
use crate::sut::{self, Deviation, SutConfig};
use verdict::{BrokenRule, Ladder, ScenarioResult, StepFailure, Summary, Verdict, Violation};
use world::{Context, World};

/// Scenarios run at once by default. They wait on the SUT far more than they
/// compute, so the suite's wall time is its longest scenario (the inactivity
/// timer's) only when all can start together: at 16 the later ones queued
/// behind the first and the suite took 3.3 s instead of 2.85 s.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// What to run, against what.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub profile: SutProfile,
    /// The features folder.
    pub features: PathBuf,
    /// A cucumber tag expression, e.g. `@clause-6.2.3.7 and not @needs-operator-terminate`.
    pub tags: Option<String>,
    /// Scenarios run at once.
    pub concurrency: usize,
    /// Bind every harness and embedded-SUT socket on a free port (tests).
    pub free_ports: bool,
    /// Deviations to switch on in the embedded reference SUT, beyond the profile's.
    pub deviations: Vec<Deviation>,
    /// Where cucumber's step-by-step log goes.
    pub cucumber_log: Option<PathBuf>,
    /// Where cucumber's JUnit XML writer writes (one test case per scenario).
    pub junit: Option<PathBuf>,
    /// Where cucumber's Cucumber JSON writer writes.
    pub cucumber_json: Option<PathBuf>,
}

/// The embedded SUT's Controlling Function, as the profile describes it:
/// its factory, its pre-defined groups (members `role.group@domain`), and
/// whether it charges (the profile lists `controlling_function`).
fn conference_config(
    profile: &SutProfile,
    groups: &crate::profile::Groups,
) -> sut::config::ConferenceConfig {
    let domain = &profile.sut.domain;
    sut::config::ConferenceConfig {
        factory_user: groups
            .conference_factory
            .clone()
            .unwrap_or_else(|| "conf-factory".into()),
        groups: groups
            .pre_defined
            .iter()
            .map(|(group, roles)| {
                let members = roles
                    .iter()
                    .map(|role| {
                        format!(
                            "sip:{}@{domain}",
                            crate::profile::Groups::member_user(group, role)
                        )
                    })
                    .collect();
                (group.clone(), members)
            })
            .collect(),
        charging: profile.offline().is_some_and(|o| {
            o.functions
                .contains(&crate::profile::ChargedFunction::ControllingFunction)
        }),
    }
}

/// Why a run could not happen at all (as opposed to a SUT failing it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("tag expression `{expression}` is invalid: {reason}")]
    Tags { expression: String, reason: String },
    #[error("cannot start the Charging Enabler on {address}: {reason}")]
    Enabler { address: SocketAddr, reason: String },
    #[error("cannot start the SIP agent on {address}: {reason}")]
    Agent { address: SocketAddr, reason: String },
    #[error(transparent)]
    Sut(#[from] sut::SutError),
    #[error("features folder {path} cannot be read: {reason}")]
    Features { path: PathBuf, reason: String },
    #[error("{count} feature file(s) under {path} do not parse; {log} names them")]
    FeaturesDoNotParse {
        count: usize,
        path: PathBuf,
        log: String,
    },
    #[error("no scenario selected (tag expression: {tags})")]
    NothingSelected { tags: String },
    #[error("cannot write {path}: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error(
        "no SUT connected to the Charging Enabler at {address} within {waited:?} (timers.sut_link): \
         is the SUT's Diameter client configured for this address, and is it running?"
    )]
    NoDiameterPeer {
        address: SocketAddr,
        waited: Duration,
    },
    #[error(
        "free ports need the embedded SUT, but profile `{profile}` describes an external one: \
         it routes test users to harness.sip.listen and sends charging requests to \
         harness.diameter.listen, so it could not reach the harness on a random port"
    )]
    FreePortsWithExternalSut { profile: String },
}

/// Where the harness listens, once it does (what a SUT must reach).
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub sip: SocketAddr,
    pub sip_transport: TransportKind,
    pub diameter: SocketAddr,
}

/// What a caller may hook into a run; [`run`] uses none.
#[derive(Default)]
pub struct RunHooks {
    /// Called once the harness's SIP and Diameter sockets are bound.
    pub on_listening: Option<Box<dyn FnOnce(Listening)>>,
    /// When this resolves (a signal, say), scenarios still running are
    /// dropped, and the summary holds those that finished, marked
    /// `interrupted`.
    pub stop: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>,
    /// Called once the scenarios are done, with the SUT's Diameter
    /// connections (their CER identities), for the run's certificate.
    pub on_sut_connections: Option<Box<dyn FnOnce(Vec<crate::charging::enabler::ConnectionInfo>)>>,
    /// Records what the harness's own SIP and Diameter sockets send and
    /// receive (never the embedded SUT's), for the run's `capture.pcap`.
    pub recorder: Option<crate::report::capture::WireRecorder>,
}

impl std::fmt::Debug for RunHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHooks")
            .field("on_listening", &self.on_listening.is_some())
            .field("stop", &self.stop.is_some())
            .field("on_sut_connections", &self.on_sut_connections.is_some())
            .field("recorder", &self.recorder.is_some())
            .finish()
    }
}

fn free(addr: SocketAddr, free_ports: bool) -> SocketAddr {
    if free_ports {
        SocketAddr::new(addr.ip(), 0)
    } else {
        addr
    }
}

/// An address others can reach: a wildcard listen address becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

fn kind(t: Transport) -> TransportKind {
    match t {
        Transport::Udp => TransportKind::Udp,
        Transport::Tcp => TransportKind::Tcp,
    }
}

/// Runs the suite and returns its summary.
pub async fn run(options: RunOptions) -> Result<Summary, RunError> {
    run_with(options, RunHooks::default()).await
}

/// [`run`], telling `hooks` where the harness listens and stopping early
/// when `hooks.stop` resolves.
pub async fn run_with(options: RunOptions, hooks: RunHooks) -> Result<Summary, RunError> {
    let started = Instant::now();
    let profile = options.profile.clone();
    // An external SUT reaches the harness only where its profile says.
    if options.free_ports && profile.sut.embedded.is_none() {
        return Err(RunError::FreePortsWithExternalSut {
            profile: profile.name.clone(),
        });
    }
    let tags = match &options.tags {
        Some(t) => Some(t.parse::<TagOperation>().map_err(|e| RunError::Tags {
            expression: t.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let features = options
        .features
        .canonicalize()
        .map_err(|e| RunError::Features {
            path: options.features.clone(),
            reason: e.to_string(),
        })?;
    if !features.is_dir() {
        return Err(RunError::Features {
            path: options.features.clone(),
            reason: "not a directory".into(),
        });
    }
    let options = RunOptions {
        features,
        ..options
    };

    // The Charging Enabler first: the SUT connects to it as it starts.
    let diameter = free(profile.harness.diameter.listen, options.free_ports);
    // Only the harness's own sockets are recorded, never the SUT's.
    let recorder = hooks.recorder;
    let enabler_config = EnablerConfig {
        listen: diameter,
        identity: LocalIdentity::charging_server(
            &profile.harness.origin_host,
            &profile.harness.origin_realm,
            profile
                .harness
                .diameter
                .advertise
                .filter(|_| !options.free_ports)
                .unwrap_or(reachable(diameter))
                .ip(),
        ),
        watchdog_interval: Duration::from_secs(30),
    };
    let enabler = Enabler::bind_recorded(enabler_config, recorder.clone())
        .await
        .map_err(|e| RunError::Enabler {
            address: diameter,
            reason: e.to_string(),
        })?;

    let transport = kind(profile.sut.sip.transport);
    let sip = free(profile.harness.sip.listen, options.free_ports);
    // Free ports make the profile's advertised addresses meaningless.
    let advertise = profile
        .harness
        .sip
        .advertise
        .filter(|_| !options.free_ports);
    let agent = Agent::bind_recorded(sip, advertise, transport, &profile.sut.domain, recorder)
        .await
        .map_err(|e| RunError::Agent {
            address: sip,
            reason: e.to_string(),
        })?;

    if let Some(on_listening) = hooks.on_listening {
        on_listening(Listening {
            sip: agent.local_addr(),
            sip_transport: transport,
            diameter: reachable(enabler.local_addr()),
        });
    }

    let mut running = None;
    let (sut_sip, sut_admin) = match &profile.sut.embedded {
        Some(embedded) => {
            let mut deviations = embedded.deviations.clone();
            deviations.extend(options.deviations.iter().copied());
            let config = SutConfig {
                sip: sut::config::SipConfig {
                    listen: free(profile.sut.sip.address, options.free_ports),
                    transport: profile.sut.sip.transport,
                    // The server gives up on its own BYE after 64*T1: make
                    // that the timeout the profile declares.
                    t1: profile.stimuli.bye_timeout.map(|timeout| timeout / 64),
                },
                shape: embedded.shape,
                domain: profile.sut.domain.clone(),
                route_users_to: reachable(agent.local_addr()),
                charging: profile.offline().map(|o| sut::config::ChargingConfig {
                    server: reachable(enabler.local_addr()),
                    origin_host: "cpm.sut.test".into(),
                    origin_realm: "sut.test".into(),
                    destination_realm: profile.harness.origin_realm.clone(),
                    // The Participating Functions; the Controlling Function
                    // is the conference's (below).
                    functions: o
                        .functions
                        .iter()
                        .copied()
                        .filter(|f| *f != crate::profile::ChargedFunction::ControllingFunction)
                        .collect(),
                    service_context_id: o
                        .service_context_id
                        .clone()
                        .unwrap_or_else(|| "32260@3gpp.org".into()),
                    served_user_in_start_only: false,
                    reconnect_max: None,
                    connect_after: None,
                }),
                inactivity_timer: profile.stimuli.inactivity_timer,
                admin: Some(free(embedded.admin, options.free_ports)),
                deviations,
                conference: profile
                    .groups
                    .as_ref()
                    .map(|g| conference_config(&profile, g)),
                // The Participating Functions charge 1-1 sessions (the
                // B2BUA); the Controlling Function, when listed, group
                // sessions (the conference focus reads it from here).
                online: profile.online().map(|o| sut::config::OnlineConfig {
                    functions: o.functions.clone(),
                    refusal_status: o.refusal_status.unwrap_or(402),
                    participant_threshold: o.participant_threshold,
                    ..sut::config::OnlineConfig::default()
                }),
            };
            let sut = sut::start(config).await?;
            let addresses = (reachable(sut.sip), sut.admin.map(reachable));
            running = Some(sut);
            addresses
        }
        None => (profile.sut.sip.address, None),
    };

    // The SUT's Diameter link is part of the run: a lab starts its server
    // first, and the server's client connects on its own schedule.
    if profile.offline().is_some() {
        let wait = profile.timers.sut_link;
        let address = enabler.local_addr();
        eprintln!(
            "cpmcc: waiting up to {} for the SUT's Diameter client (CER) at {address}",
            humantime::format_duration(wait)
        );
        match enabler.wait_for_peer(wait).await {
            Some(peer) => eprintln!(
                "cpmcc: SUT connected over Diameter from {}{}",
                peer.peer,
                peer.remote
                    .as_ref()
                    .map(|r| format!(
                        " (Origin-Host {}, Product-Name {})",
                        crate::report::sanitize::escape(&r.origin_host),
                        crate::report::sanitize::escape(
                            r.product_name.as_deref().unwrap_or("(none)")
                        )
                    ))
                    .unwrap_or_default()
            ),
            None => {
                if let Some(sut) = running {
                    sut.shutdown();
                }
                agent.shutdown().await;
                return Err(RunError::NoDiameterPeer {
                    address,
                    waited: wait,
                });
            }
        }
    }

    let context = Arc::new(Context {
        profile: profile.clone(),
        agent: agent.clone(),
        enabler: enabler.clone(),
        sut_sip: Target {
            transport,
            addr: sut_sip,
        },
        sut_admin,
        results: Mutex::new(Vec::new()),
        ledgers: Mutex::new(Vec::new()),
        user_names: Mutex::new(Default::default()),
    });
    world::install(context.clone());

    // Stopped early, the scenarios still running are dropped unfinished.
    let mut interrupted = false;
    let outcome = match hooks.stop {
        Some(stop) => tokio::select! {
            outcome = run_features(&options, tags, &context) => outcome,
            () = stop => {
                interrupted = true;
                Ok(())
            }
        },
        None => run_features(&options, tags, &context).await,
    };
    if outcome.is_ok() && !interrupted {
        drain_late_charging(&context).await;
        report_link_changes(&context);
    }

    let mut results = std::mem::take(
        &mut *context
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    results.sort_by(|a, b| {
        (&a.clause, &a.test_purpose, &a.scenario).cmp(&(&b.clause, &b.test_purpose, &b.scenario))
    });
    if let Some(sut) = running {
        sut.shutdown();
    }
    agent.shutdown().await;
    outcome?;
    if let Some(on_sut_connections) = hooks.on_sut_connections {
        on_sut_connections(enabler.connections());
    }
    let ordering = profile
        .offline()
        .map(|o| format!("{:?}", o.ordering).to_lowercase())
        .unwrap_or_else(|| "n/a".into());
    // Strays, bounded: a flood is counted, and only the first few kept.
    let mut strays = agent.stray_log();
    for detail in unclaimed_charging(&context) {
        strays.push("charging request for no test user", &detail);
    }
    // What reached the Diameter port and was no SUT peer's charging.
    let (diameter, total) = enabler.strays();
    for s in &diameter {
        strays.push("Diameter junk", &s.to_string());
    }
    strays.count_more(
        "Diameter junk",
        (total as u64).saturating_sub(diameter.len() as u64),
    );
    let mut summary = Summary {
        sut: profile.name.clone(),
        ordering,
        results,
        interrupted,
        wall_time: started.elapsed(),
        ..Summary::default()
    };
    summary.set_strays(&strays);
    Ok(summary)
}

/// Charging requests whose served user is no test user of this run: a SUT
/// charging someone else, or a request the harness could not attribute.
fn unclaimed_charging(context: &Context) -> Vec<String> {
    let names = context
        .user_names
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let all = context.enabler.records();
    // Stamps are unique per record: the sequence number identifies it.
    // On either interface: a CCR names its served user as an ACR does.
    let ours: std::collections::HashSet<u64> = world::belonging_to(all.clone(), |r| {
        r.served_user()
            .and_then(crate::sip::message::uri_user)
            .is_some_and(|u| names.contains(u))
    })
    .iter()
    .map(|r| r.stamp.seq)
    .collect();
    all.iter()
        .filter(|r| !ours.contains(&r.stamp.seq))
        .map(|r| format!("from {}: {}", r.peer, r.message.describe()))
        .collect()
}

async fn run_features(
    options: &RunOptions,
    tags: Option<TagOperation>,
    context: &Arc<Context>,
) -> Result<(), RunError> {
    let log_path = options.cucumber_log.clone();
    let log: Box<dyn std::io::Write> = match &log_path {
        Some(path) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            // Step failures quote the wire: escaped, so no line is forged.
            Box::new(crate::report::sanitize::EscapingWriter::new(
                std::fs::File::create(path).map_err(|e| RunError::Output {
                    path: path.clone(),
                    reason: e.to_string(),
                })?,
            ))
        }
        None => Box::new(std::io::sink()),
    };
    // Cucumber's own JUnit and JSON writers: the judge step makes their
    // verdicts the summary's.
    let report = |path: &Option<PathBuf>| -> Result<Box<dyn std::io::Write>, RunError> {
        match path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                Ok(Box::new(std::fs::File::create(path).map_err(|e| {
                    RunError::Output {
                        path: path.clone(),
                        reason: e.to_string(),
                    }
                })?))
            }
            None => Ok(Box::new(std::io::sink())),
        }
    };
    let junit = report(&options.junit)?;
    let json = report(&options.cucumber_json)?;
    let filter_ctx = context.clone();
    let features_root = options.features.clone();
    let after_ctx = context.clone();
    let after_root = options.features.clone();
    let log_name = log_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the cucumber log (pass --cucumber-log)".into());
    let writer = World::cucumber::<PathBuf>()
        .with_parser(JudgedFeatures::default())
        .with_writer(
            cucumber::writer::Basic::raw(
                log,
                cucumber::writer::Coloring::Never,
                cucumber::writer::Verbosity::Default,
            )
            .summarized()
            .tee::<World, _>(cucumber::writer::JUnit::for_tee(
                junit,
                cucumber::writer::Verbosity::Default,
            ))
            .tee::<World, _>(cucumber::writer::Json::for_tee(json))
            .normalized(),
        )
        .with_default_cli()
        .max_concurrent_scenarios(Some(options.concurrency.max(1)))
        .fail_on_skipped()
        .after(move |feature, _rule, scenario, finished, world| {
            let ctx = after_ctx.clone();
            let root = after_root.clone();
            let log_name = log_name.clone();
            async move {
                after_scenario(&ctx, &root, &log_name, feature, scenario, finished, world).await
            }
            .boxed_local()
        })
        .filter_run(options.features.clone(), move |feature, _rule, scenario| {
            let all_tags: Vec<&String> = feature.tags.iter().chain(scenario.tags.iter()).collect();
            if let Some(expr) = &tags
                && !expr.eval(all_tags.iter().map(|t| t.as_str()))
            {
                return false;
            }
            match not_applicable(&filter_ctx.profile, &all_tags) {
                Some(reason) => {
                    let result = ScenarioResult {
                        feature: feature_name(feature, &features_root),
                        clause: tag_value(&all_tags, "clause-").unwrap_or_default(),
                        test_purpose: tag_value(&all_tags, "tp-").unwrap_or_default(),
                        scenario: scenario.name.clone(),
                        verdict: Verdict::NotApplicable,
                        detail: Some(reason),
                        rules: Vec::new(),
                        served_users: Vec::new(),
                        known_deviation: None,
                        warnings: Vec::new(),
                        duration: Duration::ZERO,
                        ladder: Ladder::default(),
                    };
                    filter_ctx
                        .results
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(result);
                    false
                }
                None => true,
            }
        })
        .await;
    // A feature file that does not parse must stop the run, never shrink it.
    if writer.parsing_errors() > 0 {
        return Err(RunError::FeaturesDoNotParse {
            count: writer.parsing_errors(),
            path: options.features.clone(),
            log: log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the cucumber log (pass --cucumber-log)".into()),
        });
    }
    if context
        .results
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
    {
        return Err(RunError::NothingSelected {
            tags: options.tags.clone().unwrap_or_else(|| "(none)".into()),
        });
    }
    Ok(())
}

/// Reads features as cucumber does, and ends every scenario with the judge
/// step ([`steps::judge::JUDGE_STEP`]): a scenario that broke a rule on its
/// whole charging fails inside cucumber, so its log and writers agree with
/// the summary.
#[derive(Debug, Default)]
struct JudgedFeatures(cucumber::parser::Basic);

type ParsedFeature = cucumber::parser::Result<gherkin::Feature>;

impl<I: AsRef<Path>> cucumber::Parser<I> for JudgedFeatures {
    type Cli = <cucumber::parser::Basic as cucumber::Parser<I>>::Cli;
    type Output = futures::stream::Map<
        <cucumber::parser::Basic as cucumber::Parser<I>>::Output,
        fn(ParsedFeature) -> ParsedFeature,
    >;

    fn parse(self, input: I, cli: Self::Cli) -> Self::Output {
        use futures::StreamExt as _;
        self.0
            .parse(input, cli)
            .map(with_judge_step as fn(ParsedFeature) -> ParsedFeature)
    }
}

fn with_judge_step(feature: ParsedFeature) -> ParsedFeature {
    let mut feature = feature?;
    let scenarios = feature.scenarios.iter_mut().chain(
        feature
            .rules
            .iter_mut()
            .flat_map(|r| r.scenarios.iter_mut()),
    );
    for scenario in scenarios {
        let last = scenario.steps.last();
        let step = gherkin::Step {
            keyword: "Then ".into(),
            ty: gherkin::StepType::Then,
            value: steps::judge::JUDGE_STEP.into(),
            docstring: None,
            table: None,
            span: last.map(|s| s.span).unwrap_or_default(),
            position: last.map(|s| s.position).unwrap_or(scenario.position),
        };
        scenario.steps.push(step);
    }
    Ok(feature)
}

/// Why an online group scenario does not apply: the Controlling Function
/// does not charge online, or the scenario arms a Charging Trigger
/// Condition the SUT does not declare (`charging.online.triggers`), or
/// needs the threshold the profile does not give.
fn group_online_not_applicable(profile: &SutProfile, has: &dyn Fn(&str) -> bool) -> Option<String> {
    use crate::profile::SupportedTrigger;
    let online = profile.online()?;
    if !online
        .functions
        .contains(&crate::profile::ChargedFunction::ControllingFunction)
    {
        return Some(
            "the SUT profile lists no online charging by the Controlling Function \
             (charging.online.functions: controlling_function)"
                .into(),
        );
    }
    let needs = [
        (
            "needs-trigger-50",
            SupportedTrigger::ParticipantsNumber,
            "participants_number",
        ),
        (
            "needs-trigger-51",
            SupportedTrigger::ParticipantsThreshold,
            "participants_threshold",
        ),
    ];
    for (tag, trigger, name) in needs {
        if has(tag) && !online.triggers.contains(&trigger) {
            return Some(format!(
                "the SUT profile does not declare the Charging Trigger Condition {name} \
                 (charging.online.triggers)"
            ));
        }
    }
    if has("needs-participant-threshold") && online.participant_threshold.is_none() {
        return Some(
            "the SUT profile declares no participant threshold \
             (charging.online.participant_threshold)"
                .into(),
        );
    }
    None
}

/// The reason a scenario does not apply to this SUT, from its `@needs-…` tags.
fn not_applicable(profile: &SutProfile, tags: &[&String]) -> Option<String> {
    let has = |t: &str| tags.iter().any(|x| x.as_str() == t);
    if has("offline") && profile.offline().is_none() {
        return Some("the SUT profile declares no offline charging (charging.offline)".into());
    }
    if has("online") && profile.online().is_none() {
        return Some("the SUT profile declares no online charging (charging.online)".into());
    }
    if has("needs-inactivity-timer") && profile.stimuli.inactivity_timer.is_none() {
        return Some(
            "the SUT profile declares no inactivity timer (stimuli.inactivity_timer)".into(),
        );
    }
    if has("needs-bye-timeout") && profile.stimuli.bye_timeout.is_none() {
        return Some(
            "the SUT profile declares no timeout for the SUT's own BYE (stimuli.bye_timeout)"
                .into(),
        );
    }
    if has("needs-operator-terminate") && profile.stimuli.operator_terminate.is_none() {
        return Some(
            "the SUT profile names no operator command (stimuli.operator_terminate)".into(),
        );
    }
    if has("group") {
        let Some(groups) = &profile.groups else {
            return Some("the SUT profile declares no group sessions (groups)".into());
        };
        let cf_charges = profile.offline().is_some_and(|o| {
            o.functions
                .contains(&crate::profile::ChargedFunction::ControllingFunction)
        });
        if has("offline") && !cf_charges {
            return Some(
                "the SUT profile lists no offline charging by the Controlling Function \
                 (charging.offline.functions: controlling_function)"
                    .into(),
            );
        }
        let missing = [
            (
                "needs-ad-hoc",
                groups.conference_factory.is_some(),
                "groups.conference_factory",
            ),
            ("needs-dial-in", groups.dial_in, "groups.dial_in"),
            ("needs-refer-add", groups.refer_add, "groups.refer_add"),
            (
                "needs-refer-remove",
                groups.refer_remove,
                "groups.refer_remove",
            ),
        ]
        .into_iter()
        .find(|(tag, declared, _)| has(tag) && !declared);
        if let Some((_, _, key)) = missing {
            return Some(format!("the SUT profile does not declare {key}"));
        }
        if has("online")
            && let Some(reason) = group_online_not_applicable(profile, &has)
        {
            return Some(reason);
        }
        if let Some(group) = tag_value(tags, "pre-defined-group-")
            && !groups.pre_defined.contains_key(&group)
        {
            return Some(format!(
                "the SUT profile declares no pre-defined group \"{group}\" (groups.pre_defined)"
            ));
        }
    }
    if has("ordering-strict")
        && profile
            .offline()
            .is_some_and(|o| o.ordering == crate::profile::OrderingReading::Lenient)
    {
        return Some("checks the strict (figure) reading; the SUT profile chose lenient".into());
    }
    None
}

fn tag_value(tags: &[&String], prefix: &str) -> Option<String> {
    tags.iter()
        .find_map(|t| t.strip_prefix(prefix).map(str::to_owned))
}

fn feature_name(feature: &gherkin::Feature, root: &Path) -> String {
    feature
        .path
        .as_ref()
        .and_then(|p| p.strip_prefix(root).ok().or(Some(p.as_path())))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| feature.name.clone())
}

/// After every scenario: let late requests arrive, check the rules that hold
/// for every flow, decide the verdict, and end what the scenario left open.
async fn after_scenario(
    ctx: &Context,
    root: &Path,
    log_name: &str,
    feature: &gherkin::Feature,
    scenario: &gherkin::Scenario,
    finished: &event::ScenarioFinished,
    world: Option<&mut World>,
) {
    let tags: Vec<&String> = feature.tags.iter().chain(scenario.tags.iter()).collect();
    let mut result = ScenarioResult {
        feature: feature_name(feature, root),
        clause: tag_value(&tags, "clause-").unwrap_or_default(),
        test_purpose: tag_value(&tags, "tp-").unwrap_or_default(),
        scenario: scenario.name.clone(),
        verdict: Verdict::Pass,
        detail: None,
        rules: Vec::new(),
        served_users: Vec::new(),
        known_deviation: None,
        warnings: Vec::new(),
        duration: Duration::ZERO,
        ladder: Ladder::default(),
    };
    let Some(w) = world else {
        result.verdict = Verdict::Error;
        result.detail = Some("the scenario's World could not be created".into());
        push(ctx, result);
        return;
    };
    match finished {
        event::ScenarioFinished::StepPassed => {}
        event::ScenarioFinished::StepFailed(_, _, error) => match &w.outcome {
            Some(outcome) => {
                result.verdict = outcome.verdict();
                result.detail = Some(outcome.to_string());
            }
            None => {
                result.verdict = Verdict::Error;
                result.detail = Some(format!("step failed: {error}"));
            }
        },
        event::ScenarioFinished::StepSkipped => {
            result.verdict = Verdict::Error;
            result.detail = Some(format!(
                "a step matches no step definition (see {log_name})"
            ));
        }
        event::ScenarioFinished::BeforeHookFailed(info) => {
            result.verdict = Verdict::Error;
            result.detail = Some(format!("before hook failed: {info:?}"));
        }
    }
    // The judge step ran, or (a step failed before it) judge now.
    let judgement = steps::judge::judge(w).await;
    let facts = judgement.facts.clone();
    let records = ctx.enabler.records();
    if let Some(v) = &judgement.harness {
        result.verdict = Verdict::Error;
        result.detail = Some(v.to_string());
        result.rules.push(v.rule.id);
    }
    for user in w.users.values() {
        ctx.enabler.remove_scripts_for(&user.name);
    }
    if let Some(rule) = w.outcome.as_ref().and_then(StepFailure::rule)
        && result.verdict == Verdict::Fail
    {
        result.rules.insert(0, rule.id);
    }
    add_violations(&mut result, &judgement.violations, None);
    // The report's diagram: what happened, and the rules broken on it.
    result.ladder = steps::judge::ladder(w);
    let failed_step = match &w.outcome {
        Some(StepFailure::Fail(v)) => Some(v),
        _ => None,
    };
    let known: Vec<&Violation> = judgement
        .harness
        .iter()
        .chain(failed_step)
        .chain(&judgement.violations)
        .collect();
    result.ladder.broken = result
        .rules
        .iter()
        .filter_map(|id| known.iter().find(|v| v.rule.id == *id))
        .map(|v| BrokenRule::from(*v))
        .collect();
    result.warnings = std::mem::take(&mut w.warnings);
    // What the SUT sent that is odd but legal: shown, never failed on.
    for record in expect::scenario_records(records, &facts) {
        for warning in &record.warnings {
            result
                .warnings
                .push(format!("{}: {warning}", world::record_line(&record)));
        }
    }
    for stream in &facts.streams {
        let records = expect::stream_records(records_now(ctx), stream);
        if let Some(c) = records.iter().find_map(|r| r.ch1.as_ref().ok())
            && let (Some(user), Some(from)) = (&c.served_user, c.served_user_source)
        {
            result
                .served_users
                .push(format!("{}: {user} from {from}", stream.subject()));
        }
    }
    result.duration = w.started.elapsed();
    // Kept on a pass too, so the summary can say the mark is stale.
    result.known_deviation = ctx
        .profile
        .known_deviation(&result.test_purpose)
        .map(str::to_owned);
    w.users.clear();
    let index = push(ctx, result);
    ctx.ledgers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Ledger {
            index,
            started: w.started_at,
            facts,
            judged_at: crate::timeline::stamp(),
        });
}

fn records_now(ctx: &Context) -> Vec<ChargingRecord> {
    ctx.enabler.records()
}

/// Adds broken rules to a result: a pass or an inconclusive becomes a
/// failure (a broken rule is a failure whatever else went wrong); rules
/// already named are not repeated. `note` heads the text (a reopened verdict).
fn add_violations(result: &mut ScenarioResult, violations: &[Violation], note: Option<&str>) {
    let new: Vec<&Violation> = violations
        .iter()
        .filter(|v| !result.rules.contains(&v.rule.id))
        .collect();
    if new.is_empty() {
        return;
    }
    let mut text: Vec<String> = note.map(str::to_owned).into_iter().collect();
    text.extend(new.iter().map(|v| v.to_string()));
    let text = text.join("\n");
    let mut ids: Vec<&'static str> = Vec::new();
    for v in &new {
        if !ids.contains(&v.rule.id) {
            ids.push(v.rule.id);
        }
    }
    match result.verdict {
        Verdict::Pass | Verdict::Inconclusive => {
            let before = result.detail.take();
            result.verdict = Verdict::Fail;
            result.detail = Some(match before {
                Some(d) => format!("{text}\nalso: {d}"),
                None => text,
            });
            // The rules of this failure come first.
            ids.extend(std::mem::take(&mut result.rules));
            result.rules = ids;
        }
        _ => {
            let d = result.detail.take().unwrap_or_default();
            result.detail = Some(format!("{d}\nalso:\n{text}"));
            result.rules.extend(ids);
        }
    }
}

/// A judged scenario, kept to judge again what arrives after its verdict.
#[derive(Debug)]
pub struct Ledger {
    /// Its result's position in `Context::results`.
    index: usize,
    /// When it began, for the link changes it overlapped.
    started: crate::timeline::Stamp,
    facts: expect::ScenarioFacts,
    judged_at: crate::timeline::Stamp,
}

/// A Diameter link that dropped or reopened during the run is reported
/// with every scenario it overlapped: their charging may be incomplete for a
/// reason outside the flow under test.
fn report_link_changes(ctx: &Context) {
    let events = ctx.enabler.link_events();
    let ledgers = ctx.ledgers.lock().unwrap_or_else(PoisonError::into_inner);
    let mut results = ctx.results.lock().unwrap_or_else(PoisonError::into_inner);
    // The first opening is the run's own start, not a change.
    let first_open = events
        .iter()
        .find(|e| e.kind == crate::charging::enabler::LinkEventKind::Opened)
        .map(|e| e.stamp);
    for event in events.iter().filter(|e| Some(e.stamp) != first_open) {
        for ledger in ledgers.iter() {
            if ledger.started < event.stamp
                && event.stamp < ledger.judged_at
                && let Some(result) = results.get_mut(ledger.index)
            {
                result.warnings.push(format!(
                    "the SUT's Diameter link changed during this scenario: {}",
                    crate::report::sanitize::escape(&event.to_string())
                ));
            }
        }
    }
}

/// After the last scenario: keep listening for `timers.drain`, then judge
/// again every scenario that received charging after its verdict. A
/// StartRequest a second after a failed INVITE is a failure, not silence.
async fn drain_late_charging(ctx: &Context) {
    let last = ctx
        .ledgers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|l| l.judged_at.at)
        .max();
    let Some(last) = last else { return };
    tokio::time::sleep_until((last + ctx.profile.timers.drain).into()).await;
    let records = ctx.enabler.records();
    let ledgers = ctx.ledgers.lock().unwrap_or_else(PoisonError::into_inner);
    let mut results = ctx.results.lock().unwrap_or_else(PoisonError::into_inner);
    for ledger in ledgers.iter() {
        let late: Vec<ChargingRecord> = expect::scenario_records(records.clone(), &ledger.facts)
            .into_iter()
            .filter(|r| r.stamp > ledger.judged_at)
            .collect();
        let Some(first) = late.first() else { continue };
        let Some(result) = results.get_mut(ledger.index) else {
            continue;
        };
        let violations = expect::judge_scenario(&ledger.facts, &records);
        let note = format!(
            "reopened: {} charging request(s) arrived after the verdict, the first {} ms after it ({})",
            late.len(),
            first
                .stamp
                .at
                .saturating_duration_since(ledger.judged_at.at)
                .as_millis(),
            world::record_line(first)
        );
        add_violations(result, &violations, Some(&note));
    }
}

/// Adds a result; returns its position.
fn push(ctx: &Context, result: ScenarioResult) -> usize {
    let mut results = ctx.results.lock().unwrap_or_else(PoisonError::into_inner);
    results.push(result);
    results.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charging::ch1::Ch1Request;
    use crate::charging::enabler::AnswerOutcome;
    use crate::timeline::stamp;

    fn record(answer: AnswerOutcome) -> ChargingRecord {
        let req = Ch1Request::start("sid;1").served_user("sip:alice.1x@test.invalid");
        let (_, local) = crate::charging::rf::sample_acr_start();
        ChargingRecord {
            stamp: stamp(),
            peer: "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!()),
            message: req.to_acr(&local, "cdf.test.invalid"),
            ch1: Ok(req),
            warnings: Vec::new(),
            answer,
            retransmissions: 0,
            protocol_error: None,
        }
    }

    fn result(verdict: Verdict) -> ScenarioResult {
        ScenarioResult {
            feature: "f".into(),
            clause: "6.2.3.1".into(),
            test_purpose: "TP".into(),
            scenario: "s".into(),
            verdict,
            detail: None,
            rules: Vec::new(),
            served_users: Vec::new(),
            known_deviation: None,
            warnings: Vec::new(),
            duration: Duration::ZERO,
            ladder: Ladder::default(),
        }
    }

    #[test]
    fn an_unanswered_request_breaks_the_harness_rule() {
        let answered = record(AnswerOutcome::Answered {
            result_code: 2001,
            stamp: stamp(),
        });
        assert!(steps::judge::harness_rules(std::slice::from_ref(&answered)).is_none());
        let withheld = record(AnswerOutcome::Withheld);
        let v = steps::judge::harness_rules(&[answered, withheld]).map(|v| v.rule.id);
        assert_eq!(v, Some("harness.every-request-answered"));
        assert_eq!(rules::EVERY_REQUEST_ANSWERED.owner, rules::Owner::Harness);
    }

    #[test]
    fn a_broken_rule_turns_a_pass_into_a_failure_named_by_it_first() {
        let v = Violation::new(&rules::NO_START_ON_FAILURE, "s", "no Start", "Start #0");
        let mut r = result(Verdict::Pass);
        add_violations(&mut r, std::slice::from_ref(&v), Some("reopened: late"));
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(r.rules, ["off.start.none-on-failure"]);
        let detail = r.detail.clone().unwrap_or_default();
        assert!(detail.starts_with("reopened: late\n[6.2.3.1] off.start.none-on-failure"));
        // The same rule again adds nothing; another is added after it.
        add_violations(&mut r, &[v], None);
        assert_eq!(r.detail.as_deref(), Some(detail.as_str()));
        let other = Violation::new(&rules::ONE_START, "s", "1", "2");
        add_violations(&mut r, &[other], None);
        assert_eq!(
            r.rules,
            ["off.start.none-on-failure", "off.session.one-start"]
        );
        // An inconclusive scenario that broke a rule failed; an error stays an error.
        let mut r = result(Verdict::Inconclusive);
        add_violations(
            &mut r,
            &[Violation::new(&rules::ONE_START, "", "", "")],
            None,
        );
        assert_eq!(r.verdict, Verdict::Fail);
        let mut r = result(Verdict::Error);
        add_violations(
            &mut r,
            &[Violation::new(&rules::ONE_START, "", "", "")],
            None,
        );
        assert_eq!(r.verdict, Verdict::Error);
        assert_eq!(r.rules, ["off.session.one-start"]);
    }
}
