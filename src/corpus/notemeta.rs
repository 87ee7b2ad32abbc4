//! A note's own metadata: its tags and its date, for the `tag:`, `after:` and `before:` filters,
//! and its title and other names, which search as its title does.
//!
//! Note tools keep both in two places: front matter (`tags: [a, b]`, `date: 2024-03-01` in
//! YAML or TOML, as Obsidian, Hugo, Jekyll and Zola write it) and, for tags, inline `#tags` in
//! the text (Obsidian, Bear, Logseq) or Org's `#+FILETAGS:`. Both are read; the front matter's
//! date beats the file's modification time, which a copy, a checkout or a sync resets.

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone};

use super::{Document, Format, FrontMatterKind, front_matter};

/// Most tags kept for one file; a note with more is a tag list, not a note's tags.
pub const MAX_TAGS: usize = 64;
/// Longest tag kept, in bytes.
const MAX_TAG_BYTES: usize = 64;
/// Most aliases kept for one file.
pub const MAX_ALIASES: usize = 32;
/// Longest title or alias kept, in characters (a heading's bound).
const MAX_NAME_CHARS: usize = 160;

/// What a note says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoteMeta {
    /// Lower-cased, without `#`, in first-seen order, each once.
    pub tags: Vec<String>,
    /// The front matter's `date` (or `created`), as seconds since the epoch; a date without a
    /// time is the start of that day where the machine is.
    pub date: Option<i64>,
    /// The note's title where it gives one apart from its headings: front matter `title`, Org
    /// `#+TITLE:`, a Logseq `title::` property.
    pub title: Option<String>,
    /// Other names the note goes by: front matter `aliases` (Obsidian) or `alias`, Logseq's
    /// `alias::`, org-roam's `:ROAM_ALIASES:`.
    pub aliases: Vec<String>,
}

/// Reads the tags and date of `doc`, a file of `format`.
pub fn note_meta(doc: &Document, format: Format) -> NoteMeta {
    let mut meta = NoteMeta::default();
    if let Some(fm) = front_matter(&doc.text) {
        let content = doc.text.get(fm.content.clone()).unwrap_or("");
        match fm.kind {
            FrontMatterKind::Yaml => from_yaml(content, &mut meta),
            FrontMatterKind::Toml => from_toml(content, &mut meta),
        }
    }
    match format {
        Format::Org => {
            org_filetags(doc.body_text(), &mut meta);
            org_names(doc.body_text(), &mut meta);
        }
        Format::Markdown => {
            logseq_properties(doc.body_text(), &mut meta);
            inline_tags(doc.body_text(), &mut meta);
        }
        Format::ReStructuredText | Format::AsciiDoc => {}
    }
    meta
}

/// Keys whose values are a note's other names.
const ALIAS_KEYS: [&str; 2] = ["aliases", "alias"];

/// A title or alias as kept: one line of words, `[[` `]]` of a Logseq link gone, bounded.
fn name(raw: &str) -> Option<String> {
    let t = raw.replace("[[", "").replace("]]", "");
    let t = t.trim().trim_matches(['"', '\'']).trim();
    let words: Vec<&str> = t.split_whitespace().collect();
    if words.is_empty() {
        return None;
    }
    Some(words.join(" ").chars().take(MAX_NAME_CHARS).collect())
}

fn add_alias(meta: &mut NoteMeta, raw: &str) {
    if let Some(a) = name(raw)
        && meta.aliases.len() < MAX_ALIASES
        && !meta.aliases.contains(&a)
    {
        meta.aliases.push(a);
    }
}

/// Logseq's page properties: `key:: value` lines at the top of the page (its first block).
/// `title::`, `alias::` and `tags::` name the page; values are comma-separated and may be
/// `[[links]]`.
fn logseq_properties(text: &str, meta: &mut NoteMeta) {
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let l = l.strip_prefix("- ").unwrap_or(l);
        let Some((key, value)) = l.split_once(":: ") else {
            break;
        };
        if key.contains(char::is_whitespace) {
            break;
        }
        match key.to_ascii_lowercase().as_str() {
            "title" => meta.title = meta.title.take().or_else(|| name(value)),
            "alias" | "aliases" => value.split(',').for_each(|a| add_alias(meta, a)),
            "tags" | "tag" => value
                .split(',')
                .for_each(|t| add_tag(meta, &t.replace("[[", "").replace("]]", ""))),
            _ => {}
        }
    }
}

