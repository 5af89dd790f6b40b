//! Certificates: the cluster CA, node certificates, and the TLS
//! configurations built from them.
//!
//! Owns the files of a CA directory (`ca.pem`, `ca.key`) and of a node's TLS
//! directory (`ca.pem`, `node.pem`, `node.key`): creating them (never
//! replacing one; keys are never readable by others, not even for an
//! instant), loading and checking them, and turning them into QUIC crypto
//! configurations for mutual TLS 1.3 against the cluster CA. A peer's
//! identity is the common name of the certificate it presented in the
//! handshake ([`peer_of`]), never anything it claims afterwards.
//!
//! A node's certificate and key can be replaced while it runs
//! ([`TlsIdentity::replace`]): the new pair passes the same checks as at
//! start-up and must name the same node; the TLS configurations read the
//! pair in use at each handshake, so new connections present the new
//! certificate while open ones go on. When to replace is the caller's
//! business (`tls_reload`).
//!
//! The cluster is its CA: certificates carry no cluster name, and a peer
//! accepts exactly the certificates its CA signed (and that are in their
//! validity period, and name a valid node other than itself, and that no
//! revocation covers). Two clusters therefore must never share a CA;
//! `aqueduct certs init` makes a new one per cluster.
//!
//! Revocations ([`revoke`]) are signed by the CA key, so the key never needs
//! to be on a peer: every peer checks them against `ca.pem`
//! ([`CaRevocationVerifier`]). One revokes the certificates of a name whose
//! notBefore is at or before the revocation's time minus
//! [`CLOCK_SKEW_ALLOWANCE`] — exactly those issued up to the revocation,
//! since [`issue`] backdates notBefore by that allowance, in whole seconds,
//! and [`revoke`] returns only once its second is over. So a certificate
//! issued for the same name after the revocation is a member again. The
//! peers' TLS verifiers refuse a covered certificate
//! ([`RevokedCertificates`]); the transport closes connections that were
//! open when a revocation arrived.
//!
//! Must not open sockets or choose transport parameters: the transport wraps
//! [`TlsIdentity::server_crypto`] and [`TlsIdentity::client_crypto`] into
//! quinn configurations. Uses the ring provider explicitly, so nothing here
//! depends on a process-wide default provider.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SigningKey,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::version::TLS13;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;

use crate::files;
use crate::gossip::wire::ALPN;
use crate::gossip::{PeerId, Revocation, RevocationVerifier};

/// The DNS name every node certificate carries besides its own name. Peers
/// dial an address with this server name, because the dialler does not know
/// in advance which node answers there; the node's identity is read from its
/// certificate once the handshake is done.
pub const MESH_SERVER_NAME: &str = "aqueduct-mesh";

/// The cluster CA certificate, in a CA directory and in every TLS directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The cluster CA's private key, only in the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// A node's certificate, in its TLS directory.
pub const NODE_CERT_FILE: &str = "node.pem";
/// A node's private key, in its TLS directory.
pub const NODE_KEY_FILE: &str = "node.key";
/// Where [`ensure_self_made`] keeps the private CA, inside the TLS directory.
pub const SELF_MADE_CA_DIR: &str = "ca";

const CA_COMMON_NAME: &str = "aqueduct cluster CA";
const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const CA_VALIDITY: Duration = YEAR.saturating_mul(10);
/// Certificates start being valid a little in the past, so that a peer whose
/// clock is somewhat behind the issuing machine's still accepts them. A
/// revocation covers certificates whose notBefore is up to its time minus
/// this (see the module documentation).
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60 * 60);
/// The largest certificate or key file read: PEM of a certificate chain
/// or a key takes a few KiB.
pub const PEM_BYTES_MAX: u64 = 1 << 20;
/// Longest DNS label.
const NAME_LEN_MAX: usize = 63;
const KEY_MODE: u32 = files::FILE_MODE;
const CERT_MODE: u32 = 0o644;

