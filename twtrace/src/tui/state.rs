//! The TUI's own state, kept apart from drawing and from I/O: what keys do, as pure functions.

use crate::filter::{Cidr, Filter};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    Remote,
    Local,
    /// A process (`comm[pid]`).
    Owner,
    /// A command, all its processes together (a service's workers are one row).
    Command,
    /// A network namespace (container, pod).
    Namespace,
}

impl GroupBy {
    pub fn next(self) -> Self {
        match self {
            Self::Remote => Self::Local,
            Self::Local => Self::Owner,
            Self::Owner => Self::Command,
            Self::Command => Self::Namespace,
            Self::Namespace => Self::Remote,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Remote => "remote",
            Self::Local => "local",
            Self::Owner => "owner",
            Self::Command => "command",
            Self::Namespace => "namespace",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Utilisation,
    Failures,
    Connects,
}

impl SortBy {
    pub fn next(self) -> Self {
        match self {
            Self::Utilisation => Self::Failures,
            Self::Failures => Self::Connects,
            Self::Connects => Self::Utilisation,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Utilisation => "util",
            Self::Failures => "fails",
            Self::Connects => "conn/s",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    /// Typing a filter; the text so far.
    Filter(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct UiState {
    pub mode: Mode,
    pub group_by: GroupBy,
    pub sort_by: SortBy,
    /// Frozen: the view stops changing (events are still counted).
    pub paused: bool,
    /// The findings pane (what `doctor` would say, live) in place of the PAWS panel.
    pub findings: bool,
    /// The filter in force, as typed, and a message about the last attempt.
    pub filter_text: String,
    pub message: Option<String>,
}

impl Default for UiState {
    fn default() -> Self {
        Self {
            mode: Mode::Normal,
            group_by: GroupBy::Remote,
            sort_by: SortBy::Utilisation,
            paused: false,
            findings: false,
            filter_text: String::new(),
            message: None,
        }
    }
}

/// Keys, independent of the terminal library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    CtrlC,
}

/// What the loop must do after a key.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// Apply a new filter (the aggregator restarts from the current sockets).
    SetFilter(Filter),
}

impl UiState {
    pub fn on_key(&mut self, key: Key) -> Action {
        if key == Key::CtrlC {
            return Action::Quit;
        }
        match &mut self.mode {
            Mode::Filter(text) => match key {
                Key::Esc => self.mode = Mode::Normal,
                Key::Backspace => {
                    text.pop();
                }
                Key::Char(c) => text.push(c),
                Key::Enter => {
                    let text = std::mem::take(text);
                    self.mode = Mode::Normal;
                    match parse_filter(&text) {
                        Ok(filter) => {
                            self.message = Some(if text.trim().is_empty() {
                                "filter cleared".into()
                            } else {
                                format!("filter: {}", text.trim())
                            });
                            self.filter_text = text.trim().to_owned();
                            return Action::SetFilter(filter);
                        }
                        Err(e) => self.message = Some(e),
                    }
                }
                Key::CtrlC => return Action::Quit,
            },
            Mode::Help => self.mode = Mode::Normal,
            Mode::Normal => match key {
                Key::Char('q') | Key::Esc => return Action::Quit,
                Key::Char('?') | Key::Char('h') => self.mode = Mode::Help,
                Key::Char('p') | Key::Char(' ') => self.paused = !self.paused,
                Key::Char('g') => self.group_by = self.group_by.next(),
                Key::Char('s') => self.sort_by = self.sort_by.next(),
                // `f` was a second filter key until the findings pane took it; `/` is the filter.
                Key::Char('f') => self.findings = !self.findings,
                Key::Char('/') => self.mode = Mode::Filter(self.filter_text.clone()),
                _ => {}
            },
        }
        Action::None
    }
}

/// `pid=123 port=80 addr=10.0.0.0/8 comm=nginx netns=4026531840` (or `netns=NAME`), space separated; empty
/// clears. Each key may repeat (alternatives); different keys must all hold.
pub fn parse_filter(text: &str) -> Result<Filter, String> {
    let mut f = Filter::default();
    for word in text.split_whitespace() {
        let (key, value) = word.split_once('=').ok_or_else(|| format!("`{word}`: expected key=value"))?;
        let bad = |what: &str| format!("`{word}`: {what}");
        match key {
            "pid" => f.pids.push(value.parse().map_err(|_| bad("not a pid"))?),
            "port" => f.ports.push(value.parse().map_err(|_| bad("not a port"))?),
            "addr" => f.addrs.push(value.parse::<Cidr>().map_err(|e| bad(&e))?),
            "comm" => f.comms.push(value.to_owned()),
            // An inode, or a name as the views show it.
            "netns" => match value.parse() {
                Ok(inode) => f.netns.push(inode),
                Err(_) => f.netns_names.push(value.to_owned()),
            },
            "cgroup" => f.cgroups.push(value.parse().map_err(|_| bad("not a cgroup id"))?),
            _ => return Err(format!("`{key}`: filter keys are pid, port, addr, comm, netns, cgroup")),
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_toggle_and_cycle() {
        let mut s = UiState::default();
        assert_eq!(s.on_key(Key::Char('p')), Action::None);
        assert!(s.paused);
        s.on_key(Key::Char('g'));
        s.on_key(Key::Char('g'));
        assert_eq!(s.group_by, GroupBy::Owner);
        s.on_key(Key::Char('s'));
        assert_eq!(s.sort_by, SortBy::Failures);
        s.on_key(Key::Char('f'));
        assert!(s.findings && s.mode == Mode::Normal, "f shows the findings pane");
        s.on_key(Key::Char('f'));
        assert!(!s.findings);
        s.on_key(Key::Char('?'));
        assert_eq!(s.mode, Mode::Help);
        s.on_key(Key::Char('x'));
        assert_eq!(s.mode, Mode::Normal, "any key leaves help");
        assert_eq!(s.on_key(Key::Char('q')), Action::Quit);
        assert_eq!(s.on_key(Key::CtrlC), Action::Quit);
    }

    #[test]
    fn typing_a_filter() {
        let mut s = UiState::default();
        s.on_key(Key::Char('/'));
        for c in "pid=42 port=8x".chars() {
            s.on_key(Key::Char(c));
        }
        s.on_key(Key::Backspace);
        s.on_key(Key::Char('0'));
        let Action::SetFilter(f) = s.on_key(Key::Enter) else { panic!("{s:?}") };
        assert_eq!((f.pids.as_slice(), f.ports.as_slice()), (&[42][..], &[80][..]));
        assert_eq!(s.filter_text, "pid=42 port=80");
        // A bad filter keeps the old one and says why; q inside the input is just a letter.
        s.on_key(Key::Char('/'));
        s.on_key(Key::Char('q'));
        assert_eq!(s.mode, Mode::Filter("pid=42 port=80q".into()));
        assert_eq!(s.on_key(Key::Enter), Action::None);
        assert!(s.message.as_deref().unwrap().contains("not a port"), "{:?}", s.message);
        assert_eq!(s.filter_text, "pid=42 port=80");
    }

    #[test]
    fn filter_syntax() {
        assert!(parse_filter("").unwrap().is_empty());
        let f = parse_filter("addr=10.0.0.0/8 comm=nginx comm=curl netns=7").unwrap();
        assert_eq!(f.comms, ["nginx", "curl"]);
        assert_eq!(f.netns, [7]);
        assert_eq!(parse_filter("netns=pod-a").unwrap().netns_names, ["pod-a"]);
        assert!(parse_filter("pid").is_err());
        assert!(parse_filter("colour=red").unwrap_err().contains("filter keys"));
    }
}
