//! `aqueduct ctl`: a client of a peer's REST API for people who prefer a
//! command line to curl: frontends, backends, members, registrations, the
//! A/B switch, mesh status and certificate revocations, as tables or
//! (`--json`) as the API's JSON.
//!
//! Owns argument parsing and presentation only. Must not know anything the
//! HTTP API does not say: it is a client like any other.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::{ApiClient, ClientArgs, ClientError};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::{Value, json};

/// `aqueduct ctl`'s options.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The peer's API.
    #[arg(
        long,
        env = "AQUEDUCT_CTL_API",
        default_value = "http://127.0.0.1:10000"
    )]
    pub api: String,
    /// The API token and, for HTTPS, the CA.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The resources `ctl` covers.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Frontends.
    #[command(subcommand)]
    Frontends(ObjectCommand),
    /// Backends.
    #[command(subcommand)]
    Backends(ObjectCommand),
    /// Static members of a backend.
    #[command(subcommand)]
    Members(MemberCommand),
    /// Point a dynamic backend at another version (the A/B switch).
    Switch {
        /// The backend.
        backend: String,
        /// The version to send traffic to.
        #[arg(long)]
        version: String,
        /// A new service name, if it changes.
        #[arg(long)]
        name: Option<String>,
        /// Switch even if no instance of that version is registered.
        #[arg(long)]
        force: bool,
    },
    /// Registered service instances.
    #[command(subcommand)]
    Registrations(RegistrationCommand),
    /// This peer: identity, digest, convergence.
    Status,
    /// The peers this peer knows, with their state.
    Peers,
    /// This peer's HAProxy: running, reloads, runtime changes, last error.
    Haproxy,
    /// Hand a certificate revocation (from `aqueduct certs revoke`) to the
    /// peer, which spreads it to the whole mesh (needs the write token).
    Revoke {
        /// The revocation file.
        file: PathBuf,
    },
    /// The certificate revocations the peer holds.
    Revocations,
}

/// Commands on frontends or backends.
#[derive(Debug, clap::Subcommand)]
pub enum ObjectCommand {
    /// List all.
    List,
    /// Show one.
    Get {
        /// Its key.
        key: String,
    },
    /// Create or replace one from a JSON file (`-` for stdin).
    Put {
        /// Its key.
        key: String,
        /// The JSON body (the API's format).
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete one.
    Delete {
        /// Its key.
        key: String,
    },
}

/// Commands on static members.
#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {
    /// List a backend's members.
    List {
        /// The backend.
        backend: String,
    },
    /// Add or change a member (no HAProxy reload).
    Put {
        /// The backend.
        backend: String,
        /// The member's host.
        host: String,
        /// The member's port.
        port: u16,
        /// Weight (0–256).
        #[arg(long)]
        weight: Option<u16>,
        /// Administrative state (e.g. ready, drain, maint).
        #[arg(long)]
        state: Option<String>,
    },
    /// Remove a member.
    Delete {
        /// The backend.
        backend: String,
        /// The member's host.
        host: String,
        /// The member's port.
        port: u16,
    },
}