/// Why a certificate operation failed. Variants involving a file carry its
/// path, and their message starts with it.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A node name that is not a DNS label.
    #[error("invalid node name {name:?}: {reason}")]
    InvalidName {
        /// The refused name (cut to 64 characters).
        name: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// Reading, writing or creating a file or directory failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// A certificate or key file over [`PEM_BYTES_MAX`].
    #[error("{}: larger than {PEM_BYTES_MAX} bytes, not a certificate or key", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A required file does not exist.
    #[error("{}: missing", path.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
    },
    /// A file to be created already exists; certificates and keys are never
    /// replaced.
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// A TLS directory holds some of its files but not all of them.
    #[error("{}: incomplete TLS directory, missing {}", dir.display(), missing.join(", "))]
    Incomplete {
        /// The TLS directory.
        dir: PathBuf,
        /// The file names it lacks.
        missing: Vec<&'static str>,
    },
    /// A file holds no readable PEM block of the expected kind.
    #[error("{}: not PEM: {reason}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What the PEM decoder said.
        reason: String,
    },
    /// A PEM certificate block does not hold a usable X.509 certificate.
    #[error("{}: not a certificate: {reason}", path.display())]
    NotCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A PEM key block does not hold a usable private key.
    #[error("{}: not a usable private key: {reason}", path.display())]
    NotKey {
        /// The file.
        path: PathBuf,
        /// What the key loader said.
        reason: String,
    },
    /// A private key is not the one of the certificate next to it.
    #[error("{}: the key does not match the certificate in {}", path.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        path: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A node certificate that the cluster CA does not vouch for (signed by
    /// another CA, expired, or lacking the mesh name or key usages).
    #[error("{}: not valid under {}: {reason}", path.display(), ca.display())]
    Untrusted {
        /// The node certificate file.
        path: PathBuf,
        /// The CA certificate file.
        ca: PathBuf,
        /// What the verifier said.
        reason: String,
    },
    /// A certificate whose common name is not a valid node name.
    #[error("{}: the name in the certificate is invalid: {reason}", path.display())]
    NameInCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with the name.
        reason: String,
    },
    /// The certificate a connected peer presented cannot identify it.
    #[error("the peer's certificate does not identify it: {reason}")]
    PeerCertificate {
        /// What is wrong with it.
        reason: String,
    },
    /// A validity (`certs issue --days`) out of bounds or not a number.
    #[error("invalid validity {given:?} (days): {reason}")]
    InvalidValidity {
        /// What was given (cut to 32 characters).
        given: String,
        /// The rule it broke.
        reason: &'static str,
    },
    /// A node certificate would stay valid after the CA that signs it
    /// expires: nobody would accept it then, so it is not issued.
    #[error(
        "{}: the CA expires before a certificate valid for {days} days would; \
         issue one for fewer days, or make a new CA",
        ca.display()
    )]
    OutlivesCa {
        /// The CA certificate file.
        ca: PathBuf,
        /// The validity asked for.
        days: u32,
    },
    /// A replacement certificate names another node than the one running:
    /// a node's name is its identity in the mesh, which a reload must not
    /// change.
    #[error("{}: the certificate is for {found}, but this node is {running}", path.display())]
    OtherNode {
        /// The certificate file.
        path: PathBuf,
        /// The name of the node running.
        running: NodeName,
        /// The name in the new certificate.
        found: NodeName,
    },
    /// A replacement certificate that a revocation this node enforces
    /// covers: every peer would refuse it.
    #[error(
        "{}: the certificate of {name} is revoked (revocation signed at {revoked_at}, Unix seconds)",
        path.display()
    )]
    Revoked {
        /// The certificate file.
        path: PathBuf,
        /// The name in the certificate.
        name: NodeName,
        /// When the revocation covering it was signed (Unix seconds).
        revoked_at: u64,
    },
    /// A revocation file that does not hold a revocation.
    #[error("{}: not a revocation: {reason}", path.display())]
    NotRevocation {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen could not generate a key or certificate.
    #[error("generating a certificate failed: {0}")]
    Generate(rcgen::Error),
    /// rustls or quinn refused the TLS configuration.
    #[error("building the TLS configuration failed: {0}")]
    TlsConfig(String),
}

