//! The guest protocol: the marker lines a guest prints on its serial console and the records a
//! test writes when it skips. This file is the one definition of both. xtask uses it directly;
//! the integration tests include it (`twtrace/tests/support/mod.rs`, by `#[path]`), and the
//! guest's shell scripts get the markers as variables from a file xtask writes out of
//! [`shell_definitions`], so no marker is spelled anywhere else.
//!
//! Plain std only: it is compiled into the test binaries too.

/// `TWTRACE-VM-BOOTED <uname -r> | <uname -v>`: the guest's init ran on this exact kernel build.
pub const BOOTED: &str = "TWTRACE-VM-BOOTED";
/// `TWTRACE-VM-EXIT <status>`: ends every guest run that did not crash.
pub const EXIT: &str = "TWTRACE-VM-EXIT";
/// `TWTRACE-RESULT binary=<test binary> backend=<b> rc=<status> passed=<n> secs=<wall time>`:
/// one test binary ran once under one forced backend.
pub const RESULT: &str = "TWTRACE-RESULT";
/// `TWTRACE-SKIP binary=<test binary> <skip record>`: a test of that binary did not run.
pub const SKIP: &str = "TWTRACE-SKIP";

/// `TWTRACE-FILE <name>`, then the file's lines, then [`FILE_END`]: a guest hands a file back
/// over the console (text as is, binary as base64). `cargo xtask study` collects them.
pub const FILE: &str = "TWTRACE-FILE";
pub const FILE_END: &str = "TWTRACE-FILE-END";

/// Where a test writes its [`Skip`] records (one a line), if the runner set it: the VM guest
/// script and `cargo xtask test` both do, and count them.
pub const SKIP_LOG_ENV: &str = "TWTRACE_TEST_SKIP_LOG";
/// Set (to anything non-empty) to run the integration tests without root: each then skips,
/// saying so, instead of failing. Documented in docs/development.md.
pub const UNPRIVILEGED_ENV: &str = "TWTRACE_TEST_UNPRIVILEGED";
/// The backend the VM matrix forces on every test (`fentry`, `kprobe`, `tracepoint`).
pub const BACKEND_ENV: &str = "TWTRACE_TEST_BACKEND";
/// Set when the kernel under test has no BTF and the matrix's table says so: BTF-dependent
/// tests then skip with this value as their reason; without it they fail.
pub const NO_BTF_ENV: &str = "TWTRACE_TEST_NO_BTF";

/// Shell assignments of the markers, for the guest's scripts (`. /etc/twtrace-protocol`).
pub fn shell_definitions() -> String {
    format!(
        "MARK_BOOTED='{BOOTED}'\nMARK_EXIT='{EXIT}'\nMARK_RESULT='{RESULT}'\nMARK_SKIP='{SKIP}'\n\
         MARK_FILE='{FILE}'\nMARK_FILE_END='{FILE_END}'\n\
         SKIP_LOG_ENV='{SKIP_LOG_ENV}'\nBACKEND_ENV='{BACKEND_ENV}'\n"
    )
}

/// One test that did not run, and why. Written by the test, read by the runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    /// The test function (libtest's name for it: the thread's name).
    pub test: String,
    /// The probe family (or feature) it needed.
    pub family: String,
    /// The forced backend, or `auto`.
    pub backend: String,
    /// Free text, last on the line.
    pub reason: String,
}

impl Skip {
    /// `test=<t> family=<f> backend=<b> reason=<free text>`: one line, the reason last.
    #[allow(dead_code, reason = "the writer is the integration tests' support, which includes this file")]
    pub fn to_line(&self) -> String {
        let one_line = |s: &str| s.replace(['\n', '\r'], " ");
        format!(
            "test={} family={} backend={} reason={}",
            one_line(&self.test).replace(' ', "_"),
            one_line(&self.family).replace(' ', "_"),
            one_line(&self.backend).replace(' ', "_"),
            one_line(&self.reason)
        )
    }

    /// Parses [`Self::to_line`]'s format, found anywhere in `line` (after a marker, say).
    pub fn parse(line: &str) -> Option<Self> {
        let start = line.find("test=")?;
        let (head, reason) = line[start..].split_once(" reason=")?;
        let word = |key: &str| {
            head.split_whitespace()
                .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                .map(str::to_owned)
        };
        Some(Self {
            test: word("test")?,
            family: word("family")?,
            backend: word("backend")?,
            reason: reason.to_owned(),
        })
    }
}

/// The value of `key=value` among `line`'s words.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}
