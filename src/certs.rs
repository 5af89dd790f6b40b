//! Certificates: the cluster CA, node certificates, and the TLS
//! configurations built from them. (Being written.)