/// A node's name: a DNS label (1 to 63 characters of `a-z`, `0-9` and `-`,
/// neither starting nor ending with `-`). It is the common name of the
/// node's certificate and determines its [`PeerId`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    /// Checks `name` against the DNS label rules.
    pub fn new(name: &str) -> Result<Self, CertError> {
        let refuse = |reason| CertError::InvalidName {
            name: name.chars().take(NAME_LEN_MAX + 1).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(refuse("must not be empty"));
        }
        if name.len() > NAME_LEN_MAX {
            return Err(refuse("longer than 63 characters"));
        }
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if !name.bytes().all(allowed) {
            return Err(refuse("only a-z, 0-9 and '-' are allowed"));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(refuse("must not start or end with '-'"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeName {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// How long a node certificate is valid, in whole days: 1 to
/// [`NodeValidity::DAYS_MAX`] (the CA's own validity, which a node
/// certificate cannot usefully outlive). Short-lived certificates limit
/// what a stolen key is worth; peers reload theirs without a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeValidity(u32);

impl NodeValidity {
    /// Two years: what `certs issue` gives without `--days`.
    pub const DEFAULT: NodeValidity = NodeValidity(2 * 365);
    /// Ten years, the validity of a CA from `certs init`.
    pub const DAYS_MAX: u32 = 10 * 365;

    /// `days`, if within 1 to [`NodeValidity::DAYS_MAX`].
    pub fn days(days: i64) -> Result<NodeValidity, CertError> {
        let refuse = |reason| CertError::InvalidValidity {
            given: days.to_string(),
            reason,
        };
        if days < 1 {
            return Err(refuse("must be at least 1 day"));
        }
        match u32::try_from(days) {
            Ok(days) if days <= Self::DAYS_MAX => Ok(NodeValidity(days)),
            _ => Err(refuse("at most 3650 days (10 years, a CA's validity)")),
        }
    }

    /// The number of days.
    pub fn as_days(self) -> u32 {
        self.0
    }

    fn duration(self) -> Duration {
        DAY.saturating_mul(self.0)
    }
}

/// The number of days, as `--days` takes it.
impl fmt::Display for NodeValidity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for NodeValidity {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let days = s
            .trim()
            .parse::<i64>()
            .map_err(|_| CertError::InvalidValidity {
                given: s.chars().take(32).collect(),
                reason: "not a whole number of days",
            })?;
        Self::days(days)
    }
}

/// The mesh identity of the node called `name`: a hash of the name, so it
/// is the same across restarts and on every peer. Two nodes must therefore
/// never share a name: the mesh would take them for one peer.
pub fn peer_id_of(name: &NodeName) -> PeerId {
    PeerId::of_name(name.as_str())
}

/// The files of a cluster CA, as written by [`init_ca`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate (`ca.pem`), to be copied to every node.
    pub cert: PathBuf,
    /// The CA's private key (`ca.key`, mode 0600), to be kept safe.
    pub key: PathBuf,
}

/// The files of a node's TLS directory, as written by [`issue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFiles {
    /// The node certificate (`node.pem`).
    pub cert: PathBuf,
    /// The node's private key (`node.key`, mode 0600).
    pub key: PathBuf,
    /// A copy of the CA certificate (`ca.pem`).
    pub ca: PathBuf,
}

/// Creates a cluster CA in `out_dir` (created if needed): `ca.pem` and
/// `ca.key`. Refuses if either file exists: replacing a CA would lock every
/// node it issued out of the mesh.
pub fn init_ca(out_dir: &Path) -> Result<CaFiles, CertError> {
    let files = CaFiles {
        cert: out_dir.join(CA_CERT_FILE),
        key: out_dir.join(CA_KEY_FILE),
    };
    refuse_existing(&[&files.cert, &files.key])?;

    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    // Path length 0: the CA signs node certificates, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY);
    let key = KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params.self_signed(&key).map_err(CertError::Generate)?;

    create_dir(out_dir)?;
    write_new(&files.key, key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_new(&files.cert, cert.pem().as_bytes(), CERT_MODE)?;
    Ok(files)
}

/// Issues a certificate for `name` with the CA in `ca_dir`, valid for
/// [`NodeValidity::DEFAULT`] (see [`issue_for`]).
pub fn issue(ca_dir: &Path, name: &NodeName, out_dir: &Path) -> Result<NodeFiles, CertError> {
    issue_for(ca_dir, name, out_dir, NodeValidity::DEFAULT)
}

/// Issues a certificate for `name` with the CA in `ca_dir`, valid for
/// `validity` from now, and writes `node.pem`, `node.key` and a copy of
/// `ca.pem` into `out_dir` (created if needed), which is then a complete
/// TLS directory. Refuses if any of these files exists, or if the CA
/// expires before the certificate would.
pub fn issue_for(
    ca_dir: &Path,
    name: &NodeName,
    out_dir: &Path,
    validity: NodeValidity,
) -> Result<NodeFiles, CertError> {
    let files = NodeFiles {
        cert: out_dir.join(NODE_CERT_FILE),
        key: out_dir.join(NODE_KEY_FILE),
        ca: out_dir.join(CA_CERT_FILE),
    };
    refuse_existing(&[&files.cert, &files.key, &files.ca])?;

    let (ca_pem, ca_der, ca_key) = load_ca(ca_dir)?;
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_cert = parse_x509(&ca_der).map_err(not_certificate(&ca_cert_path))?;
    let not_after = ASN1Time::now().to_datetime() + validity.duration();
    if ca_cert.validity().not_after.to_datetime() < not_after {
        return Err(CertError::OutlivesCa {
            ca: ca_cert_path,
            days: validity.as_days(),
        });
    }
    let issuer =
        Issuer::from_ca_cert_der(&ca_der, ca_key).map_err(not_certificate(&ca_cert_path))?;

    let sans = vec![name.to_string(), MESH_SERVER_NAME.to_owned()];
    let mut params = CertificateParams::new(sans).map_err(CertError::Generate)?;
    params
        .distinguished_name
        .push(DnType::CommonName, name.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is both a server (accepting) and a client (dialling).
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity.duration());
    let key = KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(CertError::Generate)?;

    create_dir(out_dir)?;
    write_new(&files.ca, &ca_pem, CERT_MODE)?;
    write_new(&files.key, key.serialize_pem().as_bytes(), KEY_MODE)?;
    // Last, so that a directory with a node.pem had all its files written.
    write_new(&files.cert, cert.pem().as_bytes(), CERT_MODE)?;
    Ok(files)
}

/// The CA of `ca_dir`: its certificate as PEM and DER, and its key, checked
/// to be the certificate's (signing with the wrong key would produce
/// certificates and revocations nobody accepts).
fn load_ca(ca_dir: &Path) -> Result<(Vec<u8>, CertificateDer<'static>, KeyPair), CertError> {
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_pem = read(&ca_cert_path)?;
    let ca_der = certificate_from_pem(&ca_cert_path, &ca_pem)?;
    let ca_cert = parse_x509(&ca_der).map_err(not_certificate(&ca_cert_path))?;
    let ca_key = key_from_pem(&ca_key_path, &read(&ca_key_path)?)?;
    let ca_key = KeyPair::try_from(&ca_key).map_err(not_key(&ca_key_path))?;
    if ca_cert.public_key().raw != ca_key.subject_public_key_info() {
        return Err(CertError::KeyMismatch {
            path: ca_key_path,
            cert: ca_cert_path,
        });
    }
    Ok((ca_pem, ca_der, ca_key))
}

/// Revokes the certificates of `name` issued up to now with the CA in
/// `ca_dir`, and writes the signed revocation to `out` (a new file) as JSON
/// ([`RevocationFile`]), to be handed to any peer (`aqueduct ctl revoke`).
///
/// Returns once the current second is over, so that a certificate issued
/// for `name` afterwards is not covered (see the module documentation).
pub fn revoke(ca_dir: &Path, name: &NodeName, out: &Path) -> Result<Revocation, CertError> {
    refuse_existing(&[out])?;
    let (_, ca_der, ca_key) = load_ca(ca_dir)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let revoked_at = now.as_secs();
    let not_before_up_to = revoked_at.saturating_sub(CLOCK_SKEW_ALLOWANCE.as_secs());
    let bytes =
        crate::gossip::revocations::signed_bytes(name.as_str(), not_before_up_to, revoked_at);
    let signature = ca_key.sign(&bytes).map_err(CertError::Generate)?;
    let revocation = Revocation {
        name: name.to_string(),
        not_before_up_to,
        revoked_at,
        signature,
    };
    // A key this verifier cannot check would make a file every peer refuses.
    let verifier =
        CaRevocationVerifier::new(&ca_der).map_err(not_certificate(&ca_dir.join(CA_CERT_FILE)))?;
    if !verifier.verify(&revocation) {
        return Err(CertError::TlsConfig(
            "the CA key's signature algorithm cannot be checked by the peers".to_owned(),
        ));
    }
    let mut text = serde_json::to_string_pretty(&RevocationFile::from(&revocation))
        .expect("a revocation file always encodes");
    text.push('\n');
    write_new(out, text.as_bytes(), CERT_MODE)?;
    let second_over = Duration::from_secs(revoked_at + 1).saturating_sub(now);
    std::thread::sleep(second_over);
    Ok(revocation)
}

/// Reads a revocation file written by [`revoke`].
pub fn read_revocation(path: &Path) -> Result<Revocation, CertError> {
    let text = read(path)?;
    let refuse = |reason: String| CertError::NotRevocation {
        path: path.to_owned(),
        reason,
    };
    let file: RevocationFile =
        serde_json::from_slice(&text).map_err(|error| refuse(error.to_string()))?;
    file.into_revocation().map_err(refuse)
}

/// A revocation as a file and in the API: JSON, the signature in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevocationFile {
    /// The node name whose certificates are revoked.
    pub name: String,
    /// Unix seconds: when it was signed.
    pub revoked_at: u64,
    /// Unix seconds: certificates of `name` with a notBefore up to this
    /// are revoked.
    pub not_before_up_to: u64,
    /// The cluster CA's signature, in hex.
    pub signature: String,
}

impl From<&Revocation> for RevocationFile {
    fn from(revocation: &Revocation) -> Self {
        RevocationFile {
            name: revocation.name.clone(),
            revoked_at: revocation.revoked_at,
            not_before_up_to: revocation.not_before_up_to,
            signature: lowercase_hex(&revocation.signature),
        }
    }
}

impl RevocationFile {
    /// The revocation, if the name is a node name and the signature hex of
    /// a sensible length (whether it is genuine is the verifier's call).
    pub fn into_revocation(self) -> Result<Revocation, String> {
        NodeName::new(&self.name).map_err(|error| error.to_string())?;
        let hex = self.signature.as_bytes();
        let sensible = 2..=2 * crate::gossip::revocations::SIGNATURE_BYTES_MAX;
        if !sensible.contains(&hex.len()) || !hex.len().is_multiple_of(2) {
            return Err("the signature is not hex of a sensible length".to_owned());
        }
        let digit = |c: u8| char::from(c).to_digit(16);
        let signature = hex
            .chunks(2)
            .map(|pair| u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok())
            .collect::<Option<Vec<u8>>>()
            .ok_or("the signature is not hex")?;
        Ok(Revocation {
            name: self.name,
            not_before_up_to: self.not_before_up_to,
            revoked_at: self.revoked_at,
            signature,
        })
    }
}

/// Checks revocations against the cluster CA's certificate: the signature
/// with any algorithm of the ring provider that the CA's key verifies
/// (`certs init` makes ECDSA P-256 keys), and the name against the node-name
/// rules.
pub struct CaRevocationVerifier {
    /// The CA's public key (the subjectPublicKey bits).
    public_key: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl CaRevocationVerifier {
    /// A verifier for the CA certificate `ca_der`.
    pub fn new(ca_der: &[u8]) -> Result<Self, String> {
        let ca = parse_x509(ca_der)?;
        Ok(CaRevocationVerifier {
            public_key: ca.public_key().subject_public_key.data.to_vec(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

impl RevocationVerifier for CaRevocationVerifier {
    fn verify(&self, revocation: &Revocation) -> bool {
        let message = revocation.signed_bytes();
        NodeName::new(&revocation.name).is_ok()
            && self.algorithms.all.iter().any(|algorithm| {
                algorithm
                    .verify_signature(&self.public_key, &message, &revocation.signature)
                    .is_ok()
            })
    }
}

/// The revocations a peer enforces, shared by its TLS verifiers and its
/// transport (cloning shares them). The peer task adds each revocation its
/// node takes; whoever holds a connection learns of it through
/// [`RevokedCertificates::changes`].
#[derive(Debug, Clone)]
pub struct RevokedCertificates {
    by_name: Arc<RwLock<BTreeMap<String, Revocation>>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for RevokedCertificates {
    fn default() -> Self {
        RevokedCertificates {
            by_name: Arc::default(),
            changes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl RevokedCertificates {
    /// Enforces `revocation` from now on (replacing the one of its name:
    /// the node keeps only the one that covers most).
    pub fn insert(&self, revocation: Revocation) {
        self.by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(revocation.name.clone(), revocation);
        self.changes.send_modify(|version| *version += 1);
    }

    /// The revocation covering `certificate`, if any.
    pub fn covering(&self, certificate: &CertificateInfo) -> Option<Revocation> {
        self.with_covering(certificate, Revocation::clone)
    }

    /// Whether a revocation covers `certificate` (no copy: asked of every
    /// message received).
    pub fn covers(&self, certificate: &CertificateInfo) -> bool {
        self.with_covering(certificate, |_| ()).is_some()
    }

    fn with_covering<R>(
        &self,
        certificate: &CertificateInfo,
        then: impl FnOnce(&Revocation) -> R,
    ) -> Option<R> {
        self.by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(certificate.name.as_str())
            .filter(|revocation| revocation.covers(certificate.not_before))
            .map(then)
    }

    /// Changes whenever a revocation is added.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Refuses a verified end-entity certificate that a revocation covers.
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        // Not a node certificate: `peer_of` refuses it once connected.
        let Ok(certificate) =
            parse_x509(end_entity).and_then(|parsed| CertificateInfo::of(&parsed))
        else {
            return Ok(());
        };
        match self.covering(&certificate) {
            Some(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            )),
            None => Ok(()),
        }
    }
}

/// The handshake-signature methods of a verifier that only adds a check to
/// the certificate of its `inner` one: the signatures are `inner`'s to
/// check.
macro_rules! signatures_checked_by_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

/// The client-certificate verifier of a peer's server side: the cluster CA's
/// (WebPKI) rules, then no revocation may cover the certificate.
#[derive(Debug)]
struct NotRevokedClients {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: RevokedCertificates,
}

impl ClientCertVerifier for NotRevokedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.revoked.check(end_entity)?;
        Ok(verified)
    }

    signatures_checked_by_inner!();
}

/// The server-certificate verifier of a peer's client side: as
/// [`NotRevokedClients`], for the peers it dials.
#[derive(Debug)]
struct NotRevokedServers {
    inner: Arc<WebPkiServerVerifier>,
    revoked: RevokedCertificates,
}

impl ServerCertVerifier for NotRevokedServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.revoked.check(end_entity)?;
        Ok(verified)
    }

    signatures_checked_by_inner!();
}

/// Makes sure `tls_dir` is a complete TLS directory, for a node started
/// without certificates on a fresh machine: if it holds none of `ca.pem`,
/// `node.pem` and `node.key`, creates a private CA in `tls_dir/ca/` and
/// issues `name` into `tls_dir`; if it holds all three, changes nothing; if
/// it holds only some, fails naming the missing ones. In a complete
/// directory the certificate's name stands, whatever `name` says: the node
/// is who its certificate says ([`TlsIdentity::name`]).
///
/// The directory and its CA directory are private ([`files::DIR_MODE`]),
/// tightened if an older release left them readable by others; their keys
/// are written [`files::FILE_MODE`].
pub fn ensure_self_made(tls_dir: &Path, name: &NodeName) -> Result<(), CertError> {
    let ca_dir = tls_dir.join(SELF_MADE_CA_DIR);
    files::private_dir(tls_dir).map_err(|error| io_error(tls_dir, error))?;
    if exists(&ca_dir)? {
        files::private_dir(&ca_dir).map_err(|error| io_error(&ca_dir, error))?;
    }
    let wanted = [CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE];
    let mut missing = Vec::new();
    for file in wanted {
        if !exists(&tls_dir.join(file))? {
            missing.push(file);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if missing.len() < wanted.len() {
        return Err(CertError::Incomplete {
            dir: tls_dir.to_owned(),
            missing,
        });
    }
    init_ca(&ca_dir)?;
    issue(&ca_dir, name, tls_dir)?;
    Ok(())
}

/// What is known of a node certificate, this node's or one a peer
/// presented: whom it names, what tells it from another of the same name
/// (logs, metrics), and its validity (what a revocation is judged by, what
/// the expiry metrics show).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The node it names (its common name).
    pub name: NodeName,
    /// The name's peer id.
    pub peer: PeerId,
    /// Its serial number, in hexadecimal.
    pub serial: String,
    /// The start of its validity, in seconds since the Unix epoch.
    pub not_before: i64,
    /// The end of its validity, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertificateInfo {
    /// Reads a node certificate.
    fn of(cert: &X509Certificate<'_>) -> Result<CertificateInfo, String> {
        let name = common_name(cert)?;
        Ok(CertificateInfo {
            peer: peer_id_of(&name),
            name,
            serial: lowercase_hex(cert.raw_serial()),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

impl fmt::Display for CertificateInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (serial {}, valid until {})",
            self.name,
            self.serial,
            unix_time_text(self.not_after)
        )
    }
}

/// A time given in seconds since the Unix epoch (as certificates' ends are
/// kept here), as people read it in logs.
pub fn unix_time_text(seconds: i64) -> String {
    ASN1Time::from_timestamp(seconds)
        .map(|time| time.to_string())
        .unwrap_or_else(|_| format!("{seconds} s after the epoch"))
}

/// A certificate and its key as read from their files, not yet checked:
/// what [`TlsIdentity::load`] starts from and [`TlsIdentity::replace`]
/// takes (and the API's HTTPS identity, `api::server::ApiTls`, likewise).
pub struct PemPair {
    cert_path: PathBuf,
    key_path: PathBuf,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl fmt::Debug for PemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key's bytes.
        f.debug_struct("PemPair")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl PemPair {
    /// Reads `node.pem`, then `node.key`, from `tls_dir`.
    pub fn node(tls_dir: &Path) -> Result<PemPair, CertError> {
        PemPair::read(&tls_dir.join(NODE_CERT_FILE), &tls_dir.join(NODE_KEY_FILE))
    }

    /// Reads the certificate file, then the key file (each at most
    /// [`PEM_BYTES_MAX`]: they may be read every second).
    pub fn read(cert_path: &Path, key_path: &Path) -> Result<PemPair, CertError> {
        let cert = read_bounded(cert_path)?;
        let key = read_bounded(key_path)?;
        Ok(PemPair {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            cert,
            key,
        })
    }

    /// The certificate file's path and bytes.
    pub fn cert(&self) -> (&Path, &[u8]) {
        (&self.cert_path, &self.cert)
    }

    /// The key file's path and bytes.
    pub fn key(&self) -> (&Path, &[u8]) {
        (&self.key_path, &self.key)
    }

    /// A hash of both files' bytes: equal for the same files, so that a
    /// caller polling them can tell when they changed.
    pub fn fingerprint(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(&self.key, xxhash_rust::xxh3::xxh3_64(&self.cert))
    }
}

/// A node's loaded and checked TLS identity: its certificate and key, and
/// the cluster CA it trusts.
pub struct TlsIdentity {
    ca_path: PathBuf,
    ca_cert: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    /// Shared with every TLS configuration made from this identity.
    current: Arc<ReplaceableKey>,
    certificate: CertificateInfo,
    fingerprint: u64,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
    revoked: RevokedCertificates,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Loads `ca.pem`, `node.pem` and `node.key` from `tls_dir`, and checks
    /// that the key belongs to the certificate and that the certificate is
    /// one the other nodes will accept (signed by `ca.pem`, in its validity
    /// period, carrying [`MESH_SERVER_NAME`] and both key usages).
    pub fn load(tls_dir: &Path) -> Result<Self, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let ca_path = tls_dir.join(CA_CERT_FILE);
        let ca_cert = certificate_from_pem(&ca_path, &read(&ca_path)?)?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca_cert.clone())
            .map_err(not_certificate(&ca_path))?;
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(tls_config)?;
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(tls_config)?;

        let pair = PemPair::node(tls_dir)?;
        let (key, certificate) = check(
            &pair,
            &provider,
            client_verifier.as_ref(),
            server_verifier.as_ref(),
            &ca_path,
        )?;
        Ok(Self {
            ca_path,
            ca_cert,
            provider,
            current: ReplaceableKey::new(key),
            certificate,
            fingerprint: pair.fingerprint(),
            client_verifier,
            server_verifier,
            revoked: RevokedCertificates::default(),
        })
    }

    /// The revocations this identity's TLS configurations enforce (empty
    /// when loaded; the daemon adds the stored ones before the transport
    /// starts).
    pub fn revoked(&self) -> &RevokedCertificates {
        &self.revoked
    }

    /// A verifier of revocations signed by this identity's cluster CA.
    pub fn revocation_verifier(&self) -> Result<CaRevocationVerifier, CertError> {
        CaRevocationVerifier::new(&self.ca_cert).map_err(not_certificate(&self.ca_path))
    }

    /// The revocation covering this node's own certificate, if one does.
    pub fn own_revocation(&self) -> Option<Revocation> {
        self.revoked.covering(&self.certificate)
    }

    /// Makes the certificate and key of `pair` this node's, for every
    /// handshake from now on (client and server side) of every TLS
    /// configuration made from this identity; open connections keep the
    /// certificate they were made with. The pair must pass the checks of
    /// [`TlsIdentity::load`] against the CA loaded then, name this node, and
    /// be covered by no revocation this identity enforces (the peers would
    /// refuse it); if not, nothing changes. The revocations stay those of
    /// [`TlsIdentity::revoked`], shared with every configuration made from
    /// this identity. Returns the certificate now in use.
    pub fn replace(&mut self, pair: &PemPair) -> Result<&CertificateInfo, CertError> {
        let (key, certificate) = check(
            pair,
            &self.provider,
            self.client_verifier.as_ref(),
            self.server_verifier.as_ref(),
            &self.ca_path,
        )?;
        // A replacement names the same node, so the name read at load
        // stays the name.
        if certificate.name != self.certificate.name {
            return Err(CertError::OtherNode {
                path: pair.cert_path.clone(),
                running: self.certificate.name.clone(),
                found: certificate.name,
            });
        }
        if let Some(revocation) = self.revoked.covering(&certificate) {
            return Err(CertError::Revoked {
                path: pair.cert_path.clone(),
                name: certificate.name,
                revoked_at: revocation.revoked_at,
            });
        }
        self.current.replace(key);
        self.certificate = certificate;
        self.fingerprint = pair.fingerprint();
        Ok(&self.certificate)
    }

    /// This node's name, from its certificate.
    pub fn name(&self) -> &NodeName {
        &self.certificate.name
    }

    /// This node's mesh identity.
    pub fn peer_id(&self) -> PeerId {
        self.certificate.peer
    }

    /// The certificate in use.
    pub fn certificate(&self) -> &CertificateInfo {
        &self.certificate
    }

    /// The [`PemPair::fingerprint`] of the files the certificate in use
    /// came from.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The TLS side of a QUIC server: TLS 1.3 only, requires a client
    /// certificate signed by the cluster CA and covered by no revocation
    /// ([`TlsIdentity::revoked`], as it is at each handshake), offers
    /// [`ALPN`], never resumes a session.
    ///
    /// Without resumption every connection is a full handshake: both sides
    /// present and check their current certificates each time (a resumed
    /// TLS 1.3 session skips the client-certificate verifier and carries the
    /// identity checked when it began, through a replaced, expired or
    /// revoked certificate). Connections are long-lived, so the cost is a
    /// few signatures per connection.
    pub fn server_crypto(&self) -> Result<Arc<QuicServerConfig>, CertError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&TLS13])
            .map_err(tls_config)?
            .with_client_cert_verifier(Arc::new(NotRevokedClients {
                inner: self.client_verifier.clone(),
                revoked: self.revoked.clone(),
            }))
            .with_cert_resolver(self.current.clone());
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let config = QuicServerConfig::try_from(config).map_err(tls_config)?;
        Ok(Arc::new(config))
    }

    /// The TLS side of a QUIC client: TLS 1.3 only, presents this node's
    /// certificate, accepts only servers certified by the cluster CA and
    /// covered by no revocation, offers [`ALPN`], never resumes a session
    /// (see [`TlsIdentity::server_crypto`]). Dial with server name
    /// [`MESH_SERVER_NAME`] (`endpoint.connect(addr, MESH_SERVER_NAME)`)
    /// and learn who answered with [`peer_of`].
    pub fn client_crypto(&self) -> Result<Arc<QuicClientConfig>, CertError> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&TLS13])
            .map_err(tls_config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NotRevokedServers {
                inner: self.server_verifier.clone(),
                revoked: self.revoked.clone(),
            }))
            .with_client_cert_resolver(self.current.clone());
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.resumption = Resumption::disabled();
        let config = QuicClientConfig::try_from(config).map_err(tls_config)?;
        Ok(Arc::new(config))
    }
}

