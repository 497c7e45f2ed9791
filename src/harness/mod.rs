//! The harness: starts the Charging Enabler and the SIP agent (and the
//! embedded reference SUT when the profile asks for it), runs the Gherkin
//! features with scenarios concurrent, checks the rules that hold for every
//! flow after each scenario, and turns it all into verdicts.

pub mod expect;
pub mod steps;
pub mod stimulus;
pub mod verdict;
pub mod world;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cucumber::gherkin::tagexpr::TagOperation;
use cucumber::tag::Ext as _;
use cucumber::writer::Stats as _;
use cucumber::{World as _, WriterExt as _, event, gherkin};
use futures::FutureExt as _;

use crate::charging::enabler::{Enabler, EnablerConfig};
use crate::diameter::commands::LocalIdentity;
use crate::profile::{SutProfile, Transport};
use crate::sip::agent::Agent;
use crate::sip::transaction::{Target, TransportKind};
use crate::sut::{self, Deviation, SutConfig};
use expect::{ObservedRequest, offline_session_rules};
use verdict::{ScenarioResult, Summary, Verdict};
use world::{Context, World};

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
    let started = Instant::now();
    let profile = options.profile.clone();
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
    let enabler = Enabler::bind(EnablerConfig {
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
    })
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
    let agent = Agent::bind(sip, advertise, transport, &profile.sut.domain)
        .await
        .map_err(|e| RunError::Agent {
            address: sip,
            reason: e.to_string(),
        })?;

    let mut running = None;
    let (sut_sip, sut_admin) = match &profile.sut.embedded {
        Some(embedded) => {
            let mut deviations = embedded.deviations.clone();
            deviations.extend(options.deviations.iter().copied());
            let config = SutConfig {
                sip: sut::config::SipConfig {
                    listen: free(profile.sut.sip.address, options.free_ports),
                    transport: profile.sut.sip.transport,
                },
                shape: embedded.shape,
                domain: profile.sut.domain.clone(),
                route_users_to: reachable(agent.local_addr()),
                charging: profile.offline().map(|o| sut::config::ChargingConfig {
                    server: reachable(enabler.local_addr()),
                    origin_host: "cpm.sut.test".into(),
                    origin_realm: "sut.test".into(),
                    destination_realm: profile.harness.origin_realm.clone(),
                    functions: o.functions.clone(),
                    service_context_id: o
                        .service_context_id
                        .clone()
                        .unwrap_or_else(|| "32260@3gpp.org".into()),
                    served_user_in_start_only: false,
                }),
                inactivity_timer: profile.stimuli.inactivity_timer,
                admin: Some(free(embedded.admin, options.free_ports)),
                deviations,
            };
            let sut = sut::start(config).await?;
            let addresses = (reachable(sut.sip), sut.admin.map(reachable));
            running = Some(sut);
            addresses
        }
        None => (profile.sut.sip.address, None),
    };

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
        user_names: Mutex::new(Default::default()),
    });
    world::install(context.clone());

    let outcome = run_features(&options, tags, &context).await;

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
    let ordering = profile
        .offline()
        .map(|o| format!("{:?}", o.ordering).to_lowercase())
        .unwrap_or_else(|| "n/a".into());
    let mut strays = agent.strays();
    strays.extend(unclaimed_charging(&context));
    Ok(Summary {
        sut: profile.name.clone(),
        ordering,
        results,
        strays,
        wall_time: started.elapsed(),
    })
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
    let ours: std::collections::HashSet<u64> = world::belonging_to(all.clone(), |r| {
        world::served_user_of(r).is_some_and(|u| names.contains(u))
    })
    .iter()
    .map(|r| r.stamp.seq)
    .collect();
    all.iter()
        .filter(|r| !ours.contains(&r.stamp.seq))
        .map(|r| {
            format!(
                "charging request for no test user from {}: {}",
                r.peer,
                r.message.describe()
            )
        })
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
            Box::new(std::fs::File::create(path).map_err(|e| RunError::Output {
                path: path.clone(),
                reason: e.to_string(),
            })?)
        }
        None => Box::new(std::io::sink()),
    };
    let filter_ctx = context.clone();
    let features_root = options.features.clone();
    let after_ctx = context.clone();
    let after_root = options.features.clone();
    let log_name = log_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the cucumber log (pass --cucumber-log)".into());
    let writer = World::cucumber()
        .with_writer(
            cucumber::writer::Basic::new(
                log,
                cucumber::writer::Coloring::Never,
                cucumber::writer::Verbosity::Default,
            )
            .summarized(),
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
        .filter_run(&options.features, move |feature, _rule, scenario| {
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
                        known_deviation: None,
                        warnings: Vec::new(),
                        duration: Duration::ZERO,
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

/// The reason a scenario does not apply to this SUT, from its `@needs-…` tags.
fn not_applicable(profile: &SutProfile, tags: &[&String]) -> Option<String> {
    let has = |t: &str| tags.iter().any(|x| x.as_str() == t);
    if has("offline") && profile.offline().is_none() {
        return Some("the SUT profile declares no offline charging (charging.offline)".into());
    }
    if has("needs-inactivity-timer") && profile.stimuli.inactivity_timer.is_none() {
        return Some(
            "the SUT profile declares no inactivity timer (stimuli.inactivity_timer)".into(),
        );
    }
    if has("needs-operator-terminate") && profile.stimuli.operator_terminate.is_none() {
        return Some(
            "the SUT profile names no operator command (stimuli.operator_terminate)".into(),
        );
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
        known_deviation: None,
        warnings: Vec::new(),
        duration: Duration::ZERO,
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
    // End what the scenario left open first, so that the rules below see
    // each charging session whole, Stop included; then let late requests in.
    steps::sip::teardown(w).await;
    tokio::time::sleep(ctx.profile.timers.settle).await;
    // The harness's own part of the rules: it answers every request (no step
    // withholds an answer yet). If it did not, no verdict on the SUT holds.
    let unanswered: Vec<String> = w
        .scenario_records()
        .iter()
        .filter(|r| !world::answered(r))
        .map(world::record_line)
        .collect();
    if !unanswered.is_empty() {
        result.verdict = Verdict::Error;
        result.detail = Some(format!(
            "the Charging Enabler left requests unanswered:\n{}",
            unanswered.join("\n")
        ));
    }
    for user in w.users.values() {
        ctx.enabler.remove_scripts_for(&user.name);
    }
    let mut violations = every_flow_rules(w);
    violations.extend(pinned_values(w));
    if !violations.is_empty() {
        let text = violations.join("\n");
        match result.verdict {
            // A broken rule is a failure whatever else went wrong.
            Verdict::Pass | Verdict::Inconclusive => {
                let before = result.detail.take();
                result.verdict = Verdict::Fail;
                result.detail = Some(match before {
                    Some(d) => format!("{text}\nalso: {d}"),
                    None => text,
                });
            }
            _ => {
                let d = result.detail.take().unwrap_or_default();
                result.detail = Some(format!("{d}\nalso:\n{text}"));
            }
        }
    }
    result.warnings = std::mem::take(&mut w.warnings);
    // What the SUT sent that is odd but legal: shown, never failed on.
    for record in w.scenario_records() {
        for warning in &record.warnings {
            result
                .warnings
                .push(format!("{}: {warning}", world::record_line(&record)));
        }
    }
    result.duration = w.started.elapsed();
    // Kept on a pass too, so the summary can say the mark is stale.
    result.known_deviation = ctx
        .profile
        .known_deviation(&result.test_purpose)
        .map(str::to_owned);
    w.users.clear();
    push(ctx, result);
}

fn push(ctx: &Context, result: ScenarioResult) {
    ctx.results
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(result);
}

/// Values the SUT profile pins (and only those): a SUT is free in what the
/// sources leave open, unless its profile says otherwise.
fn pinned_values(w: &World) -> Vec<String> {
    let mut out = Vec::new();
    let Some(pinned) = w
        .profile()
        .offline()
        .and_then(|o| o.service_context_id.clone())
    else {
        return out;
    };
    for record in w.scenario_records() {
        let Ok(c) = &record.ch1 else { continue };
        if c.service_context_id.as_deref() != Some(pinned.as_str()) {
            out.push(format!(
                "[profile] Service-Context-Id pinned by charging.offline.service_context_id\n  expected: {pinned}\n  observed: {} in {}",
                c.service_context_id.as_deref().unwrap_or("(absent)"),
                world::record_line(&record)
            ));
        }
    }
    out
}

/// The rules of `spec/flows.md` that hold for every offline flow, on every
/// charged function's session of this scenario.
fn every_flow_rules(w: &World) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for function in w.offline_functions() {
        if !seen.insert(format!("{function:?}")) {
            continue;
        }
        let observed: Vec<ObservedRequest> = w
            .records_for(function)
            .iter()
            .filter_map(|r| {
                let c = r.ch1.as_ref().ok()?;
                Some(ObservedRequest {
                    stamp: r.stamp,
                    kind: c.kind,
                    record_number: c.record_number,
                    session_id: c.session_id.clone(),
                })
            })
            .collect();
        for v in offline_session_rules(&observed) {
            out.push(format!(
                "[every flow] {} ({function})\n  expected: {}\n  observed: {}",
                v.rule,
                v.expected,
                v.observed.replace('\n', "\n            ")
            ));
        }
    }
    out
}