/// Org's `#+TITLE:` and org-roam's `:ROAM_ALIASES: "two words" one` property.
fn org_names(text: &str, meta: &mut NoteMeta) {
    for line in text.lines() {
        let l = line.trim_start();
        let lower = l.get(..14).unwrap_or(l).to_ascii_lowercase();
        if lower.starts_with("#+title:") {
            if meta.title.is_none() {
                meta.title = name(&l[8..]);
            }
        } else if lower.starts_with(":roam_aliases:") {
            let rest = &l[14..];
            let mut quoted = false;
            let mut word = String::new();
            for c in rest.chars().chain([' ']) {
                match c {
                    '"' => quoted = !quoted,
                    c if c.is_whitespace() && !quoted => {
                        add_alias(meta, &word);
                        word.clear();
                    }
                    c => word.push(c),
                }
            }
        }
    }
}

/// Front matter keys whose values are tags.
const TAG_KEYS: [&str; 4] = ["tags", "tag", "keywords", "categories"];
/// Front matter keys whose value is the note's date, in order of preference.
const DATE_KEYS: [&str; 3] = ["date", "created", "created_at"];

/// Largest front matter read for tags and a date; metadata is a few lines.
const MAX_FRONT_MATTER_BYTES: usize = 16 * 1024;

/// Whether YAML `content` is safe to load: the loader copies an anchored node at every alias,
/// so a few hundred bytes of nested aliases ("billion laughs") would expand to billions of
/// nodes. Front matter has no use for aliases; with any, the note gives no tags.
fn plain_yaml(content: &str) -> bool {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(content);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return true,
            Ok((Event::Alias(_), _)) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

fn from_yaml(content: &str, meta: &mut NoteMeta) {
    use yaml_rust2::{Yaml, YamlLoader};
    // Malformed front matter is the note's business: it simply gives no tags.
    if content.len() > MAX_FRONT_MATTER_BYTES || !plain_yaml(content) {
        return;
    }
    let Ok(docs) = YamlLoader::load_from_str(content) else {
        return;
    };
    let Some(Yaml::Hash(map)) = docs.into_iter().next() else {
        return;
    };
    let get = |k: &str| map.get(&Yaml::String(k.to_string()));
    for key in TAG_KEYS {
        match get(key) {
            Some(Yaml::Array(items)) => {
                for i in items {
                    if let Some(s) = scalar_yaml(i) {
                        add_tag(meta, &s);
                    }
                }
            }
            Some(v) => {
                if let Some(s) = scalar_yaml(v) {
                    split_tags(meta, &s);
                }
            }
            None => {}
        }
    }
    meta.date = DATE_KEYS
        .iter()
        .filter_map(|k| get(k).and_then(scalar_yaml))
        .find_map(|s| parse_date(&s));
    meta.title = get("title").and_then(scalar_yaml).and_then(|t| name(&t));
    for key in ALIAS_KEYS {
        match get(key) {
            Some(Yaml::Array(items)) => {
                for i in items {
                    if let Some(s) = scalar_yaml(i) {
                        add_alias(meta, &s);
                    }
                }
            }
            Some(v) => {
                if let Some(s) = scalar_yaml(v) {
                    s.split(',').for_each(|a| add_alias(meta, a));
                }
            }
            None => {}
        }
    }
}

fn scalar_yaml(v: &yaml_rust2::Yaml) -> Option<String> {
    use yaml_rust2::Yaml;
    match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn from_toml(content: &str, meta: &mut NoteMeta) {
    use toml::Value;
    if content.len() > MAX_FRONT_MATTER_BYTES {
        return;
    }
    let Ok(table) = content.parse::<toml::Table>() else {
        return;
    };
    // Zola keeps tags under `[taxonomies]`.
    let taxonomies = table.get("taxonomies").and_then(Value::as_table);
    for key in TAG_KEYS {
        for v in [table.get(key), taxonomies.and_then(|t| t.get(key))]
            .into_iter()
            .flatten()
        {
            match v {
                Value::Array(items) => {
                    for i in items {
                        if let Some(s) = i.as_str() {
                            add_tag(meta, s);
                        }
                    }
                }
                Value::String(s) => split_tags(meta, s),
                _ => {}
            }
        }
    }
    meta.date = DATE_KEYS.iter().find_map(|k| match table.get(*k)? {
        Value::Datetime(d) => parse_date(&d.to_string()),
        Value::String(s) => parse_date(s),
        _ => None,
    });
    meta.title = table.get("title").and_then(Value::as_str).and_then(name);
    for key in ALIAS_KEYS {
        match table.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .for_each(|a| add_alias(meta, a)),
            Some(Value::String(s)) => s.split(',').for_each(|a| add_alias(meta, a)),
            _ => {}
        }
    }
}

/// A tag list written as one string: `a, b` or `a b` or `#a #b`.
fn split_tags(meta: &mut NoteMeta, s: &str) {
    for t in s.split(|c: char| c == ',' || c.is_whitespace()) {
        add_tag(meta, t);
    }
}

fn add_tag(meta: &mut NoteMeta, raw: &str) {
    let t = raw.trim().trim_start_matches('#').trim().to_lowercase();
    if t.is_empty() || t.len() > MAX_TAG_BYTES || meta.tags.len() >= MAX_TAGS {
        return;
    }
    if !meta.tags.contains(&t) {
        meta.tags.push(t);
    }
}

/// `#tag` words of Markdown text, outside code: a `#` at a word's start followed by letters,
/// digits, `_`, `-` or `/` (nested tags), with at least one letter (`#1` is an issue number;
/// `# Title` is a heading).
fn inline_tags(text: &str, meta: &mut NoteMeta) {
    let mut fence: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        for f in ["```", "~~~"] {
            if trimmed.starts_with(f) {
                fence = match fence {
                    Some(open) if open == f => None,
                    Some(open) => Some(open),
                    None => Some(f),
                };
            }
        }
        if fence.is_some() || trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            continue;
        }
        let mut in_code = false;
        let mut prev: Option<char> = None;
        for (i, c) in line.char_indices() {
            if c == '`' {
                in_code = !in_code;
            } else if c == '#' && !in_code && prev.is_none_or(char::is_whitespace) {
                let rest = &line[i + 1..];
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '/')))
                    .unwrap_or(rest.len());
                let tag = rest[..end].trim_end_matches('/');
                if tag.chars().any(char::is_alphabetic) {
                    add_tag(meta, tag);
                }
            }
            prev = Some(c);
        }
    }
}