/// Checks a node's certificate and key as [`TlsIdentity::load`] describes,
/// against the CA in `ca_path` (whose verifiers these are).
fn check(
    pair: &PemPair,
    provider: &Arc<CryptoProvider>,
    client_verifier: &dyn ClientCertVerifier,
    server_verifier: &dyn ServerCertVerifier,
    ca_path: &Path,
) -> Result<(CertifiedKey, CertificateInfo), CertError> {
    let cert_path = &pair.cert_path;
    let key_path = &pair.key_path;
    let cert = certificate_from_pem(cert_path, &pair.cert)?;
    let parsed = parse_x509(&cert).map_err(not_certificate(cert_path))?;
    let certificate =
        CertificateInfo::of(&parsed).map_err(|reason| CertError::NameInCertificate {
            path: cert_path.clone(),
            reason,
        })?;

    let key = key_from_pem(key_path, &pair.key)?;
    let certified_key =
        CertifiedKey::from_der(vec![cert.clone()], key, provider).map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => CertError::KeyMismatch {
                path: key_path.clone(),
                cert: cert_path.clone(),
            },
            other => not_key(key_path)(other),
        })?;

    // Check now, as both the client and the server side of a handshake
    // will, so that a bad certificate fails here rather than at every
    // connection.
    let mesh_name = ServerName::try_from(MESH_SERVER_NAME).map_err(tls_config)?;
    let now = UnixTime::now();
    let untrusted = |error: rustls::Error| CertError::Untrusted {
        path: cert_path.clone(),
        ca: ca_path.to_owned(),
        reason: error.to_string(),
    };
    client_verifier
        .verify_client_cert(&cert, &[], now)
        .map_err(untrusted)?;
    server_verifier
        .verify_server_cert(&cert, &[], &mesh_name, &[], now)
        .map_err(untrusted)?;
    Ok((certified_key, certificate))
}

