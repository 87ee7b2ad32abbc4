//! Links as a reader sees them.
//!
//! Note apps link notes with `[[Target]]`, `[[Target|shown text]]`, `[[Target#Heading]]` and
//! embed them with `![[Target]]` (Obsidian, Logseq, Foam, Dendron, Zettlr); Org writes
//! `[[target][shown text]]`. Rendered, a reader sees only the shown text (or the target's
//! name), so that is what gets embedded: brackets, pipes and `file:` prefixes are noise to the
//! encoder. The file's text itself (what the word index, the preview and snippets use) is left
//! as written.

use std::borrow::Cow;

/// Longest link read, in bytes: a `[[` with no `]]` nearby is text, not a link.
const MAX_LINK_BYTES: usize = 400;

/// `text` with each wikilink (and Org link) replaced by what a reader sees of it.
pub fn as_read(text: &str) -> Cow<'_, str> {
    if !text.contains("[[") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("[[") {
        let (before, from) = rest.split_at(open);
        let embed = before.ends_with('!');
        out.push_str(if embed {
            &before[..before.len() - 1]
        } else {
            before
        });
        let inner_start = 2;
        let window = &from[inner_start..from.len().min(inner_start + MAX_LINK_BYTES)];
        let close = window.find("]]").filter(|&c| !window[..c].contains('\n'));
        let Some(close) = close else {
            if embed {
                out.push('!');
            }
            out.push_str("[[");
            rest = &from[inner_start..];
            continue;
        };
        out.push_str(&shown(&window[..close]));
        rest = &from[inner_start + close + 2..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// What a reader sees of a link's inside: `Target|shown` → `shown`, Org's `target][shown` →
/// `shown`, `Target#Heading` → `Target Heading`, `Target#^block` → `Target`, `file:x.org` →
/// `x.org`.
fn shown(inner: &str) -> String {
    if let Some((_, s)) = inner.split_once("][") {
        return s.to_owned();
    }
    if let Some((_, s)) = inner.split_once('|') {
        return s.to_owned();
    }
    let inner = inner.strip_prefix("file:").unwrap_or(inner);
    match inner.split_once('#') {
        Some((target, anchor)) if anchor.starts_with('^') => target.to_owned(),
        Some(("", heading)) => heading.to_owned(),
        Some((target, heading)) => format!("{target} {heading}"),
        None => inner.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_read_as_their_shown_text() {
        let cases = [
            ("see [[Moss gardens]] now", "see Moss gardens now"),
            ("see [[moss-gardens|the moss page]].", "see the moss page."),
            ("[[Bees#Winter cluster]]", "Bees Winter cluster"),
            ("[[#Local heading]]", "Local heading"),
            ("[[Bees#^a1b2c3]]", "Bees"),
            ("![[diagram.png]] below", "diagram.png below"),
            ("org [[file:bees.org][Bee notes]] x", "org Bee notes x"),
            ("plain text", "plain text"),
            ("a [[ b", "a [[ b"),
            ("a [[b\nc]] d", "a [[b\nc]] d"),
            ("![[x", "![[x"),
            ("[[a]][[b|c]]", "ac"),
        ];
        for (text, want) in cases {
            assert_eq!(as_read(text), want, "{text:?}");
        }
        let long = format!("[[{}]]", "x".repeat(MAX_LINK_BYTES + 10));
        assert_eq!(as_read(&long), long, "too long to be a link");
    }
}