/// Commands on registrations.
#[derive(Debug, clap::Subcommand)]
pub enum RegistrationCommand {
    /// List registrations, optionally of one service (and version).
    List {
        /// Service name.
        name: Option<String>,
        /// Version.
        version: Option<String>,
    },
    /// Register an instance or renew its lease.
    Register {
        /// Service name.
        name: String,
        /// Version.
        version: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Lease in seconds.
        #[arg(long, default_value_t = 10)]
        ttl: u32,
    },
    /// Remove an instance.
    Deregister {
        /// Service name.
        name: String,
        /// Version.
        version: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Why a `ctl` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The request failed (unreachable, refused, a bad URL or token).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A local problem (reading a file, bad JSON).
    #[error("{0}")]
    Input(String),
}

/// Runs one `ctl` command, printing its result on stdout.
pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    let client = ApiClient::new(&args.api, &args.client.resolve()?, REQUEST_TIMEOUT)?;
    let (value, shape) = match args.command {
        CtlCommand::Frontends(command) => object(&client, "frontends", command).await?,
        CtlCommand::Backends(command) => object(&client, "backends", command).await?,
        CtlCommand::Members(command) => member(&client, command).await?,
        CtlCommand::Switch {
            backend,
            version,
            name,
            force,
        } => {
            let mut body = json!({ "version": version });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if force {
                body["force"] = json!(true);
            }
            let path = ["backends", backend.as_str()];
            (
                client
                    .send(reqwest::Method::POST, &path, Some(&body))
                    .await?,
                Shape::Backends,
            )
        }
        CtlCommand::Registrations(command) => registration(&client, command).await?,
        CtlCommand::Status => (client.get(&["mesh"]).await?, Shape::Status),
        CtlCommand::Peers => (client.get(&["mesh", "peers"]).await?, Shape::Peers),
        CtlCommand::Haproxy => (client.get(&["haproxy", "status"]).await?, Shape::Status),
        CtlCommand::Revoke { file } => {
            let body = read_json(&file)?;
            let path = ["mesh", "revocations"];
            (
                client
                    .send(reqwest::Method::POST, &path, Some(&body))
                    .await?,
                Shape::Revocations,
            )
        }
        CtlCommand::Revocations => (
            client.get(&["mesh", "revocations"]).await?,
            Shape::Revocations,
        ),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        );
    } else {
        println!("{}", render(&value, shape));
    }
    Ok(())
}

/// How to show an answer as a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Frontend objects.
    Frontends,
    /// Backend objects.
    Backends,
    /// Member objects.
    Members,
    /// Registration objects.
    Registrations,
    /// One object, field by field (`/mesh`, `/haproxy/status`).
    Status,
    /// `/mesh/peers`.
    Peers,
    /// `/mesh/revocations`.
    Revocations,
    /// Nothing worth a table (a delete's answer).
    Done,
}

async fn object(
    client: &ApiClient,
    kind: &str,
    command: ObjectCommand,
) -> Result<(Value, Shape), CtlError> {
    let shape = if kind == "frontends" {
        Shape::Frontends
    } else {
        Shape::Backends
    };
    Ok(match command {
        ObjectCommand::List => (client.get(&[kind]).await?, shape),
        ObjectCommand::Get { key } => (client.get(&[kind, key.as_str()]).await?, shape),
        ObjectCommand::Put { key, file } => {
            let body = read_json(&file)?;
            let path = [kind, key.as_str()];
            (
                client
                    .send(reqwest::Method::PUT, &path, Some(&body))
                    .await?,
                shape,
            )
        }
        ObjectCommand::Delete { key } => {
            let path = [kind, key.as_str()];
            (
                client.send(reqwest::Method::DELETE, &path, None).await?,
                Shape::Done,
            )
        }
    })
}

async fn member(client: &ApiClient, command: MemberCommand) -> Result<(Value, Shape), CtlError> {
    Ok(match command {
        MemberCommand::List { backend } => (
            client
                .get(&["backends", backend.as_str(), "members"])
                .await?,
            Shape::Members,
        ),
        MemberCommand::Put {
            backend,
            host,
            port,
            weight,
            state,
        } => {
            let mut body = json!({});
            if let Some(weight) = weight {
                body["weight"] = json!(weight);
            }
            if let Some(state) = state {
                body["state"] = json!(state);
            }
            let port = port.to_string();
            let path = member_path(&backend, &host, &port);
            (
                client
                    .send(reqwest::Method::PUT, &path, Some(&body))
                    .await?,
                Shape::Members,
            )
        }
        MemberCommand::Delete {
            backend,
            host,
            port,
        } => {
            let port = port.to_string();
            let path = member_path(&backend, &host, &port);
            (
                client.send(reqwest::Method::DELETE, &path, None).await?,
                Shape::Done,
            )
        }
    })
}

