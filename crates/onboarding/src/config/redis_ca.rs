//! `REDIS_CA_CERT`: the certificate authority a Redis behind a private CA is verified against.
//! Azure Managed Redis's certificates chain to public roots, which the handler trusts by itself;
//! a self-hosted Redis (or a test cluster) may use its own CA. The handler never skips
//! verification: this only says whom to trust.

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::RedisSettings;
use super::reader::{Reader, Value};

/// The PEM text of one or more CA certificates, each checked to be a usable trust anchor when
/// the settings are read, so a wrong file stops the start rather than every connection.
#[derive(Clone)]
pub struct RedisCa {
    pem: Vec<u8>,
    count: usize,
}

impl RedisCa {
    /// Parses PEM text: at least one certificate, every one a valid trust anchor. `source`
    /// names where it came from, for the message.
    pub fn from_pem(pem: Vec<u8>, source: &str) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                format!("REDIS_CA_CERT: {source} is not readable PEM ({e:?}); give a PEM file of CA certificates")
            })?;
            roots.add(cert).map_err(|e| {
                format!(
                    "REDIS_CA_CERT: a certificate in {source} is not a usable CA certificate: {e}"
                )
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(format!(
                "REDIS_CA_CERT: {source} holds no certificate (expected `-----BEGIN CERTIFICATE-----` blocks)"
            ));
        }
        Ok(Self { pem, count })
    }

    /// The PEM text, as the redis client takes it (`TlsCertificates::root_cert`).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

impl std::fmt::Debug for RedisCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisCa({} certificate(s))", self.count)
    }
}

/// Reads `REDIS_CA_CERT` (a path to a PEM file) into `redis`, when set. It needs a `rediss://`
/// `REDIS_URL`: over plain TCP there is nothing to verify, and a CA given there is a mistake
/// worth naming.
pub(super) fn read_ca(
    read: &mut Reader<'_>,
    redis: Option<RedisSettings>,
) -> Option<RedisSettings> {
    let raw = match read.value("REDIS_CA_CERT") {
        Value::Missing => return redis,
        // Already reported (a Key Vault reference, a placeholder): the start fails anyway.
        Value::Reported => return None,
        Value::Present(raw) => raw,
    };
    let path = raw.trim();
    let ca = read.parsed(
        std::fs::read(path)
            .map_err(|e| format!("REDIS_CA_CERT: cannot read {path:?}: {e}"))
            .and_then(|pem| RedisCa::from_pem(pem, &format!("{path:?}"))),
    );
    let (mut settings, ca) = (redis?, ca?);
    if !settings.is_tls() {
        read.problems.push(
            "REDIS_CA_CERT is set but REDIS_URL is not rediss:// (TLS): use rediss://, or remove \
             REDIS_CA_CERT"
                .to_owned(),
        );
        return None;
    }
    settings.ca = Some(ca);
    Some(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = params;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("self-signed").pem()
    }

    #[test]
    fn a_pem_of_certificates_is_accepted() {
        let pem = format!("{}{}", ca_pem(), ca_pem());
        let ca = RedisCa::from_pem(pem.into_bytes(), "ca.pem").expect("two CAs");
        assert_eq!(format!("{ca:?}"), "RedisCa(2 certificate(s))");
    }

    fn settings(url: &str, ca: &str) -> Result<super::super::Settings, super::super::ConfigError> {
        let pairs = [
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "7000"),
            ("REDIS_URL", url),
            ("REDIS_CA_CERT", ca),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef-very-secret"),
            ("SMTP_URL", "smtp://127.0.0.1:2525"),
            ("MAIL_FROM", "Onboarding <no-reply@example.com>"),
        ];
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        super::super::Settings::from_lookup(super::super::Mode::Serve, move |n| map.get(n).cloned())
    }

    #[test]
    fn the_setting_reads_a_pem_file_for_a_tls_url_only() {
        let file = tempfile::NamedTempFile::new().expect("a file");
        std::fs::write(file.path(), ca_pem()).expect("write the CA");
        let path = file.path().to_str().expect("a UTF-8 path");

        let tls = settings("rediss://cache.example:6380", path).expect("accepted");
        let ca = tls.redis.and_then(|r| r.ca).expect("the CA is kept");
        assert!(ca.pem().starts_with(b"-----BEGIN CERTIFICATE-----"));

        let unset = settings("rediss://cache.example:6380", "").expect("accepted");
        assert!(unset.redis.expect("redis").ca.is_none());

        let err = settings("redis://cache.example:6379", path).unwrap_err();
        assert!(
            err.problems[0].contains("REDIS_URL is not rediss://"),
            "{err}"
        );
        let err = settings("rediss://cache.example:6380", "/nonexistent/ca.pem").unwrap_err();
        assert!(
            err.problems[0].starts_with("REDIS_CA_CERT: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let err = RedisCa::from_pem(b"not a certificate\n".to_vec(), "ca.pem").unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = RedisCa::from_pem(garbage.to_vec(), "ca.pem").unwrap_err();
        assert!(err.starts_with("REDIS_CA_CERT:"), "{err}");
    }
}
