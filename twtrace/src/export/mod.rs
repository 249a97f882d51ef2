//! Exporting the aggregator's model to Prometheus: what `twtrace serve` is made of.
//!
//! - [`model`]: an [`model::Exposition`], everything a scrape returns, built from the model
//!   on the drive loop's tick (bounded: the top K rows per kind, the rest folded into `other`,
//!   idle destinations aged out), and the `prometheus-client` collector that encodes it into
//!   OpenMetrics text when scraped.
//! - [`webconfig`]: the web configuration file of node_exporter and the Prometheus exporter
//!   toolkit (TLS, basic auth with bcrypt hashes).
//! - [`format`]: the body a scrape asks for: OpenMetrics or the 0.0.4 text, gzipped or not.
//! - [`http`]: the HTTP(S) server: `/metrics`, `/healthz`, an index page; timeouts, a bound
//!   on connections, and a graceful stop.

pub mod format;
pub mod http;
pub mod model;
pub mod webconfig;

/// What can go wrong setting up the exporter (scrapes themselves answer with HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the web configuration {path}: {source}")]
    ReadConfig { path: std::path::PathBuf, source: std::io::Error },
    #[error("the web configuration {path} is not valid: {reason}")]
    Config { path: std::path::PathBuf, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}
