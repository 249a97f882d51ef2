//! The web configuration file node_exporter and the Prometheus exporter toolkit read
//! (`--web.config.file`): TLS and basic auth, the same YAML, so one file serves both.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/twtrace/tls.crt
//!   key_file: /etc/twtrace/tls.key
//!   min_version: TLS12          # optional: TLS12 (default) or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...      # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! http_server_config:
//!   headers:                    # optional extra response headers
//!     X-Frame-Options: deny
//! ```
//!
//! Unknown keys are an error, as in the toolkit: a misspelt `basic_auth_user` must not
//! silently leave the endpoint open. Client certificates (`client_auth_type` other than
//! `NoClientCert`), cipher suites and curve preferences are not supported: rustls chooses
//! safe ones, and asking for them is an error rather than ignored.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::Deserialize;

use super::ExportError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsSection>,
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
    http_server_config: Option<HttpSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// HTTP/2 is not served; accepted so a toolkit file that says `http2: false` still reads.
    http2: Option<bool>,
}

/// The web configuration, checked and loaded (certificates parsed, hashes validated).
#[derive(Clone, Default)]
pub struct WebConfig {
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    pub auth: Option<Arc<BasicAuth>>,
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.auth.as_ref().map(|a| a.users.len()))
            .field("headers", &self.headers)
            .finish()
    }
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<Self, ExportError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ExportError::ReadConfig { path: path.to_owned(), source })?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|reason| ExportError::Config { path: path.to_owned(), reason })
    }

    /// Parses the YAML; relative certificate paths are relative to `dir` (the file's own).
    pub fn parse(text: &str, dir: &Path) -> Result<Self, String> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(text).map_err(|e| e.to_string())?
        };
        let tls = file.tls_server_config.map(|t| tls_config(t, dir)).transpose()?;
        let auth = if file.basic_auth_users.is_empty() {
            None
        } else {
            let mut cost = 10;
            for (user, hash) in &file.basic_auth_users {
                if user.contains(':') {
                    return Err(format!("basic_auth_users: the user name `{user}` contains `:`"));
                }
                let parts: bcrypt::HashParts =
                    hash.parse().map_err(|e| format!("basic_auth_users: {user}: not a bcrypt hash ({e})"))?;
                cost = parts.get_cost();
            }
            // Checked against for unknown users, as long as a known user's check takes.
            let decoy = bcrypt::hash("twtrace", cost).map_err(|e| e.to_string())?;
            Some(Arc::new(BasicAuth { users: file.basic_auth_users, decoy, verified: Mutex::default() }))
        };
        let mut headers = Vec::new();
        if let Some(http) = file.http_server_config {
            if http.http2 == Some(true) {
                return Err("http_server_config: http2 is not supported by twtrace (HTTP/1.1 only)".into());
            }
            for (name, value) in http.headers {
                let reserved = ["authorization", "content-type", "content-length", "www-authenticate"];
                if reserved.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err(format!("http_server_config: the header {name} is set by twtrace itself"));
                }
                hyper::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name}: {e}"))?;
                hyper::header::HeaderValue::from_str(&value).map_err(|e| format!("header {name}: {e}"))?;
                headers.push((name, value));
            }
        }
        Ok(Self { tls, auth, headers })
    }
}

