//! Certificates: generating a development CA and server certificate (`regate certs generate` and
//! `serve`'s fallback), and reading a PEM pair with its expiry.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate in {cert} does not match the key in {key}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("the certificate in {path} expired at {not_after} (Unix time); every TLS client would refuse it")]
    Expired { path: PathBuf, not_after: i64 },
    #[error("the certificate in {path} is not valid before {not_before} (Unix time); TLS clients would refuse it until then")]
    NotYetValid { path: PathBuf, not_before: i64 },
}

impl CertError {
    /// The `reason` label of `regate_certificate_reload_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            CertError::Expired { .. } => "expired",
            CertError::NotYetValid { .. } => "not_yet_valid",
            CertError::Mismatch { .. } => "key_mismatch",
            CertError::Read { .. } | CertError::Write { .. } => "unreadable",
            CertError::NoCertificate { .. }
            | CertError::NoKey { .. }
            | CertError::Invalid { .. }
            | CertError::Generate(_) => "invalid",
        }
    }
}

/// What `certs generate` wrote.
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    pub ca_path: PathBuf,
    /// The CA's private key (mode 0600): kept, so the next rotation keeps the same `caBundle`.
    pub ca_key_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The CA certificate, base64-encoded PEM, as a webhook configuration's `caBundle` wants it.
    pub ca_bundle: String,
    /// Whether the CA already in `out` signed the new certificate (`false`: a new CA).
    pub reused_ca: bool,
}

/// The files in `out` that generating would replace and that hold something a cluster may
/// depend on: the server pair, and a CA certificate whose key is gone (it cannot be reused, so
/// a new CA, and a new `caBundle`, would replace it).
pub fn would_replace(out: &Path) -> Vec<PathBuf> {
    let mut replaced: Vec<PathBuf> = ["tls.crt", "tls.key"]
        .iter()
        .map(|name| out.join(name))
        .filter(|p| p.exists())
        .collect();
    if out.join("ca.crt").exists() && !out.join("ca.key").exists() {
        replaced.push(out.join("ca.crt"));
    }
    replaced
}

/// Generates a server certificate (ECDSA P-256, server auth) for `dns_names` and writes
/// `tls.crt` and `tls.key` (mode 0600) into `out`, signed by the CA in `ca.crt` and `ca.key`
/// when both are there, else by a new CA written there (`ca.key` mode 0600).
pub fn generate(
    dns_names: &[String],
    out: &Path,
    validity_days: i64,
) -> Result<GeneratedCerts, CertError> {
    std::fs::create_dir_all(out).map_err(|source| CertError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::days(validity_days);

    let ca_path = out.join("ca.crt");
    let ca_key_path = out.join("ca.key");
    let (issuer, ca_pem, reused_ca) = if ca_path.exists() && ca_key_path.exists() {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CertError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let ca_pem = read(&ca_path)?;
        let ca_key = KeyPair::from_pem(&read(&ca_key_path)?).map_err(|e| CertError::Invalid {
            path: ca_key_path.clone(),
            message: format!("not a usable CA key: {e}"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| CertError::Invalid {
            path: ca_path.clone(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
        (issuer, ca_pem, true)
    } else {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "regate development CA");
        ca_params
            .distinguished_name
            .push(DnType::OrganizationName, "regate");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // The CA outlives the certificates it signs, so rotating them keeps the caBundle.
        ca_params.not_before = not_before;
        ca_params.not_after = now + time::Duration::days(validity_days.max(1) * 10);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        // The key first: a CA certificate without its key could never sign again.
        write_file(&ca_key_path, ca_key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&ca_path, ca_cert.pem().as_bytes(), 0o644)?;
        (Issuer::new(ca_params, ca_key), ca_cert.pem(), false)
    };

    let mut names: Vec<String> = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for n in dns_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(names.clone())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.get(2).cloned().unwrap_or_else(|| "localhost".into()),
    );
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let server_cert = params.signed_by(&server_key, &issuer)?;

    let cert_path = out.join("tls.crt");
    let key_path = out.join("tls.key");
    // The key first: a watcher that sees the new certificate finds its key already in place
    // or refuses the mismatched pair until it is.
    write_file(&key_path, server_key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, server_cert.pem().as_bytes(), 0o644)?;
    Ok(GeneratedCerts {
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(&ca_pem),
        ca_path,
        ca_key_path,
        cert_path,
        key_path,
        reused_ca,
    })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Write beside the target and rename, so a watcher never sees a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A certificate chain and key read from PEM files, with the leaf's validity period.
#[derive(Debug)]
pub struct CertPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub not_before: i64,
    pub not_after: i64,
}

impl CertPair {
    /// Refuses a pair TLS clients would refuse at `now` (Unix time): expired, or not valid yet.
    pub fn check_validity(&self, path: &Path, now: i64) -> Result<(), CertError> {
        if now >= self.not_after {
            return Err(CertError::Expired {
                path: path.to_path_buf(),
                not_after: self.not_after,
            });
        }
        if now < self.not_before {
            return Err(CertError::NotYetValid {
                path: path.to_path_buf(),
                not_before: self.not_before,
            });
        }
        Ok(())
    }
}

pub fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertPair, CertError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| CertError::Read {
        path: cert_path.to_path_buf(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| CertError::Read {
        path: key_path.to_path_buf(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Invalid {
            path: cert_path.to_path_buf(),
            message: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::NoKey {
        path: key_path.to_path_buf(),
    })?;
    let (not_before, not_after) = validity_of(leaf).map_err(|message| CertError::Invalid {
        path: cert_path.to_path_buf(),
        message,
    })?;
    Ok(CertPair {
        chain,
        key,
        not_before,
        not_after,
    })
}

/// Unix time at which a DER certificate expires.
pub fn not_after_of(der: &CertificateDer<'_>) -> Result<i64, String> {
    validity_of(der).map(|(_, not_after)| not_after)
}

/// Unix times from which and until which a DER certificate is valid.
pub fn validity_of(der: &CertificateDer<'_>) -> Result<(i64, i64), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// Reads every certificate of a PEM bundle (for `--client-ca`).
pub fn read_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}
