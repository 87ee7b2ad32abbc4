//! The visible text of an HTML page, on the lines it has in the source.
//!
//! A hit opens the file in an editor at a line, so the text keeps the source's line numbers
//! wherever the source allows it: markup is dropped, and since a newline in HTML text is only
//! white space, a newline may be spent on a block boundary the source wrote on one line and
//! saved again later. Pretty-printed pages (one block a line, as documentation generators write
//! them) come out line for line; a minified page drifts only until its next newline.
//!
//! What a reader does not see is left out: scripts, styles, templates, the head (but its
//! title), navigation and page furniture (`nav`, `footer`, `aside`, and ARIA roles that say
//! the same), and anything `hidden`. Headings become Markdown headings, so the trail and the
//! title field work as for notes; everything else becomes plain lines (see
//! [`super::plain_line`]).

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

/// Elements whose content is never shown as text (or only as furniture around the page).
const HIDDEN: [&str; 10] = [
    "script", "style", "noscript", "template", "nav", "footer", "aside", "svg", "math", "iframe",
];

/// Class names (and ids) that mark navigation: menus, breadcrumbs, sidebars, tables of
/// contents, which repeat on every page of a site and say nothing of this one.
const NAVIGATION_CLASSES: [&str; 9] = [
    "nav",
    "navbar",
    "navigation",
    "breadcrumb",
    "breadcrumbs",
    "sidebar",
    "menu",
    "toc",
    "skip-link",
];

/// ARIA roles of page furniture rather than content.
const FURNITURE_ROLES: [&str; 4] = ["navigation", "banner", "contentinfo", "search"];

/// Elements that start a new line where they open and close.
const BLOCKS: [&str; 34] = [
    "address",
    "article",
    "blockquote",
    "body",
    "br",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "form",
    "header",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "title",
    "tr",
    "ul",
];

/// Elements whose end tag may be left out (the next one of its kind, or its parent's end,
/// closes it): hidden only by what they are, never by a class or role, since an unclosed one
/// would hide the rest of the page.
const OPTIONAL_END: [&str; 12] = [
    "p", "li", "dt", "dd", "td", "th", "tr", "option", "thead", "tbody", "tfoot", "colgroup",
];

/// Elements that never have an end tag: an opening one must not count as entering them.
const VOID: [&str; 14] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
];

/// The visible text of `html`, with `#` headings, on the source's lines where it can be.
pub fn text(html: &str) -> String {
    let sink = Sink {
        out: RefCell::new(Out::default()),
    };
    let tok = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never asks for a script to run, so feeding ends only when the input does.
    let _ = tok.feed(&input);
    tok.end();
    tok.sink.out.into_inner().finish()
}

struct Sink {
    out: RefCell<Out>,
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, line: u64) -> TokenSinkResult<()> {
        let line = usize::try_from(line).unwrap_or(usize::MAX);
        let mut out = self.out.borrow_mut();
        match token {
            Token::TagToken(tag) => return out.tag(&tag, line),
            Token::CharacterTokens(t) => out.chars(&t, line),
            Token::CommentToken(_)
            | Token::DoctypeToken(_)
            | Token::NullCharacterToken
            | Token::EOFToken
            | Token::ParseError(_) => out.reach(line),
        }
        TokenSinkResult::Continue
    }
}

#[derive(Default)]
struct Out {
    text: String,
    /// Lines of `text` so far, 1-based: the line being written.
    line: usize,
    /// Hidden elements entered and not yet left, innermost last.
    hidden: Vec<String>,
    /// Inside `pre`: white space and newlines are kept as written.
    pre: usize,
    /// A heading is open: its level.
    heading: Option<usize>,
    /// The line being written has visible text (or a heading or list mark).
    filled: bool,
    /// Lines (1-based) that are headings, which must not be escaped as plain text.
    heading_lines: Vec<usize>,
    /// A space is owed before the next visible character.
    space: bool,
    /// Cells written on the current table row.
    cells: usize,
}

impl Out {
    /// Brings the output down to source line `line`, where markup that spanned lines put it.
    fn reach(&mut self, line: usize) {
        while self.line.max(1) < line {
            self.newline();
        }
    }

    fn newline(&mut self) {
        self.text.push('\n');
        self.line = self.line.max(1) + 1;
        self.filled = false;
        self.space = false;
    }

    /// Ends the line being written, if it has anything on it: a block boundary.
    fn boundary(&mut self) {
        if self.filled {
            self.newline();
        }
    }

