//! `twtrace mark TEXT`: an annotation in the running flight recording ("deploy v2"), shown by
//! `report` on every timeline and by `top --replay`. The transport and its guarantees are
//! `crate::record::control`'s.

use std::path::PathBuf;

use crate::record::control;

/// Where `record --record-dir` and `serve --record-dir` are shown to write in the README.
const DEFAULT_DIR: &str = "/var/lib/twtrace";

#[derive(clap::Args)]
pub struct MarkArgs {
    /// The flight recorder's directory (`record --record-dir DIR`, `serve --record-dir DIR`).
    /// (Was --dir, still accepted.)
    #[arg(long = "record-dir", alias = "dir", value_name = "DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Say what was marked as one JSON object on stdout (docs/schemas/mark.json).
    #[arg(long)]
    json: bool,
    /// What happened, in a few words (one line, at most 200 bytes; the words are joined).
    #[arg(required = true, num_args = 1.., value_name = "TEXT")]
    text: Vec<String>,
}

/// The version of `mark --json`'s layout (docs/schemas/mark.json).
pub const SCHEMA_VERSION: u32 = 1;

/// Exits non-zero unless the recorder confirms the mark is in the stream.
pub fn run(args: &MarkArgs) -> anyhow::Result<()> {
    let text = args.text.join(" ");
    let at = control::send_mark(&args.dir, &text)?;
    if args.json {
        let said = serde_json::json!({"schema_version": SCHEMA_VERSION, "dir": args.dir, "text": text, "at": at});
        println!("{said}");
    } else {
        crate::note!("marked {} at {at}", args.dir.display());
    }
    Ok(())
}
