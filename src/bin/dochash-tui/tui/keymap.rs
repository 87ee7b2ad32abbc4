//! Every key the UI knows, in one table: the key handling looks keys up here, the help overlay
//! lists this table, and a test checks that the README's key table is this table, so the three
//! cannot drift apart.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Up,
    Down,
    PageUp,
    PageDown,
    Open,
    TogglePreview,
    Copy,
    ToggleFold,
    ToggleSort,
    Left,
    Right,
    WordLeft,
    WordRight,
    Home,
    End,
    Backspace,
    DeleteWordBack,
    Delete,
    Clear,
    KillToEnd,
    Redraw,
    ToggleHelp,
    /// `?`: the help when the query is empty, else the character.
    HelpWhenEmpty,
    Quit,
}

/// One key: its code, the modifiers it needs, and how people write it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
    pub label: &'static str,
}

const fn k(code: KeyCode, label: &'static str) -> Key {
    Key {
        code,
        mods: KeyModifiers::NONE,
        label,
    }
}

const fn ctrl(c: char, label: &'static str) -> Key {
    Key {
        code: KeyCode::Char(c),
        mods: KeyModifiers::CONTROL,
        label,
    }
}

const fn with(code: KeyCode, mods: KeyModifiers, label: &'static str) -> Key {
    Key { code, mods, label }
}

/// A row of the table: the keys, what they do, and the help text.
pub struct Binding {
    pub keys: &'static [Key],
    /// `None` for the row that only documents typing.
    pub command: Option<Command>,
    pub help: &'static str,
}

pub const KEYMAP: &[Binding] = &[
    Binding {
        keys: &[],
        command: None,
        help: "edits the query; the search runs as you type",
    },
    Binding {
        keys: &[k(KeyCode::Up, "↑"), ctrl('p', "Ctrl-p")],
        command: Some(Command::Up),
        help: "select the result above",
    },
    Binding {
        keys: &[k(KeyCode::Down, "↓"), ctrl('n', "Ctrl-n")],
        command: Some(Command::Down),
        help: "select the result below",
    },
    Binding {
        keys: &[k(KeyCode::PageUp, "PgUp")],
        command: Some(Command::PageUp),
        help: "up a page",
    },
    Binding {
        keys: &[k(KeyCode::PageDown, "PgDn")],
        command: Some(Command::PageDown),
        help: "down a page",
    },
    Binding {
        keys: &[k(KeyCode::Enter, "Enter")],
        command: Some(Command::Open),
        help: "open the file in $VISUAL/$EDITOR at the matched lines (--editor overrides)",
    },
    Binding {
        keys: &[k(KeyCode::Tab, "Tab"), k(KeyCode::BackTab, "Shift-Tab")],
        command: Some(Command::TogglePreview),
        help: "show or hide the preview (the passage in its file, query words marked)",
    },
    Binding {
        keys: &[ctrl('y', "Ctrl-y")],
        command: Some(Command::Copy),
        help: "copy the path to the clipboard (OSC 52, works over SSH and in tmux)",
    },
    Binding {
        keys: &[ctrl('g', "Ctrl-g")],
        command: Some(Command::ToggleFold),
        help: "unfold or fold places (neighbouring passages of a file are one result)",
    },
    Binding {
        keys: &[ctrl('t', "Ctrl-t")],
        command: Some(Command::ToggleSort),
        help: "sort the results by score or newest first",
    },
    Binding {
        keys: &[k(KeyCode::Left, "←"), ctrl('b', "Ctrl-b")],
        command: Some(Command::Left),
        help: "cursor left in the query",
    },
    Binding {
        keys: &[k(KeyCode::Right, "→"), ctrl('f', "Ctrl-f")],
        command: Some(Command::Right),
        help: "cursor right in the query",
    },
    Binding {
        keys: &[
            with(KeyCode::Left, KeyModifiers::CONTROL, "Ctrl-←"),
            with(KeyCode::Char('b'), KeyModifiers::ALT, "Alt-b"),
        ],
        command: Some(Command::WordLeft),
        help: "a word left",
    },
    Binding {
        keys: &[
            with(KeyCode::Right, KeyModifiers::CONTROL, "Ctrl-→"),
            with(KeyCode::Char('f'), KeyModifiers::ALT, "Alt-f"),
        ],
        command: Some(Command::WordRight),
        help: "a word right",
    },
    Binding {
        keys: &[k(KeyCode::Home, "Home"), ctrl('a', "Ctrl-a")],
        command: Some(Command::Home),
        help: "start of the query",
    },
    Binding {
        keys: &[k(KeyCode::End, "End"), ctrl('e', "Ctrl-e")],
        command: Some(Command::End),
        help: "end of the query",
    },
    Binding {
        keys: &[k(KeyCode::Backspace, "Backspace"), ctrl('h', "Ctrl-h")],
        command: Some(Command::Backspace),
        help: "delete the character before the cursor",
    },
    Binding {
        keys: &[
            ctrl('w', "Ctrl-w"),
            with(KeyCode::Backspace, KeyModifiers::CONTROL, "Ctrl-Backspace"),
            with(KeyCode::Backspace, KeyModifiers::ALT, "Alt-Backspace"),
        ],
        command: Some(Command::DeleteWordBack),
        help: "delete the word before the cursor",
    },
    Binding {
        keys: &[k(KeyCode::Delete, "Delete")],
        command: Some(Command::Delete),
        help: "delete the character under the cursor",
    },
    Binding {
        keys: &[ctrl('u', "Ctrl-u")],
        command: Some(Command::Clear),
        help: "clear the query",
    },
    Binding {
        keys: &[ctrl('k', "Ctrl-k")],
        command: Some(Command::KillToEnd),
        help: "delete to the end of the query",
    },
    Binding {
        keys: &[ctrl('l', "Ctrl-l")],
        command: Some(Command::Redraw),
        help: "redraw the screen",
    },
    Binding {
        keys: &[k(KeyCode::F(1), "F1")],
        command: Some(Command::ToggleHelp),
        help: "this help, any time",
    },
    Binding {
        keys: &[k(KeyCode::Char('?'), "?")],
        command: Some(Command::HelpWhenEmpty),
        help: "this help, when the query is empty (otherwise ? is typed)",
    },
    Binding {
        keys: &[k(KeyCode::Esc, "Esc"), ctrl('c', "Ctrl-c")],
        command: Some(Command::Quit),
        help: "quit (Esc closes the help first)",
    },
];

