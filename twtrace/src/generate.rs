//! `twtrace generate DIR` (hidden): the man pages and the shell completions, made from the
//! same clap definitions that parse the command line, so they cannot drift from it.
//! `cargo xtask dist` runs it and packages what it writes:
//!
//! ```text
//! DIR/man/man1/twtrace.1, twtrace-doctor.1, ...   one page per command (and per scenario)
//! DIR/completions/twtrace.bash                     bash-completion
//! DIR/completions/_twtrace                         zsh
//! DIR/completions/twtrace.fish                     fish
//! ```

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Where to write `man/man1/` and `completions/` (created if missing).
    #[arg(value_name = "DIR")]
    out: PathBuf,
}

/// Each page's EXIT STATUS section: doctor's own, scenario's, and everyone else's.
fn exit_status(name: &str) -> &'static str {
    match name {
        "twtrace-doctor" => {
            "0: nothing wrong (notes only). 1: a warning. 2: something failing now (critical). 3: doctor could \
             not run, usage errors included (an unknown option, a bad value)."
        }
        n if n.starts_with("twtrace-scenario") => {
            "0: the scenario ran and every check passed. 1: it could not run, or a check failed (its figures \
             are not to be trusted). 2: a usage error."
        }
        "twtrace-mark" => {
            "0: the recorder confirmed the mark is in the stream. 1: it is not (no recorder runs on the \
             directory, recording is stopped, or no answer within 10 s). 2: a usage error."
        }
        "twtrace" => {
            "0: success. 1: an error, named on the last line of stderr. 2: a usage error. doctor has its own \
             (twtrace-doctor(1)): 3 when it could not run, usage errors included."
        }
        _ => "0: success. 1: an error, named on the last line of stderr. 2: a usage error.",
    }
}

pub fn run(cmd: clap::Command, args: &GenerateArgs) -> anyhow::Result<()> {
    let man = args.out.join("man/man1");
    std::fs::create_dir_all(&man).with_context(|| man.display().to_string())?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    pages(&cmd, &man)?;
    let completions = args.out.join("completions");
    std::fs::create_dir_all(&completions).with_context(|| completions.display().to_string())?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "twtrace", &completions)?;
    }
    Ok(())
}

/// A page for `cmd` and for each of its visible subcommands, depth first.
fn pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, dir)?;
    }
    let page = clap_mangen::Man::new(cmd.clone())
        .manual("twtrace manual")
        .source(concat!("twtrace ", env!("CARGO_PKG_VERSION")));
    let path = dir.join(page.get_filename());
    // Man::render would add the help's exit statuses as an "EXTRA" section: EXIT STATUS
    // below says them instead.
    let mut out = Vec::new();
    page.render_title(&mut out)?;
    page.render_name_section(&mut out)?;
    page.render_synopsis_section(&mut out)?;
    page.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        page.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        page.render_subcommands_section(&mut out)?;
    }
    if cmd.get_version().is_some() {
        page.render_version_section(&mut out)?;
    }
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    out.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    out.extend_from_slice(roff_text(exit_status(name)).as_bytes());
    out.extend_from_slice(b".SH \"SEE ALSO\"\n");
    let see: Vec<String> = if name == "twtrace" {
        cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| format!("twtrace-{}(1)", s.get_name())).collect()
    } else {
        vec!["twtrace(1)".to_owned()]
    };
    out.extend_from_slice(roff_text(&see.join(", ")).as_bytes());
    let mut file = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
    file.write_all(&out).with_context(|| path.display().to_string())?;
    Ok(())
}

/// Text as a roff paragraph: backslashes escaped, no line starting with a control character.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e");
    let escaped = if escaped.starts_with(['.', '\'']) { format!("\\&{escaped}") } else { escaped };
    format!("{escaped}\n")
}
