//! TLS for the loopback Redis servers: a throwaway CA and one server certificate that names
//! `localhost` only (no IP address), as Azure Managed Redis's certificate names only
//! `<name>.<region>.redis.azure.net` while its cluster nodes are advertised by IP. A client that
//! checks a node's certificate against the IP it connects to fails; one that checks it against
//! the seed's host name succeeds.
//!
//! Redis's TLS settings: <https://redis.io/docs/latest/operate/oss_and_stack/management/security/encryption/>.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The host name the certificate names, and the one a client must use to reach the servers.
pub const TLS_HOST: &str = "localhost";

/// The CA, certificate and key files, written in a directory the caller owns.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    /// Makes a CA and a server certificate for [`TLS_HOST`] only, signed by it, in `dir`.
    pub fn localhost(dir: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "onboarding test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("a self-signed CA");

        let key = rcgen::KeyPair::generate().expect("a server key");
        let mut params =
            rcgen::CertificateParams::new(vec![TLS_HOST.to_owned()]).expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, TLS_HOST);
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("a server certificate");

        let files = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&files.ca, ca_cert.pem()).expect("write the CA");
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }

    /// The CA's PEM file: what a client must trust (`REDIS_CA_CERT`).
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// `redis-server` arguments: TLS only on `port` (plain TCP off), between cluster nodes and
    /// to replicas too; clients need no certificate of their own.
    pub fn server_args(&self, port: u16) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["--port", "0", "--tls-port"]
            .iter()
            .map(OsString::from)
            .collect();
        args.push(port.to_string().into());
        for (flag, path) in [
            ("--tls-cert-file", &self.cert),
            ("--tls-key-file", &self.key),
            ("--tls-ca-cert-file", &self.ca),
        ] {
            args.push(flag.into());
            args.push(path.into());
        }
        for flag in ["--tls-cluster", "--tls-replication"] {
            args.push(flag.into());
            args.push("yes".into());
        }
        args.push("--tls-auth-clients".into());
        args.push("no".into());
        args
    }

    /// `redis-cli` arguments to reach a server over TLS, trusting the CA under [`TLS_HOST`].
    pub fn cli_args(&self) -> Vec<OsString> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.ca.clone().into(),
            "--sni".into(),
            TLS_HOST.into(),
        ]
    }
}