    fn tag(&mut self, tag: &Tag, line: usize) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        let start = tag.kind == TagKind::StartTag;
        // The tag's newlines are behind it: it ends on `line`.
        if self.hidden.is_empty() {
            self.reach(line);
        }
        if !self.hidden.is_empty() {
            if !start && self.hidden.last().is_some_and(|h| h == name) {
                self.hidden.pop();
            } else if start && self.hidden.last().is_some_and(|h| h == name) && !tag.self_closing {
                self.hidden.push(name.to_owned());
            } else if !start && matches!(name, "body" | "html") {
                // An element left open must not hide the rest of the page.
                self.hidden.clear();
            }
            if self.hidden.is_empty() {
                self.reach(line);
            }
            return raw(name, start && !tag.self_closing);
        }
        if start && !tag.self_closing && !VOID.contains(&name) && hides(name, tag) {
            self.boundary();
            self.hidden.push(name.to_owned());
            return raw(name, start);
        }
        if let Some(level) = heading_level(name) {
            self.boundary();
            if start {
                self.heading = Some(level);
                self.heading_lines.push(self.line.max(1));
                self.text.push_str(&"#".repeat(level));
                self.text.push(' ');
                self.filled = true;
            } else {
                self.heading = None;
            }
            return TokenSinkResult::Continue;
        }
        match (name, start) {
            ("pre", true) => {
                self.boundary();
                self.pre += 1;
            }
            ("pre", false) => {
                self.pre = self.pre.saturating_sub(1);
                self.boundary();
            }
            ("li", true) => {
                self.boundary();
                self.text.push_str("- ");
                self.filled = true;
            }
            ("tr", _) => {
                self.boundary();
                self.cells = 0;
            }
            ("td" | "th", true) => {
                if self.cells > 0 && self.filled {
                    self.text.push_str(" | ");
                    self.space = false;
                }
                self.cells += 1;
            }
            ("title", true) => {
                // The page's title, where no heading says it: a first-level heading.
                self.boundary();
                self.heading = Some(1);
                self.heading_lines.push(self.line.max(1));
                self.text.push_str("# ");
                self.filled = true;
            }
            ("title", false) => {
                self.heading = None;
                self.boundary();
            }
            _ if BLOCKS.contains(&name) => self.boundary(),
            // Inline elements separate words only where the source has white space.
            _ => {}
        }
        // `<script/>` in XHTML (an e-book's chapter) is empty, not the start of a script.
        raw(name, start && !tag.self_closing)
    }

    fn chars(&mut self, t: &str, line: usize) {
        if !self.hidden.is_empty() {
            return;
        }
        // The text ends on `line`: it started that many lines up.
        let newlines = t.bytes().filter(|&b| b == b'\n').count();
        self.reach(line.saturating_sub(newlines));
        let mut source_line = line.saturating_sub(newlines).max(1);
        for c in t.chars() {
            if c == '\n' {
                source_line += 1;
                if self.pre > 0 || (self.line.max(1) < source_line && self.heading.is_none()) {
                    self.newline();
                } else {
                    self.space = self.filled;
                }
            } else if self.pre > 0 {
                self.text.push(c);
                self.filled = true;
            } else if c.is_whitespace() {
                self.space = self.filled;
            } else {
                if self.space {
                    self.text.push(' ');
                    self.space = false;
                }
                self.text.push(c);
                self.filled = true;
            }
        }
    }

    fn finish(self) -> String {
        let mut heading_lines = self.heading_lines.into_iter().peekable();
        let mut out = String::with_capacity(self.text.len() + 16);
        for (i, line) in self.text.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            while heading_lines.next_if(|&h| h < i + 1).is_some() {}
            let is_heading = heading_lines.peek() == Some(&(i + 1));
            let line = line.trim_end();
            if is_heading {
                out.push_str(line);
            } else {
                out.push_str(&super::plain_line(line));
            }
        }
        out
    }
}

/// `h1`..`h6` → 1..6.
fn heading_level(name: &str) -> Option<usize> {
    let rest = name.strip_prefix('h')?;
    let level = rest.parse::<usize>().ok()?;
    (1..=6).contains(&level).then_some(level)
}

fn hides(name: &str, tag: &Tag) -> bool {
    if HIDDEN.contains(&name) {
        return true;
    }
    if OPTIONAL_END.contains(&name) {
        return false;
    }
    tag.attrs.iter().any(|a| {
        let key: &str = &a.name.local;
        match key {
            "hidden" => true,
            "aria-hidden" => a.value.eq_ignore_ascii_case("true"),
            "role" => FURNITURE_ROLES
                .iter()
                .any(|r| a.value.eq_ignore_ascii_case(r)),
            "class" | "id" => a
                .value
                .split_ascii_whitespace()
                .any(|c| NAVIGATION_CLASSES.iter().any(|n| c.eq_ignore_ascii_case(n))),
            _ => false,
        }
    })
}

