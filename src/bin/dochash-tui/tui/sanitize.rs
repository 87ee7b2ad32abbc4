//! Terminal-safe text for the UI: the sanitiser itself is shared with `dochash query` and lives
//! in the library; what is left here is how wide sanitised text is on screen.

use ratatui::text::Span;

pub use dochash::app::sanitize::{sanitize, sanitize_lines};

/// Display width of `s` in terminal columns (as ratatui will lay it out).
pub fn str_width(s: &str) -> usize {
    Span::raw(s).width()
}

/// Display width of one character in terminal columns.
pub fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    Span::raw(&*c.encode_utf8(&mut buf)).width()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths() {
        assert_eq!(str_width("abc"), 3);
        assert_eq!(str_width("日本"), 4);
        assert_eq!(char_width('日'), 2);
        assert_eq!(char_width('a'), 1);
    }
}