/// The certificate and key a TLS endpoint presents, server or client side:
/// read at every handshake, so that a replacement reaches every
/// configuration already built from it (no endpoint is rebuilt, no
/// connection closed).
#[derive(Debug)]
pub struct ReplaceableKey(RwLock<Arc<CertifiedKey>>);

impl ReplaceableKey {
    /// Presents `key` until replaced.
    pub fn new(key: CertifiedKey) -> Arc<ReplaceableKey> {
        Arc::new(ReplaceableKey(RwLock::new(Arc::new(key))))
    }

    /// Presents `key` from the next handshake on.
    pub fn replace(&self, key: CertifiedKey) {
        // A plain store of an Arc cannot leave it half-written, so
        // poisoning is moot.
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ReplaceableKey {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for ReplaceableKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The authenticated identity of the peer at the other end of
/// `connection`: the certificate it presented in the handshake (which the
/// TLS configuration has already verified against the cluster CA and the
/// revocations).
pub fn peer_of(connection: &quinn::Connection) -> Result<CertificateInfo, CertError> {
    let unusable = |reason: String| CertError::PeerCertificate { reason };
    let identity = connection
        .peer_identity()
        .ok_or_else(|| unusable("no certificate was presented".to_owned()))?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| unusable("not an X.509 certificate chain".to_owned()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| unusable("empty certificate chain".to_owned()))?;
    let parsed = parse_x509(leaf).map_err(unusable)?;
    CertificateInfo::of(&parsed).map_err(unusable)
}

fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_rest, cert)| cert)
        .map_err(|error| error.to_string())
}