/// What the tokenizer must read next as: the body of a script or a style is not markup (a `<`
/// in it opens no tag), and a title or a text area holds no tags but does decode entities.
fn raw(name: &str, start: bool) -> TokenSinkResult<()> {
    if !start {
        return TokenSinkResult::Continue;
    }
    match name {
        "script" => TokenSinkResult::RawData(RawKind::ScriptData),
        "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
            TokenSinkResult::RawData(RawKind::Rawtext)
        }
        "title" | "textarea" => TokenSinkResult::RawData(RawKind::Rcdata),
        "plaintext" => TokenSinkResult::Plaintext,
        _ => TokenSinkResult::Continue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> Vec<String> {
        text(s).split('\n').map(str::to_owned).collect()
    }

    #[test]
    fn pretty_pages_keep_their_lines() {
        let html = "<!DOCTYPE html>\n<html>\n<head>\n<title>The page</title>\n\
                    <style>\np { color: red }\n</style>\n</head>\n<body>\n\
                    <h1>Main heading</h1>\n<p>First paragraph\nwraps here.</p>\n\
                    <h2 id=\"x\">Second &amp; last</h2>\n<p>Caf&eacute; &lt;b&gt;</p>\n\
                    </body>\n</html>\n";
        let got = lines(html);
        let src: Vec<&str> = html.split('\n').collect();
        assert_eq!(got.len(), src.len(), "{got:?}");
        assert_eq!(got[3], "# The page");
        assert_eq!(got[9], "# Main heading");
        assert_eq!(got[10], "First paragraph");
        assert_eq!(got[11], "wraps here.");
        assert_eq!(got[12], "## Second & last");
        assert_eq!(got[13], "Café <b>");
        assert!(!text(html).contains("color"), "{html}");
    }

    #[test]
    fn scripts_navigation_and_hidden_parts_are_left_out() {
        let html = "<body><nav><a href=/>Home</a></nav>\
                    <script>if (a < b) { document.write('<p>no</p>') }</script>\
                    <div role=\"navigation\">Menu</div><div hidden>secret</div>\
                    <p>Shown</p><footer>Copyright</footer><p>After</p></body>";
        let t = text(html);
        for gone in ["Home", "document", "no", "Menu", "secret", "Copyright"] {
            assert!(!t.contains(gone), "{gone} in {t:?}");
        }
        assert!(t.contains("Shown") && t.contains("After"), "{t:?}");
    }

    #[test]
    fn blocks_on_one_line_are_split_and_the_drift_is_paid_back() {
        let html = "<h1>Title</h1><p>One</p><p>Two</p>\n\n\n\n<p>Line five</p>\n";
        let got = lines(html);
        assert_eq!(&got[..3], ["# Title", "One", "Two"]);
        assert_eq!(got[4], "Line five", "{got:?}");
    }

    #[test]
    fn pre_keeps_its_lines_and_code_comments_are_not_headings() {
        let html = "<pre><code># install\nmake  all\n</code></pre>\n<p>x</p>";
        let got = lines(html);
        assert_eq!(got[0], "\\# install");
        assert_eq!(got[1], "make  all");
    }

    #[test]
    fn lists_and_tables_read_as_lines() {
        let html = "<ul><li>one</li><li>two</li></ul>\
                    <table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>";
        let t = text(html);
        assert!(t.contains("- one\n- two"), "{t:?}");
        assert!(t.contains("k | v\na | 1"), "{t:?}");
    }

    /// A page of the libffi manual as Debian installs it (Texinfo's HTML).
    #[test]
    fn installed_documentation_reads_on_its_own_lines() {
        let html = String::from_utf8(super::super::fixture("libffi-the-basics.html")).unwrap();
        let src: Vec<&str> = html.split('\n').collect();
        let got = lines(&html);
        assert_eq!(got.len(), src.len());
        let at = |needle: &str| src.iter().position(|l| l.contains(needle)).unwrap();
        assert_eq!(got[at("<h3 class=\"section\">")], "### 2.1 The Basics");
        let call = at("This calls the function");
        assert!(
            got[call].starts_with("This calls the function fn according"),
            "{}",
            got[call]
        );
        assert!(got[at("<title>")].starts_with("# The Basics (libffi"));
        let t = got.join("\n");
        for markup in ["<code>", "&rsquo;", "margin-left", "Permission is hereby"] {
            assert!(!t.contains(markup), "{markup}");
        }
        assert!(t.contains("caller’s responsibility"), "entities decoded");
    }

    #[test]
    fn navigation_by_class_is_left_out() {
        let t = text(
            "<div class=\"sphinx sidebar\">Contents</div><ul id=toc><li>A</li></ul><p>Body</p>",
        );
        assert_eq!(t.trim(), "Body");
    }

    #[test]
    fn elements_without_end_tags_hide_nothing_after_them() {
        let t = text("<ul><li class=menu>Home<li>About</ul><p hidden>x<p>Kept text</p>");
        assert!(t.contains("Kept text"), "{t:?}");
        let t = text("<head><script src=\"a.js\"/><title/></head><body><p>Chapter text</p></body>");
        assert!(t.contains("Chapter text"), "{t:?}");
        assert!(!t.contains("<p>"), "{t:?}");
    }

    #[test]
    fn an_unclosed_hidden_element_ends_with_the_body() {
        let t = text("<body><nav>menu<p>lost</p></body><p>kept</p>");
        assert!(!t.contains("menu"));
        assert!(t.contains("kept"), "{t:?}");
    }

    #[test]
    fn odd_markup_is_text_not_a_panic() {
        for s in [
            "",
            "<",
            "<<<>>>",
            "</p></p></div>",
            "<h7>x</h7>",
            "<script>",
            "&;&#xffffffff;&#0;",
            "<p\n\n\nclass=a>x</p>",
        ] {
            let _ = text(s);
        }
        let t = text("<p\n\n\nclass=a>x</p>");
        assert_eq!(t.split('\n').nth(3), Some("x"), "{t:?}");
    }
}