fn matches(key: &Key, ev: &KeyEvent) -> bool {
    // Shift is part of the character itself (`?`, `A`), and terminals differ in whether they
    // report it; Control and Alt must match exactly.
    let significant = KeyModifiers::CONTROL | KeyModifiers::ALT;
    if ev.modifiers & significant != key.mods & significant {
        return false;
    }
    match (key.code, ev.code) {
        (KeyCode::Char(a), KeyCode::Char(b)) => a.eq_ignore_ascii_case(&b),
        (a, b) => a == b,
    }
}

/// The command a key press means, if any.
pub fn lookup(ev: &KeyEvent) -> Option<Command> {
    KEYMAP
        .iter()
        .find(|b| b.keys.iter().any(|k| matches(k, ev)))
        .and_then(|b| b.command)
}

/// The keys column of a row, as people read it.
pub fn keys_label(b: &Binding) -> String {
    if b.keys.is_empty() {
        return "typing".into();
    }
    b.keys
        .iter()
        .map(|k| k.label)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table as Markdown, the way the README shows it.
#[cfg(test)]
pub fn markdown_table() -> String {
    let mut out = String::from("| key | action |\n|---|---|\n");
    for b in KEYMAP {
        out.push_str(&format!("| {} | {} |\n", keys_label(b), b.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_this_table() {
        let readme = include_str!("../../../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's key table differs from the keymap; it should read:\n{table}"
        );
    }

    #[test]
    fn keys_map_to_commands_and_no_key_is_bound_twice() {
        let ev = |code, mods| KeyEvent::new(code, mods);
        assert_eq!(
            lookup(&ev(KeyCode::Char('P'), KeyModifiers::CONTROL)),
            Some(Command::Up)
        );
        assert_eq!(
            lookup(&ev(KeyCode::Left, KeyModifiers::CONTROL)),
            Some(Command::WordLeft)
        );
        assert_eq!(
            lookup(&ev(KeyCode::Left, KeyModifiers::NONE)),
            Some(Command::Left)
        );
        assert_eq!(
            lookup(&ev(KeyCode::Char('?'), KeyModifiers::SHIFT)),
            Some(Command::HelpWhenEmpty)
        );
        assert_eq!(lookup(&ev(KeyCode::Char('x'), KeyModifiers::NONE)), None);
        let all: Vec<&Key> = KEYMAP.iter().flat_map(|b| b.keys.iter()).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                let ev = KeyEvent::new(b.code, b.mods);
                assert!(
                    !matches(a, &ev),
                    "{} and {} are the same key",
                    a.label,
                    b.label
                );
            }
        }
    }
}