fn tls_config(t: TlsSection, dir: &Path) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    use tokio_rustls::rustls;
    if let Some(kind) = t.client_auth_type.as_deref().filter(|k| *k != "NoClientCert") {
        return Err(format!("tls_server_config: client_auth_type {kind} is not supported (only NoClientCert)"));
    }
    let (Some(cert), Some(key)) = (t.cert_file, t.key_file) else {
        return Err("tls_server_config: both cert_file and key_file are required".into());
    };
    let cert = dir.join(cert);
    let key = dir.join(key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("cert_file {}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("key_file {}: {e}", key.display()))?;
    let version = |v: Option<&str>, default: &'static rustls::SupportedProtocolVersion| match v {
        None => Ok(default),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some(other) => Err(format!("tls_server_config: TLS version {other}: use TLS12 or TLS13")),
    };
    let min = version(t.min_version.as_deref(), &rustls::version::TLS12)?;
    let max = version(t.max_version.as_deref(), &rustls::version::TLS13)?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [&rustls::version::TLS12, &rustls::version::TLS13]
        .into_iter()
        .filter(|v| rank(v) >= rank(min) && rank(v) <= rank(max))
        .collect();
    if versions.is_empty() {
        return Err("tls_server_config: min_version is above max_version".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn rank(v: &tokio_rustls::rustls::SupportedProtocolVersion) -> u8 {
    match v.version {
        tokio_rustls::rustls::ProtocolVersion::TLSv1_3 => 13,
        _ => 12,
    }
}

/// Users and their bcrypt hashes. Checking a password costs tens of milliseconds by design:
/// callers run [`BasicAuth::check`] off the event loop, and a pair that passed once is
/// remembered (a few at most), so a scraper every second does not pay it every time.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    decoy: String,
    /// (user, password) pairs that passed, newest last.
    verified: Mutex<Vec<(String, String)>>,
}

const REMEMBERED: usize = 16;

impl BasicAuth {
    /// Whether an `Authorization` header's value names a user with the right password.
    pub fn check(&self, header: Option<&str>) -> bool {
        use base64::Engine as _;
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Ok(text) = String::from_utf8(decoded) else { return false };
        let Some((user, password)) = text.split_once(':') else { return false };
        let Some(hash) = self.users.get(user) else {
            // As long as a known user's check takes: no hint of which names exist.
            let _ = bcrypt::verify(password, &self.decoy);
            return false;
        };
        let pair = (user.to_owned(), password.to_owned());
        let mut remembered = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if remembered.contains(&pair) {
            return true;
        }
        drop(remembered);
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return false;
        }
        remembered = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if remembered.len() == REMEMBERED {
            remembered.remove(0);
        }
        remembered.push(pair);
        true
    }

    /// Whether a header would pass without a bcrypt check (it passed before).
    pub fn remembered(&self, header: Option<&str>) -> bool {
        use base64::Engine as _;
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Ok(text) = String::from_utf8(decoded) else { return false };
        let Some((user, password)) = text.split_once(':') else { return false };
        let remembered = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        remembered.iter().any(|(u, p)| u == user && p == password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn basic_auth_checks_bcrypt_hashes_and_remembers_passes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let config = WebConfig::parse(&format!("basic_auth_users:\n  prom: '{hash}'\n"), Path::new(".")).unwrap();
        let auth = config.auth.unwrap();
        assert!(config.tls.is_none());
        assert!(!auth.check(None));
        assert!(!auth.check(Some(&header("prom", "wrong"))));
        assert!(!auth.check(Some(&header("nobody", "s3cret"))));
        assert!(!auth.check(Some("Bearer abc")));
        assert!(!auth.remembered(Some(&header("prom", "s3cret"))));
        assert!(auth.check(Some(&header("prom", "s3cret"))));
        assert!(auth.remembered(Some(&header("prom", "s3cret"))));
        assert!(!auth.remembered(Some(&header("prom", "s3cre"))));
    }

    #[test]
    fn mistakes_are_errors_not_an_open_endpoint() {
        let dir = Path::new(".");
        assert!(WebConfig::parse("basic_auth_user:\n  a: b\n", dir).unwrap_err().contains("unknown field"));
        assert!(WebConfig::parse("basic_auth_users:\n  a: plain\n", dir).unwrap_err().contains("bcrypt"));
        assert!(WebConfig::parse("tls_server_config:\n  cert_file: x\n", dir).unwrap_err().contains("key_file"));
        let e = WebConfig::parse(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
            dir,
        )
        .unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        assert!(WebConfig::parse("", dir).unwrap().auth.is_none());
        let h = WebConfig::parse("http_server_config:\n  headers:\n    X-Frame-Options: deny\n", dir).unwrap();
        assert_eq!(h.headers, [("X-Frame-Options".to_owned(), "deny".to_owned())]);
    }
}
