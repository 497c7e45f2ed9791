//! `cpmcc`: run the CPM charging conformance suite, or the reference server.
//!
//! Exit codes: 0 every scenario passed (or is not applicable, or a known
//! deviation); 1 a scenario failed, was inconclusive or hit a harness error;
//! 2 the run could not start (bad profile, port in use, bad arguments).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use cpmcc::harness::{self, RunOptions};
use cpmcc::profile::SutProfile;
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
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Bind harness and embedded-SUT sockets on free ports instead of the profile's.
    #[arg(long)]
    free_ports: bool,
    /// Switch on a deviation in the embedded reference SUT (repeatable).
    #[arg(long = "deviation", value_name = "NAME")]
    deviations: Vec<String>,
    /// Where to write the machine-readable summary.
    #[arg(long, default_value = "reports/summary.json")]
    json: PathBuf,
    /// Where to write cucumber's step-by-step log.
    #[arg(long, default_value = "reports/cucumber.log")]
    cucumber_log: PathBuf,
}

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
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cpmcc: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let profile_path = locate(&args.profile);
    let profile = SutProfile::load(&profile_path)?;
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
    let summary = harness::run(RunOptions {
        profile,
        features: locate(&args.features),
        tags: args.tags,
        concurrency: args.concurrency,
        free_ports: args.free_ports,
        deviations,
        cucumber_log: Some(args.cucumber_log.clone()),
    })
    .await?;
    print!("{}", summary.render());
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let json = serde_json::to_string_pretty(&summary)?;
    // Written whole to a temporary name, then renamed: never half a report.
    let tmp = args.json.with_extension("json.tmp");
    std::fs::write(&tmp, json).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.json)
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    Ok(if summary.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn serve(config: &Path) -> anyhow::Result<ExitCode> {
    let config = SutConfig::load(config)?;
    // Like a real server, keep trying until the Charging Enabler listens.
    let mut said = false;
    let running = loop {
        match sut::start(config.clone()).await {
            Ok(running) => break running,
            Err(sut::SutError::Charging { address, reason }) => {
                if !said {
                    eprintln!(
                        "reference CPM server: waiting for the Charging Enabler at {address} ({reason})"
                    );
                    said = true;
                }
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
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
