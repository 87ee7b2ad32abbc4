//! Building the command that opens a file at a line in the user's editor.
//!
//! Editors disagree on how to say "at line N", so the invocation depends on which family the
//! program belongs to. The command itself is taken from the environment the way git and most
//! Unix tools do it, and split like a shell would so `EDITOR="code --wait"` works.

use std::ffi::OsString;
use std::path::Path;

/// The editor command to use: the explicit override, then `$VISUAL`, then `$EDITOR`, then `vi`.
/// Empty or blank values are skipped, as if unset: `EDITOR=` in a shell profile is common and
/// means "no preference", not "run the empty program".
pub fn resolve_editor(
    override_cmd: Option<&str>,
    visual: Option<&str>,
    editor: Option<&str>,
) -> String {
    [override_cmd, visual, editor]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .unwrap_or("vi")
        .to_owned()
}

/// [`resolve_editor`] with the values of `$VISUAL` and `$EDITOR`.
pub fn editor_from_env(override_cmd: Option<&str>) -> String {
    let visual = std::env::var("VISUAL").ok();
    let editor = std::env::var("EDITOR").ok();
    resolve_editor(override_cmd, visual.as_deref(), editor.as_deref())
}

/// Splits a command line into words like a POSIX shell would for a simple command: whitespace
/// separates words, single quotes are literal, double quotes allow `\"`, `\\`, `\$` and `` \` ``
/// escapes, and a backslash outside quotes escapes the next character. No expansion of any kind
/// is performed: the editor setting is data, never code to run through a shell.
pub fn split_words(cmd: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated single quote in {cmd:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated double quote in {cmd:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated double quote in {cmd:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err(format!("trailing backslash in {cmd:?}")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// How an editor wants to be told the line to open at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditorFamily {
    /// `editor +LINE PATH`: vi, vim, nvim, nano, emacs, micro, kak, hx/helix, and the fallback
    /// for editors we do not know, since `+LINE` is the oldest and most widely copied convention.
    PlusLine,
    /// `code -g PATH:LINE`: VS Code and its forks.
    VsCode,
    /// `subl PATH:LINE`: Sublime Text.
    Sublime,
}

/// Classifies a program by its file name, ignoring the directory and a Windows `.exe`.
pub fn editor_family(program: &str) -> EditorFamily {
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    let name = name
        .strip_suffix(".exe")
        .or_else(|| name.strip_suffix(".cmd"))
        .unwrap_or(name);
    match name {
        "code" | "code-insiders" | "codium" | "vscodium" | "code-oss" | "cursor" | "windsurf" => {
            EditorFamily::VsCode
        }
        "subl" | "sublime_text" => EditorFamily::Sublime,
        _ => EditorFamily::PlusLine,
    }
}

/// The program and arguments that open `path` at `line` (1-based; 0 is treated as 1) with the
/// editor command `cmd`. Arguments are `OsString`s so that paths which are not UTF-8 still open.
pub fn editor_invocation(
    cmd: &str,
    path: &Path,
    line: u32,
) -> Result<(OsString, Vec<OsString>), String> {
    let mut words = split_words(cmd)?.into_iter();
    let program = words
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| format!("editor command {cmd:?} is empty"))?;
    let mut args: Vec<OsString> = words.map(OsString::from).collect();
    let line = line.max(1);
    let path_at_line = || {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(":{line}"));
        s
    };
    match editor_family(&program) {
        EditorFamily::PlusLine => {
            args.push(format!("+{line}").into());
            args.push(path.as_os_str().to_owned());
        }
        EditorFamily::VsCode => {
            args.push("-g".into());
            args.push(path_at_line());
        }
        EditorFamily::Sublime => args.push(path_at_line()),
    }
    Ok((program.into(), args))
}

/// The PDF viewer command: the explicit override, then `$DOCHASH_PDF_VIEWER`, then the
/// system's opener (which cannot be told a page).
pub fn viewer_from_env(override_cmd: Option<&str>) -> String {
    let env = std::env::var("DOCHASH_PDF_VIEWER").ok();
    [override_cmd, env.as_deref()]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .unwrap_or(SYSTEM_OPENER)
        .to_owned()
}

/// What opens a file with the program the desktop chose for its type (an office document, an
/// e-book, a PDF when no viewer is named).
pub const SYSTEM_OPENER: &str = if cfg!(target_os = "macos") {
    "open"
} else if cfg!(windows) {
    "explorer"
} else {
    "xdg-open"
};

/// The program and arguments that show `path` at `page` with the viewer command `cmd`. A
/// command with `{file}` (and `{page}`) in it is taken as a template; otherwise viewers that
/// take a page are told it in their own way, and any other gets the file alone.
pub fn viewer_invocation(
    cmd: &str,
    path: &Path,
    page: u32,
) -> Result<(OsString, Vec<OsString>), String> {
    let words = split_words(cmd)?;
    let page = page.max(1);
    let (program, rest) = words
        .split_first()
        .filter(|(p, _)| !p.is_empty())
        .ok_or_else(|| format!("viewer command {cmd:?} is empty"))?;
    let mut args: Vec<OsString> = Vec::new();
    if rest.iter().any(|w| w.contains("{file}")) {
        for w in rest {
            let w = w.replace("{page}", &page.to_string());
            match w.split_once("{file}") {
                Some((before, after)) => {
                    let mut a = OsString::from(before);
                    a.push(path.as_os_str());
                    a.push(after);
                    args.push(a);
                }
                None => args.push(w.into()),
            }
        }
        return Ok((program.into(), args));
    }
    args.extend(rest.iter().map(OsString::from));
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    let name = name.strip_suffix(".exe").unwrap_or(name);
    let file = path.as_os_str().to_owned();
    match name {
        "zathura" => args.extend([format!("--page={page}").into(), file]),
        "evince" | "atril" | "xreader" => {
            args.extend([format!("--page-index={page}").into(), file]);
        }
        "okular" => args.extend(["-p".into(), page.to_string().into(), file]),
        "sioyek" => args.extend(["--page".into(), page.to_string().into(), file]),
        "mupdf" | "mupdf-gl" | "mupdf-x11" => args.extend([file, page.to_string().into()]),
        "qpdfview" => {
            let mut at = file;
            at.push(format!("#{page}"));
            args.push(at);
        }
        _ => args.push(file),
    }
    Ok((program.into(), args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(cmd: &str) -> Vec<String> {
        let (program, args) = editor_invocation(cmd, Path::new("/n/a b.md"), 42).unwrap();
        std::iter::once(program)
            .chain(args)
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    fn viewer(cmd: &str) -> Vec<String> {
        let (program, args) = viewer_invocation(cmd, Path::new("/d/a b.pdf"), 12).unwrap();
        std::iter::once(program)
            .chain(args)
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn viewers_are_told_the_page_their_way() {
        assert_eq!(viewer("zathura"), ["zathura", "--page=12", "/d/a b.pdf"]);
        assert_eq!(
            viewer("evince"),
            ["evince", "--page-index=12", "/d/a b.pdf"]
        );
        assert_eq!(
            viewer("/usr/bin/okular"),
            ["/usr/bin/okular", "-p", "12", "/d/a b.pdf"]
        );
        assert_eq!(viewer("mupdf"), ["mupdf", "/d/a b.pdf", "12"]);
        assert_eq!(
            viewer("qpdfview --unique"),
            ["qpdfview", "--unique", "/d/a b.pdf#12"]
        );
        assert_eq!(viewer("xdg-open"), ["xdg-open", "/d/a b.pdf"]);
        assert_eq!(
            viewer("open -a Skim"),
            ["open", "-a", "Skim", "/d/a b.pdf"],
            "a viewer it does not know gets the file"
        );
        assert_eq!(
            viewer("myview --goto={page} 'file={file}'"),
            ["myview", "--goto=12", "file=/d/a b.pdf"]
        );
        assert!(viewer_invocation(" ", Path::new("/x"), 1).is_err());
    }

    #[test]
    fn plus_line_family() {
        for ed in [
            "vi", "vim", "nvim", "nano", "emacs", "micro", "kak", "hx", "helix",
        ] {
            assert_eq!(invocation(ed), [ed, "+42", "/n/a b.md"], "{ed}");
        }
        assert_eq!(
            invocation("/usr/local/bin/nvim"),
            ["/usr/local/bin/nvim", "+42", "/n/a b.md"]
        );
        assert_eq!(
            invocation("emacsclient -nw"),
            ["emacsclient", "-nw", "+42", "/n/a b.md"]
        );
        assert_eq!(invocation("myeditor"), ["myeditor", "+42", "/n/a b.md"]);
    }

    #[test]
    fn vscode_family() {
        assert_eq!(invocation("code"), ["code", "-g", "/n/a b.md:42"]);
        assert_eq!(
            invocation("code --wait"),
            ["code", "--wait", "-g", "/n/a b.md:42"]
        );
        assert_eq!(invocation("codium"), ["codium", "-g", "/n/a b.md:42"]);
        assert_eq!(
            editor_family("C:\\Program Files\\VS Code\\code.exe"),
            EditorFamily::PlusLine,
            "backslashes are not separators on Unix"
        );
        assert_eq!(editor_family("/opt/code.exe"), EditorFamily::VsCode);
    }

    #[test]
    fn sublime() {
        assert_eq!(invocation("subl"), ["subl", "/n/a b.md:42"]);
        assert_eq!(invocation("subl -w"), ["subl", "-w", "/n/a b.md:42"]);
    }

    #[test]
    fn line_zero_becomes_one() {
        let (_, args) = editor_invocation("vim", Path::new("/x"), 0).unwrap();
        assert_eq!(args[0], "+1");
    }

    #[test]
    fn quoted_program_paths() {
        assert_eq!(
            invocation("'/Applications/My Editor/bin/vim' -u NONE"),
            [
                "/Applications/My Editor/bin/vim",
                "-u",
                "NONE",
                "+42",
                "/n/a b.md"
            ]
        );
        assert_eq!(
            invocation(r#""/opt/Sublime Text/subl""#),
            ["/opt/Sublime Text/subl", "/n/a b.md:42"]
        );
    }

    #[test]
    fn word_splitting() {
        assert_eq!(split_words("").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("  a   b\tc ").unwrap(), ["a", "b", "c"]);
        assert_eq!(split_words("a 'b c' d").unwrap(), ["a", "b c", "d"]);
        assert_eq!(
            split_words(r#"a "b \"c\" \\ \n" d"#).unwrap(),
            ["a", r#"b "c" \ \n"#, "d"]
        );
        assert_eq!(split_words(r"a\ b c").unwrap(), ["a b", "c"]);
        assert_eq!(split_words("x''y \"\"").unwrap(), ["xy", ""]);
        assert_eq!(split_words("'$HOME' $HOME").unwrap(), ["$HOME", "$HOME"]);
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
        assert!(split_words("trailing\\").is_err());
    }

    #[test]
    fn empty_command_is_an_error() {
        assert!(editor_invocation("   ", Path::new("/x"), 1).is_err());
        assert!(editor_invocation("''", Path::new("/x"), 1).is_err());
    }

    #[test]
    fn resolution_order() {
        assert_eq!(resolve_editor(Some("a"), Some("b"), Some("c")), "a");
        assert_eq!(resolve_editor(None, Some("b"), Some("c")), "b");
        assert_eq!(resolve_editor(None, None, Some("c")), "c");
        assert_eq!(resolve_editor(None, None, None), "vi");
        assert_eq!(resolve_editor(Some(""), Some(" "), Some("c")), "c");
        assert_eq!(resolve_editor(None, Some(""), Some("")), "vi");
    }

    #[test]
    #[cfg(unix)]
    fn non_utf8_paths_survive() {
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(b"/n/\xff.md"));
        let (_, args) = editor_invocation("code", path, 3).unwrap();
        assert_eq!(args[1].as_bytes(), b"/n/\xff.md:3");
    }
}
