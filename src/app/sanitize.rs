//! Making document text safe to put on a terminal.
//!
//! Notes are untrusted input as far as the terminal is concerned: a file (or a file name) can
//! carry escape sequences that retitle the window, clear the screen, hide the text that follows,
//! write to the clipboard, or reorder what is displayed with bidi overrides. Everything from a
//! document goes through [`sanitize`] before it reaches the terminal, in the TUI and in
//! `dochash query`'s human output alike.

/// How many spaces a tab becomes. Fixed rather than tab-stop based: the preview is a reading aid,
/// not an editor, and a fixed expansion keeps line widths predictable for wrapping.
pub const TAB_SPACES: usize = 4;

/// Returns `s` with everything removed that could make the terminal do something other than
/// print characters.
///
/// Removed:
/// - ANSI/VT escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or `… ESC \`), the
///   string commands DCS/SOS/PM/APC (`ESC P`, `ESC X`, `ESC ^`, `ESC _`, up to the string
///   terminator), charset designations (`ESC ( B`) and other two-character `ESC x` sequences;
/// - C1 controls U+0080–U+009F, including the 8-bit introducers (U+009B CSI, U+009D OSC, U+0090
///   DCS, …), whose sequences are removed whole;
/// - all other C0 controls and DEL, **including newline and carriage return**: the result is a
///   single line, safe anywhere a widget expects one. Where line structure matters (a file's
///   contents, a multi-line passage) split first, or use [`sanitize_lines`];
/// - bidi embedding/override/isolate characters (U+202A–U+202E, U+2066–U+2069), which could make
///   displayed text read differently from what is in the file.
///
/// Tabs become [`TAB_SPACES`] spaces. An unterminated sequence swallows the rest of the input:
/// showing its payload as text is not worth the risk of showing a partial command.
pub fn sanitize(s: &str) -> String {
    if !s.chars().any(needs_attention) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => skip_escape(&mut chars),
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' => skip_string(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\t' => out.extend(std::iter::repeat_n(' ', TAB_SPACES)),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Splits `s` into lines (`\n`, `\r\n`, or a lone `\r`, which old Mac files use) and sanitizes
/// each one. A trailing newline does not produce an empty last line, matching how editors number
/// lines, so index `i` is line `i + 1`.
pub fn sanitize_lines(s: &str) -> Vec<String> {
    let mut lines: Vec<String> = s
        .split('\n')
        .flat_map(|l| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            // A lone CR inside a line would, on a real terminal, return the cursor and let the
            // text after it overprint the text before it; treat it as a line break instead.
            l.split('\r')
        })
        .map(sanitize)
        .collect();
    if s.ends_with('\n') || s.is_empty() {
        lines.pop();
    }
    lines
}

