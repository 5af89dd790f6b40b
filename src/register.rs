//! `aqueduct register`: a sidecar that keeps one service instance
//! registered — it heartbeats the instance to a peer until stopped, then
//! deregisters it.
//!
//! Owns the client side of the registry: the heartbeat period, failing
//! over between the peers given with `--api`, and backoff when none
//! answers. Must not decide liveness: the peers do, from the lease.

use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::client::{ApiClient, ClientArgs, ClientError};
use crate::crdt::model::{Host, Lease, Port, ServiceName, Version};
use crate::daemon::ShutdownSignals;

/// First pause after every peer failed; doubles up to the heartbeat period.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Bound on one request to a peer (less for short periods, so that one
/// peer that does not answer cannot use up the lease).
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// `aqueduct register`'s options.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// A peer's API (repeatable: tried in order when one does not answer).
    #[arg(long = "api", required = true)]
    pub apis: Vec<String>,
    /// The instance: NAME@VERSION:HOST:PORT (IPv6 hosts in brackets).
    pub instance: Instance,
    /// The lease, in seconds: how long the instance stays registered after
    /// the last heartbeat that reached a peer.
    #[arg(long, default_value_t = 10)]
    pub ttl: u32,
    /// Seconds between heartbeats (default: a third of the lease).
    #[arg(long)]
    pub interval: Option<f64>,
    /// Metadata, `key=value` (repeatable; values are strings).
    #[arg(long = "meta", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// The write token of the peers' API and, for HTTPS, the CA.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Why the sidecar stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// An option is unusable.
    #[error("{0}")]
    Invalid(String),
    /// Signal handlers could not be installed.
    #[error("cannot listen for SIGTERM and SIGINT: {0}")]
    Signals(std::io::Error),
    /// A peer refused the registration as invalid.
    #[error("the registration was refused: {0}")]
    Refused(String),
}

/// One service instance, as `NAME@VERSION:HOST:PORT`.
#[derive(Debug, Clone)]
pub struct Instance {
    name: ServiceName,
    version: Version,
    host: Host,
    port: Port,
}

impl FromStr for Instance {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape = || format!("{text:?} is not NAME@VERSION:HOST:PORT");
        let (name, rest) = text.split_once('@').ok_or_else(shape)?;
        let (version, address) = rest.split_once(':').ok_or_else(shape)?;
        let (host, port) = address.rsplit_once(':').ok_or_else(shape)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let invalid = |e: crate::crdt::model::InvalidValue| format!("{text:?}: {e}");
        Ok(Instance {
            name: ServiceName::new(name).map_err(invalid)?,
            version: Version::new(version).map_err(invalid)?,
            host: Host::new(host).map_err(invalid)?,
            port: port
                .parse::<i64>()
                .map_err(|_| format!("{text:?}: {port:?} is not a port"))
                .and_then(|p| Port::new(p).map_err(invalid))?,
        })
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}:{}",
            self.name, self.version, self.host, self.port
        )
    }
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    if key == "secondsToExpire" {
        return Err("the lease is --ttl, not --meta secondsToExpire".to_owned());
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Heartbeats until SIGTERM or SIGINT, then deregisters.
pub async fn run(args: RegisterArgs) -> Result<(), RegisterError> {
    let ttl_ms = args.ttl.saturating_mul(1000);
    Lease::new(0, ttl_ms).map_err(|e| RegisterError::Invalid(format!("--ttl: {e}")))?;
    let period = match args.interval {
        Some(seconds) if seconds > 0.0 && seconds * 1000.0 < f64::from(ttl_ms) => {
            Duration::from_secs_f64(seconds)
        }
        Some(seconds) => {
            return Err(RegisterError::Invalid(format!(
                "--interval {seconds}: must be above 0 and below the lease ({} s)",
                args.ttl
            )));
        }
        None => Duration::from_millis(u64::from(ttl_ms / 3)),
    };
    let mut signals = ShutdownSignals::new().map_err(RegisterError::Signals)?;
    let credentials = args
        .client
        .resolve()
        .map_err(|e| RegisterError::Invalid(e.to_string()))?;
    let timeout = REQUEST_TIMEOUT_MAX.min(period / 2);
    let clients = args
        .apis
        .iter()
        .map(|api| ApiClient::new(api, &credentials, timeout))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RegisterError::Invalid(format!("--api: {e}")))?;
    let mut body: Map<String, Value> = args
        .meta
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    body.insert("secondsToExpire".to_owned(), Value::from(args.ttl));
    let body = Value::Object(body);
    let mut client = Peers {
        clients,
        path: instance_path(&args.instance),
        current: 0,
    };
    let mut registered = false;
    let mut backoff = BACKOFF_FIRST;
    loop {
        let pause = match client.send(reqwest::Method::POST, Some(&body)).await? {
            Some(api) => {
                if !registered {
                    registered = true;
                    println!("registered {} via {api}", args.instance);
                }
                backoff = BACKOFF_FIRST;
                period
            }
            None => {
                tracing::warn!("no peer took the heartbeat of {}", args.instance);
                let pause = backoff;
                backoff = (backoff * 2).min(period);
                pause
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = signals.recv() => break,
        }
    }
    match client.send(reqwest::Method::DELETE, None).await? {
        Some(api) => println!("deregistered {} via {api}", args.instance),
        None => tracing::warn!(
            "no peer took the deregistration of {}: it expires with its lease",
            args.instance
        ),
    }
    Ok(())
}

/// The peers, and which one is in use.
struct Peers {
    clients: Vec<ApiClient>,
    path: Vec<String>,
    current: usize,
}

impl Peers {
    /// Sends to the peer in use, then to the others in order; returns the
    /// peer that answered with success (and keeps using it), `None` if none
    /// did, or the refusal of a request no peer would accept (an invalid
    /// instance, or a missing or wrong token).
    async fn send(
        &mut self,
        method: reqwest::Method,
        body: Option<&Value>,
    ) -> Result<Option<String>, RegisterError> {
        let path: Vec<&str> = self.path.iter().map(String::as_str).collect();
        for attempt in 0..self.clients.len() {
            let index = (self.current + attempt) % self.clients.len();
            let client = &self.clients[index];
            let error = match client.send(method.clone(), &path, body).await {
                Ok(_) => None,
                // A deregistration the peer does not know of is done.
                Err(ClientError::Api { status: 404, .. }) if method == reqwest::Method::DELETE => {
                    None
                }
                Err(e) => Some(e),
            };
            match error {
                None => {
                    self.current = index;
                    return Ok(Some(client.base().to_owned()));
                }
                // Every peer would say the same: retrying cannot help.
                Some(e @ ClientError::Api { status: 400, .. }) => {
                    return Err(RegisterError::Refused(format!("{}: {e}", client.base())));
                }
                Some(e) if e.is_access_refused() => {
                    return Err(RegisterError::Refused(format!(
                        "{}: {e} (give the write token with --token-file, --token or \
                         AQUEDUCT_API_TOKEN)",
                        client.base()
                    )));
                }
                Some(e) => tracing::warn!("{}: {e}", client.base()),
            }
        }
        Ok(None)
    }
}

/// `/registrations/NAME/VERSION/HOST/PORT`, as path segments.
fn instance_path(instance: &Instance) -> Vec<String> {
    vec![
        "registrations".to_owned(),
        instance.name.to_string(),
        instance.version.to_string(),
        instance.host.to_string(),
        instance.port.to_string(),
    ]
}
