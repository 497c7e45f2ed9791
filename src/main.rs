//! `cpmcc`: run the CPM charging conformance suite, or the reference server.
//!
//! Exit codes: 0 every scenario passed (or is not applicable, or a known
//! deviation); 1 a scenario failed, was inconclusive or hit a harness error,
//! or a message belonged to no scenario (with `--baseline`: a pass was lost
//! or a listed failure now passes); 2 the run could not start (bad profile,
//! a baseline that cannot be read or parsed, port in use, bad arguments, an
//! output path that cannot be written, `--free-ports` with an external SUT);
//! 3 no SUT connected to the Charging Enabler; 130 / 143 the run was
//! stopped by SIGINT / SIGTERM (the summary holds what finished, marked
//! `"interrupted": true`).
//!
//! Reports go to a new folder per run, `reports/<run-id>/`, and
//! `reports/latest` points at it; `--json`, `--cucumber-log`, `--junit` and
//! `--cucumber-json` put one report elsewhere. A run first creates its
//! folder and moves `latest` to it, and removes what an earlier run left at
//! its explicit paths, so that a run that cannot start, or dies, never
//! leaves an older run's verdict where CI looks for this one's.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use cpmcc::harness::{self, Listening, RunHooks, RunOptions};
use cpmcc::profile::SutProfile;
use cpmcc::report::baseline::{Baseline, Comparison};
use cpmcc::report::capture::{self, WireRecorder};
use cpmcc::report::catalog;
use cpmcc::report::certificate::{self, Certificate, Gate, Hashes, Identity};
use cpmcc::report::html;
use cpmcc::report::run_dir::{self, RunDir};
use cpmcc::report::sanitize::escape;
use cpmcc::sut::{self, Deviation, SutConfig};

