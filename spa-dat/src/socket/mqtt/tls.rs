//! TLS for MQTT (rustls): the CA to trust and an optional client certificate, from PEM files.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// TLS settings.
///
/// # Examples
///
/// ```
/// use spa_dat::socket::mqtt::{MqttConfig, MqttTls};
///
/// // Mutual TLS with a private CA.
/// let config = MqttConfig {
///     tls: Some(MqttTls {
///         ca_file: Some("/etc/certs/ca.pem".into()),
///         client_cert_file: Some("/etc/certs/client.pem".into()),
///         client_key_file: Some("/etc/certs/client.key".into()),
///     }),
///     ..MqttConfig::new("broker.local", 8883)
/// };
/// # let _ = config;
/// // `mqtts://` URLs take the system's CA certificates: `tls = Some(MqttTls::default())`.
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttTls {
    /// PEM file with the CA certificates to trust; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
}

impl MqttTls {
    pub(super) fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                for cert in read_pem_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(Error::config(
                        "TLS: no system CA certificates found; set tls.ca_file",
                    ));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let chain = read_pem_certs(cert)?;
                use rustls_pki_types::pem::PemObject;
                let key_der = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| Error::config(format!("{}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| Error::config(format!("TLS client certificate: {e}")))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(Error::config(
                "TLS: client_cert_file and client_key_file go together",
            )),
        }
    }
}

fn read_pem_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}
