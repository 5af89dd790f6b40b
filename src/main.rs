//! The `aqueduct` binary: `run` (one peer), `demo` (a local three-peer
//! mesh), `certs` (the cluster CA and node certificates), `ctl` (a client
//! of the REST API), `bench` (measurements of real peers) and `register` (a
//! registry sidecar for one service instance).
//!
//! Owns argument parsing, logging set-up and exit codes; everything else is
//! in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use aqueduct::certs::{self, NodeName, NodeValidity};
use aqueduct::config::RunArgs;

#[derive(Parser)]
#[command(
    name = "aqueduct",
    version,
    about = "Peer-to-peer control plane for HAProxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one peer (with no options: a single peer on 127.0.0.1:10000).
    Run(Box<RunArgs>),
    /// Start a local three-peer mesh with the example configuration.
    Demo(aqueduct::demo::DemoArgs),
    /// Manage the cluster CA and node certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Talk to a peer's REST API (tables, or --json).
    Ctl(aqueduct::ctl::CtlArgs),
    /// Measure real peers on loopback (for BENCHMARKS.md).
    Bench(aqueduct::bench::BenchArgs),
    /// Keep one service instance registered (heartbeats until stopped, then
    /// deregisters).
    Register(aqueduct::register::RegisterArgs),
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Create the cluster CA (ca.pem, ca.key) in DIR.
    Init {
        /// Where to write the CA.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a node certificate signed by the CA.
    Issue {
        #[command(flatten)]
        node: NodeOfCa,
        /// Where to write node.pem, node.key and ca.pem.
        #[arg(long)]
        out: PathBuf,
        /// How long the certificate is valid, in days (1 to 3650). A
        /// running peer picks up a new certificate and key without a
        /// restart (SIGHUP, or within seconds of the files changing).
        #[arg(long, value_name = "N", default_value_t = NodeValidity::DEFAULT,
              allow_negative_numbers = true)]
        days: NodeValidity,
    },
    /// Revoke the certificates of a node name issued up to now: writes a
    /// revocation signed by the CA, to hand to any peer with `aqueduct ctl
    /// revoke FILE`. Certificates issued for the name afterwards are valid.
    Revoke {
        #[command(flatten)]
        node: NodeOfCa,
        /// Where to write the revocation (a new file).
        #[arg(long)]
        out: PathBuf,
    },
}

/// A node name and the CA that signs for it.
#[derive(clap::Args)]
struct NodeOfCa {
    /// The CA directory (from `certs init`).
    #[arg(long)]
    ca: PathBuf,
    /// The node's name (a DNS label).
    #[arg(long)]
    name: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cli = Cli::parse();
    if cli.command.is_none() {
        // Bare `aqueduct` is `aqueduct run`: parsed as such, so that the
        // AQUEDUCT_* variables apply.
        let program = std::env::args_os()
            .next()
            .unwrap_or_else(|| "aqueduct".into());
        cli = Cli::parse_from([program, "run".into()]);
    }
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aqueduct: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or_else(|| Command::Run(Box::default())) {
        Command::Run(args) => {
            let options = args.resolve()?;
            block_on(aqueduct::daemon::run(options))??;
        }
        Command::Demo(args) => block_on(aqueduct::demo::run(args))??,
        Command::Ctl(args) => block_on(aqueduct::ctl::run(args))??,
        Command::Bench(args) => block_on(aqueduct::bench::run(args))??,
        Command::Register(args) => block_on(aqueduct::register::run(args))??,
        Command::Certs(CertsCommand::Init { out }) => {
            certs::init_ca(&out).with_context(|| format!("creating a CA in {}", out.display()))?;
            println!("cluster CA written to {}", out.display());
        }
        Command::Certs(CertsCommand::Issue {
            node: NodeOfCa { ca, name },
            out,
            days,
        }) => {
            let name = NodeName::new(&name)?;
            certs::issue_for(&ca, &name, &out, days)
                .with_context(|| format!("issuing a certificate for {name}"))?;
            println!(
                "certificate for {name} (valid {days} days) written to {}",
                out.display()
            );
        }
        Command::Certs(CertsCommand::Revoke {
            node: NodeOfCa { ca, name },
            out,
        }) => {
            let name = NodeName::new(&name)?;
            certs::revoke(&ca, &name, &out)
                .with_context(|| format!("revoking the certificates of {name}"))?;
            println!(
                "revocation of {name} written to {}; hand it to a peer with `aqueduct ctl revoke`",
                out.display()
            );
        }
    }
    Ok(())
}

/// Runs `work` on a multi-threaded runtime. Blocking helpers still running
/// when it is done (a DNS lookup for a seed, say) get one second, so that
/// a slow resolver cannot hold the process after a shutdown.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(work);
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(result)
}