#[derive(Debug, Parser)]
#[command(
    name = "cpmcc",
    version,
    about = "Conformance test harness for the charging of OMA CPM servers",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the suite against the SUT of a profile (the default command).
    Run(RunArgs),
    /// Run the reference CPM server on its own, until interrupted.
    Sut {
        /// The server's YAML config, e.g. fixtures/sut/reference-server.yaml.
        #[arg(long)]
        config: PathBuf,
    },
    /// List the reference server's named deviations and the rule each breaks.
    Deviations,
    /// List every test purpose: id, clause, mode, title, what it needs of the SUT.
    List {
        /// Features folder.
        #[arg(long, default_value = "features")]
        features: PathBuf,
        /// One JSON array, an object per test purpose.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Clone)]
struct RunArgs {
    /// SUT profile (YAML).
    #[arg(long, default_value = "fixtures/sut/reference.yaml")]
    profile: PathBuf,
    /// Features folder.
    #[arg(long, default_value = "features")]
    features: PathBuf,
    /// Tag expression selecting scenarios, e.g. "@clause-6.2.3.7 and @offline".
    #[arg(long)]
    tags: Option<String>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = cpmcc::harness::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Bind harness and embedded-SUT sockets on free ports instead of the profile's.
    #[arg(long)]
    free_ports: bool,
    /// Switch on a deviation in the embedded reference SUT (repeatable).
    #[arg(long = "deviation", value_name = "NAME")]
    deviations: Vec<String>,
    /// Reports folder: each run writes into a new DIR/<run-id>/ and points DIR/latest at it.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    reports: PathBuf,
    /// Where to write the machine-readable summary [default: DIR/<run-id>/summary.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to write cucumber's step-by-step log [default: DIR/<run-id>/cucumber.log].
    #[arg(long)]
    cucumber_log: Option<PathBuf>,
    /// Where to write the JUnit XML report (cucumber's writer; one test case per scenario)
    /// [default: DIR/<run-id>/junit.xml].
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Where to write the Cucumber JSON report (cucumber's writer)
    /// [default: DIR/<run-id>/cucumber.json].
    #[arg(long)]
    cucumber_json: Option<PathBuf>,
    /// Compare the run with a baseline (JSON, or YAML for .yaml/.yml): the gate
    /// then fails only on change (a pass lost, a listed failure now passing).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Record this run's per-scenario verdicts as a baseline (JSON, or YAML
    /// for .yaml/.yml).
    #[arg(long, value_name = "FILE")]
    write_baseline: Option<PathBuf>,
    /// Do not record the run's SIP and Diameter messages into
    /// DIR/<run-id>/capture.pcap.
    #[arg(long)]
    no_capture: bool,
}

/// The four reports of a run, and the run folder if any of them goes there.
#[derive(Debug)]
struct Outputs {
    run_dir: Option<RunDir>,
    summary: PathBuf,
    cucumber_log: PathBuf,
    junit: PathBuf,
    cucumber_json: PathBuf,
}

impl Outputs {
    /// Creates the run folder and moves `latest` to it, unless every report
    /// has an explicit path (then the reports folder is left alone).
    fn prepare(args: &RunArgs) -> anyhow::Result<Self> {
        let explicit = [
            &args.json,
            &args.cucumber_log,
            &args.junit,
            &args.cucumber_json,
        ];
        let run_dir = if explicit.iter().any(|p| p.is_none()) {
            let dir = run_dir::start(&args.reports).with_context(|| {
                format!(
                    "cannot write {}: no run folder with {} pointing at it",
                    args.reports.display(),
                    run_dir::LATEST
                )
            })?;
            // Where reports went before there were run folders: gone, so
            // nobody reads an old verdict there as this run's.
            for name in REPORTS {
                let flat = args.reports.join(name);
                if flat.is_file() {
                    std::fs::remove_file(&flat)
                        .with_context(|| format!("cannot remove {}", flat.display()))?;
                }
            }
            Some(dir)
        } else {
            None
        };
        let at = |path: &Option<PathBuf>, name: &str| match (path, &run_dir) {
            (Some(path), _) => path.clone(),
            (None, Some(dir)) => dir.path.join(name),
            // Not reached: a run folder exists unless every path is explicit.
            (None, None) => args.reports.join(name),
        };
        let [summary, cucumber_log, junit, cucumber_json] = REPORTS;
        let outputs = Outputs {
            summary: at(&args.json, summary),
            cucumber_log: at(&args.cucumber_log, cucumber_log),
            junit: at(&args.junit, junit),
            cucumber_json: at(&args.cucumber_json, cucumber_json),
            run_dir,
        };
        // Before anything can fail: no stale verdict survives this run.
        prepare_output(&outputs.summary, &[])?;
        prepare_output(&outputs.cucumber_log, &[])?;
        prepare_output(&outputs.junit, &[])?;
        prepare_output(&outputs.cucumber_json, &[])?;
        Ok(outputs)
    }
}

/// The reports of a run folder, by file name.
const REPORTS: [&str; 4] = ["summary.json", "cucumber.log", "junit.xml", "cucumber.json"];

/// A relative default that is missing here is looked up beside Cargo.toml,
/// so `cargo run` works from any folder of the checkout.
fn locate(path: &Path) -> PathBuf {
    if path.is_relative() && !path.exists() {
        let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        if beside.exists() {
            return beside;
        }
    }
    path.to_owned()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cpmcc: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            None => run(cli.run).await,
            Some(Command::Run(args)) => run(args).await,
            Some(Command::Sut { config }) => serve(&config).await,
            Some(Command::Deviations) => {
                for d in Deviation::ALL {
                    println!("{:<32} breaks {}", d.name(), d.breaks());
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(Command::List { features, json }) => list(&locate(&features), json),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            // A profile or feature file may quote what it holds: one line, escaped.
            eprintln!("cpmcc: {}", escape(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

/// Refuses an output path that cannot be written, before anything runs, and
/// removes what an earlier run left there.
fn prepare_output(path: &Path, stale: &[PathBuf]) -> anyhow::Result<()> {
    let refuse = |why: String| anyhow::anyhow!("cannot write {}: {why}", path.display());
    if path.is_dir() {
        return Err(refuse("it is a directory".into()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| refuse(e.to_string()))?;
    }
    for old in std::iter::once(path).chain(stale.iter().map(PathBuf::as_path)) {
        match std::fs::remove_file(old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(refuse(format!("cannot remove the previous one: {e}"))),
        }
    }
    // Write something where the file will go, then take it away again.
    let probe = tmp_of(path);
    std::fs::write(&probe, b"").map_err(|e| refuse(e.to_string()))?;
    std::fs::remove_file(&probe).map_err(|e| refuse(e.to_string()))?;
    Ok(())
}

/// The temporary name a file is written under before it is renamed.
fn tmp_of(path: &Path) -> PathBuf {
    // Two runs at once never share a temporary name.
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(name)
}

/// A report, written whole to a temporary name, then renamed: never half a
/// report.
fn write_whole(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = tmp_of(path);
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// summary.json: the summary, the gate, the comparison with a baseline and
/// the identity block certificate.json has too.
#[derive(serde::Serialize)]
struct SummaryFile<'a> {
    #[serde(flatten)]
    summary: &'a harness::verdict::Summary,
    /// `pass`, `fail` or `interrupted`.
    gate: &'static str,
    exit_code: u8,
    /// With `--baseline`: what changed against it.
    baseline: Option<&'a Comparison>,
    identity: &'a Identity,
}

/// Refuses a baseline path to write that cannot be written, before anything
/// runs; unlike a report, a baseline there is kept until this run replaces it.
fn check_writable(path: &Path) -> anyhow::Result<()> {
    let refuse = |why: String| anyhow::anyhow!("cannot write baseline {}: {why}", path.display());
    if path.is_dir() {
        return Err(refuse("it is a directory".into()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| refuse(e.to_string()))?;
    }
    let probe = tmp_of(path);
    std::fs::write(&probe, b"").map_err(|e| refuse(e.to_string()))?;
    std::fs::remove_file(&probe).map_err(|e| refuse(e.to_string()))?;
    Ok(())
}

fn utc_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Resolves to the number of the first SIGINT or SIGTERM; a second one ends
/// the process at once (128 + its number), summary unwritten.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = u8>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut next = async || {
            tokio::select! {
                _ = int.recv() => 2u8,
                _ = term.recv() => 15u8,
            }
        };
        let _ = first_tx.send(next().await);
        let again = next().await;
        eprintln!("cpmcc: stopped again: exiting at once, no summary written");
        std::process::exit(128 + i32::from(again));
    });
    Ok(async move {
        match first_rx.await {
            Ok(signal) => signal,
            Err(_) => std::future::pending().await,
        }
    })
}

/// `cpmcc list`: the test purposes of the features, as lines or JSON.
fn list(features: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let all = catalog::load(features)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        print!("{}", catalog::render(&all));
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = utc_now();
    let outputs = Outputs::prepare(&args)?;
    let profile_path = locate(&args.profile);
    let profile = SutProfile::load(&profile_path)?;
    // A baseline that cannot be used stops the run before it starts.
    let baseline = match &args.baseline {
        Some(path) => Some(Baseline::load(path)?),
        None => None,
    };
    if let Some(path) = &args.write_baseline {
        check_writable(path)?;
    }
    let deviations = args
        .deviations
        .iter()
        .map(|name| {
            Deviation::from_name(name)
                .with_context(|| format!("unknown deviation `{name}` (see `cpmcc deviations`)"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !deviations.is_empty() && profile.sut.embedded.is_none() {
        anyhow::bail!(
            "--deviation applies to the embedded reference SUT, but {} describes an external SUT",
            profile_path.display()
        );
    }
    if args.free_ports && profile.sut.embedded.is_none() {
        anyhow::bail!(
            "--free-ports needs the embedded reference SUT, but {} describes an external SUT \
             (no sut.embedded): it reaches the harness only at the profile's \
             harness.sip.listen and harness.diameter.listen, never on a random port",
            profile_path.display()
        );
    }
    let caught = std::rc::Rc::new(std::cell::Cell::new(None));
    let stop = {
        let signal = stop_signal()?;
        let caught = caught.clone();
        Box::pin(async move { caught.set(Some(signal.await)) })
    };
    let connections = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let features = locate(&args.features);
    let hashes = Hashes::of(&features, &profile_path);
    let tool = certificate::Tool::current();
    // The capture goes into the run folder: without one, there is none.
    let recorder = (!args.no_capture && outputs.run_dir.is_some()).then(WireRecorder::default);
    let hooks = RunHooks {
        recorder: recorder.clone(),
        on_sut_connections: Some(Box::new({
            let connections = connections.clone();
            move |all| *connections.borrow_mut() = all
        })),
        on_listening: Some(Box::new(|at: Listening| {
            eprintln!(
                "cpmcc: listening: sip={} transport={} diameter={}",
                at.sip, at.sip_transport, at.diameter
            );
        })),
        stop: Some(stop),
    };
    let summary = harness::run_with(
        RunOptions {
            profile: profile.clone(),
            features,
            tags: args.tags,
            concurrency: args.concurrency,
            free_ports: args.free_ports,
            deviations,
            cucumber_log: Some(outputs.cucumber_log.clone()),
            junit: Some(outputs.junit.clone()),
            cucumber_json: Some(outputs.cucumber_json.clone()),
        },
        hooks,
    )
    .await;
    // Whatever became of the run (interrupted, or no SUT at all), what was
    // recorded is written.
    if let (Some(recorder), Some(dir)) = (&recorder, &outputs.run_dir) {
        write_capture(recorder, &dir.path.join(capture::FILE_NAME));
    }
    let summary = match summary {
        Ok(summary) => summary,
        // The SUT is not there at all: its own exit code, so a CI job can
        // tell "the SUT is broken" from "the SUT was never reached".
        Err(e @ harness::RunError::NoDiameterPeer { .. }) => {
            eprintln!("cpmcc: {e}");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.into()),
    };
    let ended = utc_now();
    print!("{}", summary.render());

    // The gate: unchanged without a baseline; with one, only change fails
    // (an interrupted run, an empty one or a stray still fail it: the
    // baseline holds verdicts of scenarios, nothing else).
    let comparison = baseline.map(|b| Comparison {
        file: args
            .baseline
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        ..b.compare(&summary.results)
    });
    let passed = match &comparison {
        None => summary.passed(),
        Some(c) => {
            !summary.interrupted
                && !summary.results.is_empty()
                && summary.strays.is_empty()
                && summary.strays_total == 0
                && c.passed()
        }
    };
    let (gate, exit_code) = match caught.get() {
        Some(signal) => ("interrupted", 128 + signal),
        None if passed => ("pass", 0),
        None => ("fail", 1),
    };
    if let Some(c) = &comparison {
        print!("{}", c.render());
        println!(
            "gate against the baseline: {} (exit {exit_code})",
            gate.to_uppercase()
        );
    }

    let identity = Identity {
        cpmcc: tool,
        profile: escape(&profile.name),
        profile_file: profile_path.display().to_string(),
        sut: certificate::peers(&connections.borrow()),
        hashes,
        started,
        ended,
    };
    let file = SummaryFile {
        summary: &summary,
        gate,
        exit_code,
        baseline: comparison.as_ref(),
        identity: &identity,
    };
    write_whole(&outputs.summary, &serde_json::to_string_pretty(&file)?)?;
    if let Some(dir) = &outputs.run_dir {
        let cert = Certificate::new(
            identity,
            &profile,
            &summary,
            Gate {
                result: gate,
                exit_code,
                against_baseline: comparison.is_some(),
            },
        );
        write_whole(
            &dir.path.join(CERTIFICATE_JSON),
            &serde_json::to_string_pretty(&cert)?,
        )?;
        write_whole(&dir.path.join(CERTIFICATE_MD), &cert.to_markdown())?;
        write_whole(
            &dir.path.join(html::FILE_NAME),
            &html::render(&summary, gate),
        )?;
        eprintln!(
            "cpmcc: reports in {} ({} points there)",
            dir.path.display(),
            args.reports.join(run_dir::LATEST).display()
        );
    }
    if let Some(path) = &args.write_baseline {
        if summary.interrupted {
            eprintln!(
                "cpmcc: baseline {} not written: the run was interrupted",
                path.display()
            );
        } else {
            let written = Baseline::of(&profile.name, &summary.results);
            write_whole(path, &written.to_text(path))
                .with_context(|| format!("cannot write baseline {}", path.display()))?;
            eprintln!(
                "cpmcc: baseline of {} scenario(s) written to {}",
                written.scenarios.len(),
                path.display()
            );
        }
    }
    Ok(ExitCode::from(exit_code))
}

/// Writes what `recorder` holds as a pcap file at `path`; a capture that
/// cannot be written is a warning, not a failed run.
fn write_capture(recorder: &WireRecorder, path: &Path) {
    let recorded = recorder.take();
    let tmp = tmp_of(path);
    let written = std::fs::write(&tmp, capture::to_pcap(&recorded.events))
        .and_then(|()| std::fs::rename(&tmp, path));
    match written {
        Ok(()) if recorded.dropped_events > 0 => eprintln!(
            "cpmcc: {}: {} message(s) recorded, {} more ({} bytes) dropped past the capture's limit",
            path.display(),
            recorded.events.len(),
            recorded.dropped_events,
            recorded.dropped_bytes
        ),
        Ok(()) => {}
        Err(e) => eprintln!("cpmcc: warning: cannot write {}: {e}", path.display()),
    }
}

/// The certificate of a run, in its run folder.
const CERTIFICATE_JSON: &str = "certificate.json";
const CERTIFICATE_MD: &str = "certificate.md";

async fn serve(config: &Path) -> anyhow::Result<ExitCode> {
    let config = SutConfig::load(config)?;
    // Like a real server: take calls at once; its Diameter client connects
    // to the Charging Enabler on its own, with backoff, and again after every
    // drop, so one server serves many harness runs.
    let running = sut::start(config.clone()).await?;
    if let Some(c) = &config.charging {
        println!(
            "reference CPM server: charging to {} (connecting, and reconnecting with backoff)",
            c.server
        );
    }
    println!(
        "reference CPM server: SIP on {}, admin on {}; Ctrl-C stops it",
        running.sip,
        running
            .admin
            .map(|a| a.to_string())
            .unwrap_or_else(|| "(none)".into())
    );
    tokio::signal::ctrl_c().await?;
    running.shutdown();
    Ok(ExitCode::SUCCESS)
}