/// Org's `#+FILETAGS: :a:b:` lines.
fn org_filetags(text: &str, meta: &mut NoteMeta) {
    for line in text.lines() {
        let l = line.trim_start();
        if let Some(rest) = l
            .get(..11)
            .filter(|p| p.eq_ignore_ascii_case("#+filetags:"))
            .and_then(|_| l.get(11..))
        {
            for t in rest.split([':', ' ']) {
                add_tag(meta, t);
            }
        }
    }
}

/// Seconds since the epoch of a date as front matter writes it: RFC 3339
/// (`2024-03-01T09:30:00+01:00`), `2024-03-01 09:30[:00]` or `2024-03-01` (both local).
pub fn parse_date(s: &str) -> Option<i64> {
    let s = s.trim().trim_matches(['"', '\'']);
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(s, f) {
            return local_time(d);
        }
    }
    let day = NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()?;
    local_time(day.and_hms_opt(0, 0, 0)?)
}

/// A wall-clock time where the machine is, as seconds since the epoch (the earlier one when a
/// clock change makes it ambiguous).
pub fn local_time(t: NaiveDateTime) -> Option<i64> {
    Local
        .from_local_datetime(&t)
        .earliest()
        .or_else(|| Some(t.and_utc().with_timezone(&Local)))
        .map(|d| d.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(text: &str, format: Format) -> NoteMeta {
        note_meta(&Document::from_text(text), format)
    }

    #[test]
    fn yaml_front_matter_gives_tags_in_every_spelling_and_the_date() {
        let m = meta(
            "---\ntitle: x\ntags: [Meeting, work/alpha]\ncategories: notes\ndate: 2024-03-01\n---\n# Body\n",
            Format::Markdown,
        );
        assert_eq!(m.tags, ["meeting", "work/alpha", "notes"]);
        assert_eq!(m.date, parse_date("2024-03-01"));
        let m = meta(
            "---\ntags:\n  - one\n  - \"#two\"\n---\ntext\n",
            Format::Markdown,
        );
        assert_eq!(m.tags, ["one", "two"]);
        let m = meta("---\ntags: a, b c\n---\ntext\n", Format::Markdown);
        assert_eq!(m.tags, ["a", "b", "c"]);
    }

    #[test]
    fn toml_front_matter_and_zola_taxonomies_give_tags() {
        let m = meta(
            "+++\ndate = 2023-05-06T07:08:09Z\n[taxonomies]\ntags = [\"Rust\", \"cli\"]\n+++\nbody\n",
            Format::Markdown,
        );
        assert_eq!(m.tags, ["rust", "cli"]);
        assert_eq!(m.date, Some(1_683_356_889));
    }

    #[test]
    fn inline_tags_are_read_outside_code_and_headings() {
        let text = "# Heading #notatag? no: heading text is text\n\nSee #meeting and #project/alpha.\n\
                    Issue #12 is not a tag; a#b is not one either.\n`#incode` no\n\
                    ```\n#fenced no\n```\n";
        let m = meta(text, Format::Markdown);
        assert_eq!(m.tags, ["notatag", "meeting", "project/alpha"]);
    }

    #[test]
    fn org_filetags_are_tags() {
        let m = meta("#+TITLE: x\n#+FILETAGS: :work:Plans:\n* A\n", Format::Org);
        assert_eq!(m.tags, ["work", "plans"]);
        // Lines of other scripts (byte 11 inside a character) are simply not tag lines.
        let m = meta("éééééé some text\n東京都東京都東京都\n", Format::Org);
        assert!(m.tags.is_empty());
    }

    #[test]
    fn titles_and_other_names_of_each_note_app() {
        // Obsidian: a list of aliases; Hugo/Jekyll: a title.
        let m = meta(
            "---\ntitle: \"Moss gardens\"\naliases: [Moss, Bryophyte beds]\n---\ntext\n",
            Format::Markdown,
        );
        assert_eq!(m.title.as_deref(), Some("Moss gardens"));
        assert_eq!(m.aliases, ["Moss", "Bryophyte beds"]);
        // One alias as a string; TOML front matter.
        let m = meta("---\nalias: moss, mosses\n---\ntext\n", Format::Markdown);
        assert_eq!(m.aliases, ["moss", "mosses"]);
        let m = meta(
            "+++\ntitle = \"Zola page\"\naliases = [\"zp\"]\n+++\ntext\n",
            Format::Markdown,
        );
        assert_eq!(
            (m.title.as_deref(), m.aliases),
            (Some("Zola page"), vec!["zp".into()])
        );
        // Logseq page properties, links in values; they end at the first other line.
        let m = meta(
            "title:: Garden log\nalias:: [[Moss]], beds\ntags:: [[Gardening]], shade\n\n- note:: x\ntitle:: late\n",
            Format::Markdown,
        );
        assert_eq!(m.title.as_deref(), Some("Garden log"));
        assert_eq!(m.aliases, ["Moss", "beds"]);
        assert_eq!(m.tags, ["gardening", "shade"]);
        // Org and org-roam.
        let m = meta(
            ":PROPERTIES:\n:ROAM_ALIASES: \"Moss beds\" moss\n:END:\n#+TITLE: Moss gardens\n* Heading\n",
            Format::Org,
        );
        assert_eq!(m.title.as_deref(), Some("Moss gardens"));
        assert_eq!(m.aliases, ["Moss beds", "moss"]);
        // Bounded.
        let many: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
        let m = meta(
            &format!("---\naliases: [{}]\n---\n", many.join(", ")),
            Format::Markdown,
        );
        assert_eq!(m.aliases.len(), MAX_ALIASES);
        let m = meta(
            &format!("---\ntitle: {}\n---\n", "w ".repeat(500)),
            Format::Markdown,
        );
        assert!(m.title.unwrap().chars().count() <= MAX_NAME_CHARS);
    }

    #[test]
    fn front_matter_with_aliases_or_too_large_gives_no_tags() {
        // Nested aliases would expand to about a billion nodes if loaded.
        let mut bomb = String::from("---\na: &a [x,x,x,x,x,x,x,x,x,x]\n");
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            bomb.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 10].join(",")
            ));
        }
        bomb.push_str("tags: [bomb]\n---\ntext\n");
        assert_eq!(meta(&bomb, Format::Markdown), NoteMeta::default());
        let big = format!(
            "---\ntags: [big]\nx: \"{}\"\n---\ntext\n",
            "y".repeat(20_000)
        );
        assert!(meta(&big, Format::Markdown).tags.is_empty());
        // A plain anchor-free block still reads, `*` in a value included.
        let m = meta(
            "---\ntags: [a]\ntitle: \"*bold* Q&A\"\n---\ntext\n",
            Format::Markdown,
        );
        assert_eq!(m.tags, ["a"]);
    }

    #[test]
    fn malformed_front_matter_and_dates_give_nothing_rather_than_fail() {
        let m = meta(
            "---\ntags: [unclosed\ndate: soon\n---\ntext\n",
            Format::Markdown,
        );
        assert_eq!(m, NoteMeta::default());
        assert_eq!(parse_date("2024-13-40"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert!(parse_date("2024-03-01 10:30").is_some());
    }

    #[test]
    fn tags_are_capped() {
        let text: String = (0..200).map(|i| format!("#t{i} ")).collect();
        assert_eq!(meta(&text, Format::Markdown).tags.len(), MAX_TAGS);
        let long = format!("#{}", "a".repeat(100));
        assert!(meta(&long, Format::Markdown).tags.is_empty());
    }
}