async fn registration(
    client: &ApiClient,
    command: RegistrationCommand,
) -> Result<(Value, Shape), CtlError> {
    Ok(match command {
        RegistrationCommand::List { name, version } => {
            let path: Vec<&str> = std::iter::once("registrations")
                .chain(name.as_deref())
                .chain(name.as_ref().and(version.as_deref()))
                .collect();
            (client.get(&path).await?, Shape::Registrations)
        }
        RegistrationCommand::Register {
            name,
            version,
            host,
            port,
            ttl,
        } => {
            let port = port.to_string();
            let path = instance_path(&name, &version, &host, &port);
            let body = json!({ "secondsToExpire": ttl });
            (
                client
                    .send(reqwest::Method::POST, &path, Some(&body))
                    .await?,
                Shape::Registrations,
            )
        }
        RegistrationCommand::Deregister {
            name,
            version,
            host,
            port,
        } => {
            let port = port.to_string();
            let path = instance_path(&name, &version, &host, &port);
            (
                client.send(reqwest::Method::DELETE, &path, None).await?,
                Shape::Done,
            )
        }
    })
}

/// The path of one static member.
fn member_path<'a>(backend: &'a str, host: &'a str, port: &'a str) -> [&'a str; 5] {
    ["backends", backend, "members", host, port]
}

/// The path of one registered instance.
fn instance_path<'a>(
    name: &'a str,
    version: &'a str,
    host: &'a str,
    port: &'a str,
) -> [&'a str; 5] {
    ["registrations", name, version, host, port]
}

fn read_json(file: &PathBuf) -> Result<Value, CtlError> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| CtlError::Input(e.to_string()))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CtlError::Input(format!("{}: {e}", file.display())))?
    };
    serde_json::from_str(&text).map_err(|e| CtlError::Input(format!("{}: {e}", file.display())))
}

/// Turns one object of the answer into a table row.
type RowCells = fn(&Value) -> Vec<String>;

/// Renders an API answer as a table (one row per object).
pub fn render(value: &Value, shape: Shape) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        single => vec![single],
    };
    let (header, cells): (&[&str], RowCells) = match shape {
        Shape::Frontends => (&["key", "bind", "backend", "mode", "rules"], |f| {
            vec![
                text(&f["key"]),
                text(&f["bind"]),
                text(&f["backend"]),
                text(&f["mode"]),
                f["rules"].as_array().map_or(0, Vec::len).to_string(),
            ]
        }),
        Shape::Backends => (&["key", "type", "service", "balance", "members"], |b| {
            let service = match (b["name"].as_str(), b["version"].as_str()) {
                (Some(name), Some(version)) => format!("{name}@{version}"),
                _ => String::new(),
            };
            vec![
                text(&b["key"]),
                text(&b["type"]),
                service,
                text(&b["balance"]),
                b["members"].as_array().map_or(0, Vec::len).to_string(),
            ]
        }),
        Shape::Members => (&["host", "port", "weight", "state"], |m| {
            vec![
                text(&m["host"]),
                text(&m["port"]),
                text(&m["weight"]),
                text(&m["state"]),
            ]
        }),
        Shape::Registrations => (&["id", "lastKnown", "meta"], |r| {
            vec![text(&r["id"]), text(&r["lastKnown"]), r["meta"].to_string()]
        }),
        Shape::Status => (&["field", "value"], |_| Vec::new()),
        Shape::Peers => (
            &["name", "peerId", "addr", "state", "connected", "revoked"],
            |p| {
                let revoked = match p["revokedAt"].as_u64() {
                    Some(at) => format!("revoked at {at}"),
                    None => String::new(),
                };
                vec![
                    text(&p["name"]),
                    text(&p["peerId"]),
                    text(&p["addr"]),
                    text(&p["state"]),
                    text(&p["connected"]),
                    revoked,
                ]
            },
        ),
        Shape::Revocations => (&["name", "revokedAt", "notBeforeUpTo"], |r| {
            vec![
                text(&r["name"]),
                text(&r["revokedAt"]),
                text(&r["notBeforeUpTo"]),
            ]
        }),
        Shape::Done => return "done".to_owned(),
    };
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    if shape == Shape::Status {
        for (field, value) in value.as_object().into_iter().flatten() {
            table.add_row(vec![field.clone(), text(value)]);
        }
    } else {
        for row in rows {
            table.add_row(cells(row));
        }
    }
    table.to_string()
}

/// A JSON value as a table cell: strings without quotes, absent as empty.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