fn common_name(cert: &X509Certificate<'_>) -> Result<NodeName, String> {
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or("no common name")?
        .as_str()
        .map_err(|error| format!("common name is not text: {error}"))?;
    NodeName::new(cn).map_err(|error| error.to_string())
}

fn certificate_from_pem(path: &Path, pem: &[u8]) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem).map_err(not_pem(path))
}

fn key_from_pem(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(not_pem(path))
}

// `map_err` adapters: a failure, attributed to the file it is about.

fn not_pem<E: fmt::Display>(path: &Path) -> impl FnOnce(E) -> CertError {
    move |error| CertError::NotPem {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

fn not_certificate<E: fmt::Display>(path: &Path) -> impl FnOnce(E) -> CertError {
    move |error| CertError::NotCertificate {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

fn not_key<E: fmt::Display>(path: &Path) -> impl FnOnce(E) -> CertError {
    move |error| CertError::NotKey {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// Sets a validity period of `length` from now (and a little before, see
/// [`CLOCK_SKEW_ALLOWANCE`]), in whole seconds as X.509 has them: a
/// revocation's bound is compared with the notBefore a peer reads.
fn set_validity(params: &mut CertificateParams, length: Duration) {
    let now = ASN1Time::now().to_datetime();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    params.not_before = now - CLOCK_SKEW_ALLOWANCE;
    params.not_after = now + length;
}

fn tls_config(error: impl fmt::Display) -> CertError {
    CertError::TlsConfig(error.to_string())
}

fn missing_or_io(path: &Path, error: io::Error) -> CertError {
    match error.kind() {
        io::ErrorKind::NotFound => CertError::Missing {
            path: path.to_owned(),
        },
        _ => io_error(path, error),
    }
}

fn io_error(path: &Path, error: io::Error) -> CertError {
    CertError::Io {
        path: path.to_owned(),
        error,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|error| missing_or_io(path, error))
}

/// [`read`], refusing a file over [`PEM_BYTES_MAX`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, CertError> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(|error| missing_or_io(path, error))?;
    let mut bytes = Vec::new();
    file.take(PEM_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| io_error(path, error))?;
    if bytes.len() as u64 > PEM_BYTES_MAX {
        return Err(CertError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

fn exists(path: &Path) -> Result<bool, CertError> {
    path.try_exists().map_err(|error| io_error(path, error))
}

/// Creates `dir` and its missing parents private ([`files::DIR_MODE`]): it
/// holds keys. An existing directory is the operator's and keeps its mode.
fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(files::DIR_MODE)
        .create(dir)
        .map_err(|error| io_error(dir, error))
}

/// Checks up front that none of `paths` exists, so that a refused call
/// writes nothing at all.
fn refuse_existing(paths: &[&Path]) -> Result<(), CertError> {
    for path in paths {
        if exists(path)? {
            return Err(CertError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Writes a new file and syncs it. Never replaces an existing file (even
/// one created since [`refuse_existing`] looked), and gives the file its
/// mode at creation, so a key is never readable by others, not even between
/// creation and a later chmod.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => CertError::AlreadyExists {
                path: path.to_owned(),
            },
            _ => io_error(path, error),
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|error| io_error(path, error))
}

/// `bytes` in lowercase hexadecimal, two digits each.
fn lowercase_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
