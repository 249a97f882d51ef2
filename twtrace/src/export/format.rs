//! What a scrape is answered in: OpenMetrics or Prometheus' text format 0.0.4, gzipped or not,
//! as the request's `Accept` and `Accept-Encoding` ask.
//!
//! `prometheus-client` encodes OpenMetrics only; the 0.0.4 text is derived from it line by
//! line ([`text_004`]), so both say the same figures. Prometheus itself asks for OpenMetrics
//! first; a client that asks only for `text/plain` (an older scraper, a collector configured
//! for the classic format) gets 0.0.4; one that states no preference (`*/*`, curl's default)
//! gets OpenMetrics, as before this module existed.

use std::io::Write as _;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text004,
}

impl Format {
    /// From an `Accept` header (absent: no preference). The media type with the highest
    /// quality wins; a tie goes to OpenMetrics; `q=0` refuses one.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let (mut openmetrics, mut text) = (None::<f32>, None::<f32>);
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q=").and_then(|v| v.trim().parse::<f32>().ok()))
                .next_back()
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut openmetrics,
                "text/plain" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |seen| seen.max(q)));
        }
        match (openmetrics, text) {
            (_, Some(t)) if t > 0.0 && openmetrics.is_none_or(|o| t > o) => Self::Text004,
            _ => Self::OpenMetrics,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS,
            Self::Text004 => TEXT_004,
        }
    }
}

/// Whether an `Accept-Encoding` header takes gzip (listed, and not with `q=0`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.unwrap_or("").split(',').any(|coding| {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| p.strip_prefix("q=").and_then(|v| v.trim().parse::<f32>().ok()) == Some(0.0));
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
    })
}

pub fn gzip(body: &[u8]) -> Vec<u8> {
    // Level 1: a scrape's text shrinks about tenfold already; the drive loop's thread is
    // never the one compressing (see `http`), but the blocking pool is shared.
    let mut z = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 8), flate2::Compression::new(1));
    // Writing to a Vec cannot fail.
    let _ = z.write_all(body);
    z.finish().unwrap_or_default()
}

/// OpenMetrics text (as `prometheus-client` writes it) in the 0.0.4 text format: no `# UNIT`
/// and no `# EOF`; a counter's `# TYPE` and `# HELP` name its samples (`x_total`, where
/// OpenMetrics names the family `x`); an info family becomes the gauge `x_info`; `unknown`
/// becomes `untyped`; help text unescapes `\"` (0.0.4 escapes only `\\` and `\n`).
pub fn text_004(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // A family's lines are read as a block, so its `# TYPE` line names the family for its
    // `# HELP` line whichever comes first.
    let mut block: Vec<&str> = Vec::new();
    let flush = |block: &mut Vec<&str>, out: &mut String| {
        let kind = block.iter().find_map(|l| l.strip_prefix("# TYPE ")).and_then(|rest| rest.split_once(' '));
        let (family, renamed, kind_004) = match kind {
            Some((family, "counter")) => (family, format!("{family}_total"), "counter"),
            Some((family, "info")) => (family, format!("{family}_info"), "gauge"),
            Some((family, "unknown")) => (family, family.to_owned(), "untyped"),
            Some((family, other)) => (family, family.to_owned(), other),
            None => ("", String::new(), ""),
        };
        for line in block.drain(..) {
            if line.starts_with("# UNIT ") || line == "# EOF" {
                continue;
            }
            if line.starts_with("# TYPE ") && !family.is_empty() {
                out.push_str(&format!("# TYPE {renamed} {kind_004}\n"));
            } else if let Some(help) = line.strip_prefix("# HELP ").and_then(|r| r.strip_prefix(family)) {
                out.push_str(&format!("# HELP {renamed}{}\n", help.replace("\\\"", "\"")));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
    };
    for line in openmetrics.lines() {
        // A family's block starts at its first comment line after samples.
        let starts_family = line.starts_with("# ") && block.last().is_some_and(|l| !l.starts_with("# "));
        if starts_family {
            flush(&mut block, &mut out);
        }
        block.push(line);
    }
    flush(&mut block, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_quality_wins_and_openmetrics_breaks_ties() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain;version=0.0.4")), Format::Text004);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5")),
            Format::Text004
        );
        assert_eq!(Format::negotiate(Some("text/plain, application/openmetrics-text")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain;q=0")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
    }

    #[test]
    fn gzip_when_listed_and_not_refused() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(None));
        let body = b"twtrace_events_total 5\n".repeat(100);
        let mut back = Vec::new();
        use std::io::Read as _;
        flate2::read::GzDecoder::new(&gzip(&body)[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn openmetrics_becomes_text_004() {
        let om = "# HELP twtrace_events Records \\\"decoded\\\".\n# TYPE twtrace_events counter\ntwtrace_events_total 5\n\
                  # HELP twtrace_build Build.\n# TYPE twtrace_build info\ntwtrace_build_info{version=\"0.1.0\"} 1\n\
                  # HELP twtrace_search_duration_seconds Search time.\n# TYPE twtrace_search_duration_seconds histogram\n\
                  # UNIT twtrace_search_duration_seconds seconds\ntwtrace_search_duration_seconds_sum 0.5\n\
                  twtrace_search_duration_seconds_count 2\ntwtrace_search_duration_seconds_bucket{le=\"+Inf\"} 2\n\
                  # HELP twtrace_timewait_sockets Now.\n# TYPE twtrace_timewait_sockets gauge\ntwtrace_timewait_sockets{netns=\"1\"} 3\n# EOF\n";
        let text = text_004(om);
        assert_eq!(
            text,
            "# HELP twtrace_events_total Records \"decoded\".\n# TYPE twtrace_events_total counter\ntwtrace_events_total 5\n\
             # HELP twtrace_build_info Build.\n# TYPE twtrace_build_info gauge\ntwtrace_build_info{version=\"0.1.0\"} 1\n\
             # HELP twtrace_search_duration_seconds Search time.\n# TYPE twtrace_search_duration_seconds histogram\n\
             twtrace_search_duration_seconds_sum 0.5\ntwtrace_search_duration_seconds_count 2\n\
             twtrace_search_duration_seconds_bucket{le=\"+Inf\"} 2\n\
             # HELP twtrace_timewait_sockets Now.\n# TYPE twtrace_timewait_sockets gauge\ntwtrace_timewait_sockets{netns=\"1\"} 3\n"
        );
    }
}
