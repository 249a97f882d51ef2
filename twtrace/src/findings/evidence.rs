//! A finding's evidence: each line the sentence people read and the figures in it (numbers
//! with units) for tools; in JSON both, `evidence` and `evidence_figures` (doctor's schema
//! version 2, docs/schemas/doctor.json).

use serde::Serialize;

use super::{Finding, Kind, Remedy, Severity, Where};

/// One measured figure behind a finding: a number and its unit (`ports`, `calls`, `sockets`,
/// `segments`, `flows`, `entries`, `packets`, `events`, `records`, `percent`, `s`, `us`;
/// `count` for a rise of a kernel counter, named as the kernel names it; `setting` for a
/// sysctl's value).
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

/// Integral values as JSON integers (`100`, not `100.0`), the rest as they are.
impl Serialize for Figure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("Figure", 3)?;
        out.serialize_field("name", &self.name)?;
        if self.value.fract() == 0.0 && self.value.abs() < 9.0e15 {
            out.serialize_field("value", &(self.value as i64))?;
        } else {
            out.serialize_field("value", &self.value)?;
        }
        out.serialize_field("unit", self.unit)?;
        out.end()
    }
}

pub(super) fn fig(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
    Figure { name: name.into(), value, unit }
}

/// One line of evidence: the sentence people read, and the figures in it for tools.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evidence {
    pub text: String,
    pub figures: Vec<Figure>,
}

pub(super) fn ev(text: String, figures: Vec<Figure>) -> Evidence {
    Evidence { text, figures }
}

/// A sentence with no figure to give apart (a damaged chunk's description).
impl From<String> for Evidence {
    fn from(text: String) -> Self {
        Self { text, figures: Vec::new() }
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<&str> for Evidence {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

/// A counter's rise as evidence: `PAWSEstab +12`.
pub(super) fn counter_rise(name: &str, rise: i64) -> Evidence {
    ev(format!("{name} {rise:+}"), vec![fig(name, rise as f64, "count")])
}

/// In JSON: `evidence` the sentences, as before; `evidence_figures` the same lines with their
/// figures as numbers and units (doctor's schema version 2, docs/schemas/doctor.json).
impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            severity: Severity,
            kind: Kind,
            text: &'a str,
            place: &'a Where,
            evidence: Vec<&'a str>,
            evidence_figures: &'a [Evidence],
            remedies: &'a [Remedy],
            #[serde(skip_serializing_if = "Option::is_none")]
            verify: Option<&'a str>,
        }
        Json {
            severity: self.severity,
            kind: self.kind,
            text: &self.text,
            place: &self.place,
            evidence: self.evidence.iter().map(|e| e.text.as_str()).collect(),
            evidence_figures: &self.evidence,
            remedies: &self.remedies,
            verify: self.verify.as_deref(),
        }
        .serialize(s)
    }
}
