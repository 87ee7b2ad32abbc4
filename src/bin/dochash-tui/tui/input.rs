//! The one-line query editor.
//!
//! Kept separate from the rest of the state so its boundary cases (multi-byte characters, the
//! cursor at either end) can be tested on their own. The cursor is a byte offset that always
//! sits on a character boundary, which every method maintains.

/// Text being typed plus a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryInput {
    text: String,
    cursor: usize,
}

impl QueryInput {
    /// An input holding `text` with the cursor at its end.
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            cursor: text.len(),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Byte offset of the cursor in [`Self::text`].
    #[cfg(test)]
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// The text before the cursor, for placing the terminal cursor by display width.
    pub fn before_cursor(&self) -> &str {
        &self.text[..self.cursor]
    }

    pub fn insert_char(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    pub fn insert_str(&mut self, s: &str) {
        self.text.insert_str(self.cursor, s);
        self.cursor += s.len();
    }

    /// Deletes the character before the cursor. Returns whether the text changed.
    pub fn backspace(&mut self) -> bool {
        match self.prev_boundary() {
            Some(prev) => {
                self.text.replace_range(prev..self.cursor, "");
                self.cursor = prev;
                true
            }
            None => false,
        }
    }

    /// Deletes the character under the cursor. Returns whether the text changed.
    pub fn delete(&mut self) -> bool {
        match self.next_boundary() {
            Some(next) => {
                self.text.replace_range(self.cursor..next, "");
                true
            }
            None => false,
        }
    }

    pub fn left(&mut self) {
        if let Some(prev) = self.prev_boundary() {
            self.cursor = prev;
        }
    }

    pub fn right(&mut self) {
        if let Some(next) = self.next_boundary() {
            self.cursor = next;
        }
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Empties the input (Ctrl-u). Returns whether the text changed.
    pub fn clear(&mut self) -> bool {
        let changed = !self.text.is_empty();
        self.text.clear();
        self.cursor = 0;
        changed
    }

    /// Deletes from the cursor to the end (Ctrl-k). Returns whether the text changed.
    pub fn kill_to_end(&mut self) -> bool {
        let changed = self.cursor < self.text.len();
        self.text.truncate(self.cursor);
        changed
    }

    /// Deletes the word before the cursor the way readline's Ctrl-w does: any whitespace just
    /// before the cursor, then the run of non-whitespace before that. Returns whether the text
    /// changed.
    pub fn delete_word_back(&mut self) -> bool {
        let start = self.word_start_before();
        if start == self.cursor {
            return false;
        }
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
        true
    }

    /// Moves to the start of the previous word (Ctrl-Left / Alt-b).
    pub fn word_left(&mut self) {
        self.cursor = self.word_start_before();
    }

    /// Moves past the end of the next word (Ctrl-Right / Alt-f).
    pub fn word_right(&mut self) {
        let rest = &self.text[self.cursor..];
        let skip_ws = rest.len() - rest.trim_start().len();
        let after_ws = &rest[skip_ws..];
        let word = after_ws.find(char::is_whitespace).unwrap_or(after_ws.len());
        self.cursor += skip_ws + word;
    }

    fn word_start_before(&self) -> usize {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        trimmed
            .rfind(char::is_whitespace)
            .map(|i| i + trimmed[i..].chars().next().map_or(1, char::len_utf8))
            .unwrap_or(0)
    }

    fn prev_boundary(&self) -> Option<usize> {
        self.text[..self.cursor]
            .char_indices()
            .next_back()
            .map(|(i, _)| i)
    }

    fn next_boundary(&self) -> Option<usize> {
        self.text[self.cursor..]
            .chars()
            .next()
            .map(|c| self.cursor + c.len_utf8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_and_cursor_moves() {
        let mut q = QueryInput::default();
        for c in "héllo".chars() {
            q.insert_char(c);
        }
        assert_eq!(q.text(), "héllo");
        assert_eq!(q.cursor(), q.text().len());
        q.left();
        q.left();
        q.left();
        q.left();
        assert_eq!(q.before_cursor(), "h");
        q.insert_char('X');
        assert_eq!(q.text(), "hXéllo");
        q.right();
        assert_eq!(q.before_cursor(), "hXé");
        q.home();
        assert_eq!(q.cursor(), 0);
        q.left();
        assert_eq!(q.cursor(), 0, "left at start stays");
        q.end();
        q.right();
        assert_eq!(q.cursor(), q.text().len(), "right at end stays");
    }

    #[test]
    fn backspace_and_delete() {
        let mut q = QueryInput::new("a日b");
        assert!(q.backspace());
        assert_eq!(q.text(), "a日");
        assert!(q.backspace());
        assert_eq!(q.text(), "a");
        assert!(!q.delete(), "delete at end does nothing");
        q.home();
        assert!(!q.backspace(), "backspace at start does nothing");
        assert!(q.delete());
        assert_eq!(q.text(), "");
        assert!(!q.delete());
    }

    #[test]
    fn clear_and_kill() {
        let mut q = QueryInput::new("hello world");
        q.word_left();
        assert!(q.kill_to_end());
        assert_eq!(q.text(), "hello ");
        assert!(!q.kill_to_end());
        assert!(q.clear());
        assert_eq!((q.text(), q.cursor()), ("", 0));
        assert!(!q.clear());
    }

    #[test]
    fn delete_word_back_like_readline() {
        let mut q = QueryInput::new("rust  async  ");
        assert!(q.delete_word_back());
        assert_eq!(q.text(), "rust  ");
        assert!(q.delete_word_back());
        assert_eq!(q.text(), "");
        assert!(!q.delete_word_back());

        let mut q = QueryInput::new("foo-bar baz");
        q.word_left();
        assert_eq!(q.before_cursor(), "foo-bar ");
        assert!(q.delete_word_back());
        assert_eq!(q.text(), "baz");
        assert_eq!(q.cursor(), 0);

        let mut q = QueryInput::new("a\u{3000}日本");
        assert!(q.delete_word_back());
        assert_eq!(q.text(), "a\u{3000}", "multi-byte whitespace boundary");
    }

    #[test]
    fn word_moves() {
        let mut q = QueryInput::new("one two  three");
        q.home();
        q.word_right();
        assert_eq!(q.before_cursor(), "one");
        q.word_right();
        assert_eq!(q.before_cursor(), "one two");
        q.word_right();
        assert_eq!(q.before_cursor(), "one two  three");
        q.word_right();
        assert_eq!(q.cursor(), q.text().len());
        q.word_left();
        assert_eq!(q.before_cursor(), "one two  ");
    }

    #[test]
    fn insert_str_at_cursor() {
        let mut q = QueryInput::new("ad");
        q.left();
        q.insert_str("bc");
        assert_eq!(q.text(), "abcd");
        assert_eq!(q.before_cursor(), "abc");
    }
}