fn needs_attention(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Called after an ESC: skips the rest of the sequence it introduces.
fn skip_escape(chars: &mut Chars<'_>) {
    let Some(&next) = chars.peek() else { return };
    match next {
        '[' => {
            chars.next();
            skip_csi(chars);
        }
        ']' => {
            chars.next();
            skip_string(chars);
        }
        'P' | 'X' | '^' | '_' => {
            chars.next();
            skip_string(chars);
        }
        // nF sequences: intermediates, then one final byte (e.g. `ESC ( B`, `ESC # 8`).
        '\x20'..='\x2f' => {
            while chars.next_if(|c| matches!(c, '\x20'..='\x2f')).is_some() {}
            chars.next_if(|c| matches!(c, '\x30'..='\x7e'));
        }
        // Two-character sequences: `ESC 7`, `ESC c` (full reset), `ESC M`, …
        '\x30'..='\x7e' => {
            chars.next();
        }
        // ESC followed by something that cannot continue a sequence: drop the ESC alone and let
        // the next character be judged on its own.
        _ => {}
    }
}

/// Skips a control sequence after its introducer: parameter bytes, intermediate bytes, then a
/// final byte. A character that cannot be part of a CSI ends it without being consumed, as a
/// terminal would abort the sequence there.
fn skip_csi(chars: &mut Chars<'_>) {
    while let Some(&c) = chars.peek() {
        match c {
            '\x20'..='\x3f' => {
                chars.next();
            }
            '\x40'..='\x7e' => {
                chars.next();
                return;
            }
            _ => return,
        }
    }
}

/// Skips a control string (OSC, DCS, SOS, PM, APC) up to and including its terminator: ST
/// (`ESC \` or U+009C), or BEL, which xterm accepts for OSC and which we accept everywhere, since
/// stopping early would print the rest of the payload.
fn skip_string(chars: &mut Chars<'_>) {
    while let Some(c) = chars.next() {
        match c {
            '\x07' | '\u{9c}' => return,
            '\x1b' => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        for s in [
            "",
            "hello",
            "naïve café — 日本語 🎉",
            "a › b",
            "100% [ok] ~/x",
        ] {
            assert_eq!(sanitize(s), s);
        }
    }

    #[test]
    fn csi_sequences_are_removed() {
        assert_eq!(sanitize("\x1b[31mred\x1b[0m"), "red");
        assert_eq!(sanitize("a\x1b[2Jb"), "ab", "clear screen");
        assert_eq!(sanitize("a\x1b[H\x1b[2J\x1b[3Jb"), "ab");
        assert_eq!(sanitize("\x1b[?1049h\x1b[?25l"), "", "private modes");
        assert_eq!(sanitize("x\x1b[38;2;255;0;0my"), "xy", "truecolour");
        assert_eq!(sanitize("x\x1b[1;5Hy"), "xy", "cursor move");
        assert_eq!(sanitize("x\x1b[ qy"), "xy", "intermediate byte");
    }

    #[test]
    fn text_hiding_is_removed() {
        // Conceal, invisible colours and cursor-back-and-erase would hide what follows.
        assert_eq!(
            sanitize("see \x1b[8mhidden\x1b[28m text"),
            "see hidden text"
        );
        assert_eq!(sanitize("a\x1b[30;40mb"), "ab");
        assert_eq!(sanitize("secret\x1b[6D\x1b[Kshown"), "secretshown");
        assert_eq!(sanitize("secret\rshown"), "secretshown");
        assert_eq!(sanitize("secret\x08\x08\x08"), "secret");
    }

    #[test]
    fn osc_sequences_are_removed() {
        assert_eq!(
            sanitize("a\x1b]0;pwned title\x07b"),
            "ab",
            "window title, BEL"
        );
        assert_eq!(sanitize("a\x1b]2;pwned\x1b\\b"), "ab", "window title, ST");
        assert_eq!(
            sanitize("a\x1b]52;c;ZXZpbA==\x07b"),
            "ab",
            "clipboard write"
        );
        assert_eq!(
            sanitize("\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\"),
            "click",
            "hyperlink"
        );
        assert_eq!(sanitize("a\x1b]0;never ends"), "a", "unterminated");
    }

    #[test]
    fn string_commands_are_removed() {
        assert_eq!(sanitize("a\x1bPq#0;2;0;0;0\x1b\\b"), "ab", "DCS sixel");
        assert_eq!(
            sanitize("a\x1b_Gf=100;AAAA\x1b\\b"),
            "ab",
            "APC kitty graphics"
        );
        assert_eq!(sanitize("a\x1b^privacy\x1b\\b"), "ab", "PM");
        assert_eq!(sanitize("a\x1bXsos\x1b\\b"), "ab", "SOS");
        assert_eq!(sanitize("a\u{90}dcs\u{9c}b"), "ab", "8-bit DCS and ST");
    }

    #[test]
    fn two_char_and_charset_sequences_are_removed() {
        assert_eq!(sanitize("a\x1bcb"), "ab", "full reset");
        assert_eq!(sanitize("a\x1b7\x1b8b"), "ab", "save/restore cursor");
        assert_eq!(
            sanitize("a\x1b(0lqk\x1b(Bb"),
            "alqkb",
            "line drawing charset"
        );
        assert_eq!(sanitize("a\x1b#8b"), "ab", "screen alignment test");
        assert_eq!(sanitize("a\x1b"), "a", "trailing ESC");
        assert_eq!(sanitize("a\x1b\x1b[1mb"), "ab", "double ESC");
    }

    #[test]
    fn c1_controls_are_removed() {
        assert_eq!(sanitize("a\u{9b}2Jb"), "ab", "8-bit CSI");
        assert_eq!(sanitize("a\u{9b}31mred"), "ared");
        assert_eq!(sanitize("a\u{9d}0;title\u{7}b"), "ab", "8-bit OSC");
        assert_eq!(sanitize("a\u{85}b\u{80}c\u{9f}"), "abc");
        for c in '\u{80}'..='\u{9f}' {
            assert!(!sanitize(&format!("x{c}y")).contains(c), "{:?}", c);
        }
    }

    #[test]
    fn c0_controls_and_del_are_dropped_tabs_expand() {
        assert_eq!(sanitize("a\tb"), "a    b");
        assert_eq!(sanitize("\t"), "    ");
        assert_eq!(sanitize("a\x07b\x00c\x7fd\x0ee\x0ff"), "abcdef");
        assert_eq!(sanitize("line one\nline two"), "line oneline two");
        for c in (0u8..0x20).chain([0x7f]).map(char::from) {
            let out = sanitize(&format!("x{c}y"));
            assert!(out.chars().all(|c| !c.is_control()), "{c:?} -> {out:?}");
        }
    }

    #[test]
    fn bidi_overrides_are_dropped() {
        // The classic "Trojan Source" trick: RLO makes `txt.exe` display as `exe.txt`.
        assert_eq!(sanitize("invoice\u{202e}txt.exe"), "invoicetxt.exe");
        for c in ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}'] {
            assert_eq!(sanitize(&format!("a{c}b")), "ab");
        }
        for c in ['\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'] {
            assert_eq!(sanitize(&format!("a{c}b")), "ab");
        }
        // Ordinary right-to-left text stays.
        assert_eq!(sanitize("שלום abc"), "שלום abc");
    }

    #[test]
    fn hostile_file_is_rendered_harmless() {
        let file = "# Notes\n\x1b]0;HACKED\x07\x1b[2J\x1b[Hvisible \x1b[8minvisible\x1b[0m\n\
                    \u{9b}?25lcursor gone\ttab\r\nend\n";
        let lines = sanitize_lines(file);
        assert_eq!(
            lines,
            ["# Notes", "visible invisible", "cursor gone    tab", "end"]
        );
        for l in &lines {
            assert!(l.chars().all(|c| !c.is_control() && c != '\u{1b}'));
        }
    }

    #[test]
    fn sanitize_lines_keeps_line_numbers() {
        assert_eq!(sanitize_lines(""), Vec::<String>::new());
        assert_eq!(sanitize_lines("a"), ["a"]);
        assert_eq!(sanitize_lines("a\n"), ["a"]);
        assert_eq!(sanitize_lines("a\n\nb"), ["a", "", "b"]);
        assert_eq!(sanitize_lines("a\r\nb\r\n"), ["a", "b"]);
        assert_eq!(sanitize_lines("a\rb"), ["a", "b"]);
        assert_eq!(sanitize_lines("\n"), [""]);
    }
}
