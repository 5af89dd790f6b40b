//! A hostile peer inside the test process: certificates the cluster CA
//! signed with properties `aqueduct certs issue` would never give (expired,
//! a name that is no node name), and a QUIC endpoint built from the
//! crate's own pieces that dials a real peer's gossip port with any
//! certificate and sends whatever bytes a test likes, framed or not.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aqueduct::certs::{self, MESH_SERVER_NAME, NodeName, TlsIdentity};
use aqueduct::gossip::wire::{self, ALPN, Message};
use aqueduct::gossip::{MemberId, PeerId};
use quinn::crypto::rustls::QuicClientConfig;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::DEADLINE;

const HOUR: Duration = Duration::from_secs(3600);

/// When a forged certificate is valid.
#[derive(Clone, Copy, Debug)]
pub enum Validity {
    /// From an hour ago to an hour from now.
    Current,
    /// During 2020 only.
    Expired,
}

/// A certificate and its private key.
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Credentials {
    /// `node.pem` and `node.key` of a TLS directory.
    pub fn load(tls_dir: &Path) -> Credentials {
        let cert = CertificateDer::from_pem_file(tls_dir.join(certs::NODE_CERT_FILE));
        let key = PrivateKeyDer::from_pem_file(tls_dir.join(certs::NODE_KEY_FILE));
        Credentials {
            chain: vec![cert.expect("node.pem")],
            key: key.expect("node.key"),
        }
    }

    /// A node certificate for `common_name` signed by the CA in `ca_dir`,
    /// with `validity`, otherwise like the ones `aqueduct certs issue`
    /// makes (the mesh name, both key usages). The name is not checked:
    /// that is the point.
    pub fn forge(ca_dir: &Path, common_name: &str, validity: Validity) -> Credentials {
        let read = |file| std::fs::read_to_string(ca_dir.join(file)).expect("CA file");
        let ca_key = KeyPair::from_pem(&read(certs::CA_KEY_FILE)).expect("CA key");
        let issuer = Issuer::from_ca_cert_pem(&read(certs::CA_CERT_FILE), ca_key).expect("CA");
        let mut params = CertificateParams::new(vec![MESH_SERVER_NAME.to_owned()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = match validity {
            Validity::Current => {
                let now = x509_parser::time::ASN1Time::now().to_datetime();
                (now - HOUR, now + HOUR)
            }
            Validity::Expired => (
                rcgen::date_time_ymd(2020, 1, 1),
                rcgen::date_time_ymd(2021, 1, 1),
            ),
        };
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("signed");
        Credentials {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).expect("key DER"),
        }
    }

    /// The TLS side of a QUIC client presenting these credentials and
    /// trusting the CA certificate in `trusted_ca_pem` (the cluster's public
    /// `ca.pem`, which anyone may have copied).
    pub fn client_crypto(self, trusted_ca_pem: &Path) -> Arc<QuicClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(trusted_ca_pem).expect("trusted ca.pem");
        roots.add(ca).expect("trust the CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(Arc::new(roots))
            .with_client_auth_cert(self.chain, self.key)
            .expect("client certificate");
        config.alpn_protocols = vec![ALPN.to_vec()];
        Arc::new(QuicClientConfig::try_from(config).expect("QUIC client config"))
    }
}

/// A QUIC client on 127.0.0.1 with its own runtime, so that tests stay
/// synchronous (the peers' HTTP client blocks) while the attacker's
/// connections keep running in the background.
pub struct Attacker {
    // Dropped before the runtime it runs on.
    endpoint: quinn::Endpoint,
    pub runtime: tokio::runtime::Runtime,
}

impl Attacker {
    /// An attacker holding a genuine member certificate of the cluster.
    pub fn member(tls_dir: &Path) -> Attacker {
        let identity = TlsIdentity::load(tls_dir).expect("a valid member identity");
        Attacker::new(identity.client_crypto().expect("client crypto"))
    }

    /// An attacker presenting `credentials`, trusting the cluster's
    /// `ca.pem` in `cluster_ca_dir`.
    pub fn with(credentials: Credentials, cluster_ca_dir: &Path) -> Attacker {
        Attacker::new(credentials.client_crypto(&cluster_ca_dir.join(certs::CA_CERT_FILE)))
    }

    fn new(crypto: Arc<QuicClientConfig>) -> Attacker {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let endpoint = runtime.block_on(async {
            let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))
                .expect("client endpoint");
            endpoint.set_default_client_config(quinn::ClientConfig::new(crypto));
            endpoint
        });
        Attacker { endpoint, runtime }
    }

    /// Dials `gossip`; the connection once this side finished its
    /// handshake (the peer may still refuse it right after), or why not.
    pub fn connect(&self, gossip: SocketAddr) -> Result<quinn::Connection, String> {
        self.runtime.block_on(async {
            let connecting = self
                .endpoint
                .connect(gossip, MESH_SERVER_NAME)
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(DEADLINE, connecting).await {
                Ok(connected) => connected.map_err(|e| e.to_string()),
                Err(_) => Err("handshake timed out".to_owned()),
            }
        })
    }

    /// Opens a unidirectional stream on `connection` (as a peer's transport
    /// does) and writes `bytes` on it, unframed: the caller frames them.
    /// The stream stays open.
    pub fn send_raw(
        &self,
        connection: &quinn::Connection,
        bytes: &[u8],
    ) -> Result<quinn::SendStream, String> {
        self.runtime.block_on(async {
            let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
            stream.write_all(bytes).await.map_err(|e| e.to_string())?;
            Ok(stream)
        })
    }

    /// Sends `message` on `connection` as one frame of a new stream, the way
    /// a peer's transport sends.
    pub fn send(&self, connection: &quinn::Connection, message: &Message) {
        let bytes = wire::encode(message).expect("encodes");
        self.send_raw(connection, &frame(&bytes))
            .expect("the frame is sent");
    }

    /// Joins the mesh as the member `name` through `target` (peer id
    /// `target_peer`), as a peer's SWIM would: an announce, answered over
    /// `connection`. The attacker answers no probe afterwards, so the
    /// mesh declares it down within seconds; tests act before that.
    pub fn announce(&self, connection: &quinn::Connection, name: &str, target_peer: PeerId) {
        self.announce_at(connection, name, 0, target_peer);
    }

    /// [`Attacker::announce`], claiming restart generation `generation`.
    pub fn announce_at(
        &self,
        connection: &quinn::Connection,
        name: &str,
        generation: u32,
        target_peer: PeerId,
    ) {
        let me = member(name, generation);
        let target = MemberId {
            peer: target_peer,
            generation: 0,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        self.swim(connection, me, target, foca::Message::Announce, &[]);
    }

    /// Sends, as the member `name` (announced with [`Attacker::announce`]),
    /// a SWIM gossip packet to `target` (its identity exactly as it runs:
    /// SWIM ignores a payload addressed to another) carrying `updates`
    /// about anyone.
    pub fn gossip(
        &self,
        connection: &quinn::Connection,
        name: &str,
        target: MemberId,
        updates: &[foca::Member<MemberId>],
    ) {
        self.swim(
            connection,
            member(name, 0),
            target,
            foca::Message::Gossip,
            updates,
        );
    }

    fn swim(
        &self,
        connection: &quinn::Connection,
        me: MemberId,
        target: MemberId,
        message: foca::Message<MemberId>,
        updates: &[foca::Member<MemberId>],
    ) {
        let header = foca::Header {
            src: me,
            src_incarnation: 0,
            dst: target,
            message,
        };
        let mut codec = foca::PostcardCodec;
        let mut packet = Vec::new();
        foca::Codec::encode_header(&mut codec, &header, &mut packet).expect("encodes");
        if !updates.is_empty() {
            let count = u16::try_from(updates.len()).expect("a few updates");
            packet.extend_from_slice(&count.to_be_bytes());
            for update in updates {
                foca::Codec::encode_member(&mut codec, update, &mut packet).expect("encodes");
            }
        }
        self.send(connection, &Message::Swim(packet));
    }

    /// Waits until the peer closes `connection`; its reason.
    pub fn closed(&self, connection: &quinn::Connection) -> quinn::ConnectionError {
        self.runtime.block_on(async {
            tokio::time::timeout(DEADLINE, connection.closed())
                .await
                .expect("the peer closes the connection in time")
        })
    }
}

/// The attacker's SWIM identity as the member `name` at `generation`.
fn member(name: &str, generation: u32) -> MemberId {
    MemberId {
        peer: certs::peer_id_of(&NodeName::new(name).expect("a node name")),
        generation,
        addr: SocketAddr::from(([127, 0, 0, 1], 9)),
    }
}

/// `body` with the transport's length prefix (4 bytes, big-endian).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("a frame under 4 GiB");
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(body);
    framed
}

/// `len` pseudo-random bytes (xorshift from `seed`) that can never decode
/// as a message: the first byte, the protocol major version, is never
/// ours, so every such frame must be dropped as garbage.
pub fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    if let Some(first) = bytes.first_mut() {
        // A single-byte varint (< 0x80) other than the current major.
        *first &= 0x7f;
        if u16::from(*first) == aqueduct::gossip::wire::PROTOCOL_MAJOR {
            *first += 1;
        }
    }
    bytes
}

/// The resident memory of process `pid`, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
