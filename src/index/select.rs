//! Filters: which files a query may answer from.
//!
//! One syntax for every way in (the TUI's query bar, `dochash query`, the MCP `search` tool):
//! words of the form `key:value` in the query, `-key:value` to exclude, with `"quotes"` around a
//! value that has spaces. Keys: `path:` (a folder, file or glob; see [`Scope`]), `ext:`, `tag:`,
//! `in:` (one of the indexed folders, by name), `after:` and `before:` (the note's date: its
//! front matter `date`, else its modification time). Unknown keys are ordinary words (`std::io`
//! and `http://…` are searched as written), so only a known key with a bad value is an error.
//!
//! Several `path:`, `ext:` or `in:` filters are alternatives; several `tag:` filters must all
//! hold (a note tagged both), as note tools read them.

use std::path::{Path, PathBuf};

use chrono::{Duration, Local, Months, NaiveDate};
use serde::{Deserialize, Serialize};

use super::IndexError;
use super::scope::Scope;
use super::store::FileRecord;

/// Most filter words in one query; a query is a few words, not a list of every folder.
pub const MAX_FILTERS: usize = 32;

/// What a query's filter words (or a client's filter fields) ask for, before they are
/// resolved against the index's folders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filters {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_path: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ext: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_ext: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_tag: Vec<String>,
    /// `in:`: indexed folders, by name or path.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub within: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_within: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }

    /// Adds one `key:value` filter (`negated` for `-key:`); `Ok(false)` when `key` is no
    /// filter key.
    pub fn add(&mut self, key: &str, value: &str, negated: bool) -> Result<bool, IndexError> {
        let key = key.to_ascii_lowercase();
        // `in:` or `before:` with nothing after it is prose ("logged in: expired"), not a
        // filter; so is a tag of only `#`.
        if value.trim().trim_start_matches('#').trim().is_empty() {
            return Ok(false);
        }
        let shown = format!("{}{key}:{value}", if negated { "-" } else { "" });
        let bad = |why: &str| IndexError::Query(format!("filter {shown}: {why}"));
        let list = match (key.as_str(), negated) {
            ("path", false) => &mut self.path,
            ("path", true) => &mut self.not_path,
            ("ext", false) => &mut self.ext,
            ("ext", true) => &mut self.not_ext,
            ("tag", false) => &mut self.tag,
            ("tag", true) => &mut self.not_tag,
            ("in", false) => &mut self.within,
            ("in", true) => &mut self.not_within,
            ("after" | "before", true) => {
                return Err(bad(if key == "after" {
                    "a date cannot be excluded; write before: instead"
                } else {
                    "a date cannot be excluded; write after: instead"
                }));
            }
            ("after", false) | ("before", false) => {
                parse_day(value, Local::now().date_naive()).map_err(|e| bad(&e))?;
                let slot = if key == "after" {
                    &mut self.after
                } else {
                    &mut self.before
                };
                *slot = Some(value.trim().to_string());
                return Ok(true);
            }
            _ => return Ok(false),
        };
        let value = value.trim();
        if value.len() > super::scope::MAX_SCOPE_BYTES {
            return Err(bad("the value is too long"));
        }
        list.push(value.to_string());
        Ok(true)
    }

    /// The list filters, each with the word that writes it.
    fn lists(&self) -> [(&'static str, &Vec<String>); 8] {
        [
            ("path", &self.path),
            ("-path", &self.not_path),
            ("ext", &self.ext),
            ("-ext", &self.not_ext),
            ("tag", &self.tag),
            ("-tag", &self.not_tag),
            ("in", &self.within),
            ("-in", &self.not_within),
        ]
    }

    fn count(&self) -> usize {
        self.lists().iter().map(|(_, v)| v.len()).sum::<usize>()
            + usize::from(self.after.is_some())
            + usize::from(self.before.is_some())
    }

    /// The filters as query words, for showing what is in force (`path:work tag:meeting`).
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        let quote = |v: &str| {
            if v.contains(char::is_whitespace) {
                format!("\"{v}\"")
            } else {
                v.to_string()
            }
        };
        for (key, vals) in self.lists() {
            for v in vals {
                out.push(format!("{key}:{}", quote(v)));
            }
        }
        if let Some(a) = &self.after {
            out.push(format!("after:{a}"));
        }
        if let Some(b) = &self.before {
            out.push(format!("before:{b}"));
        }
        out.join(" ")
    }

    /// These filters and `other`'s together.
    pub fn merge(&mut self, other: &Filters) {
        for (a, b) in [
            (&mut self.path, &other.path),
            (&mut self.not_path, &other.not_path),
            (&mut self.ext, &other.ext),
            (&mut self.not_ext, &other.not_ext),
            (&mut self.tag, &other.tag),
            (&mut self.not_tag, &other.not_tag),
            (&mut self.within, &other.within),
            (&mut self.not_within, &other.not_within),
        ] {
            a.extend(b.iter().cloned());
        }
        if other.after.is_some() {
            self.after.clone_from(&other.after);
        }
        if other.before.is_some() {
            self.before.clone_from(&other.before);
        }
    }
}

/// Splits a query into its words to search and its filters. Words are split at whitespace
/// outside quotes; a word that is `key:value` or `-key:value` with a known key is a filter (its
/// value may be quoted), anything else stays in the text as typed.
pub fn split_filters(query: &str) -> Result<(String, Filters), IndexError> {
    let mut filters = Filters::default();
    let mut kept: Vec<&str> = Vec::new();
    for word in words(query) {
        if let Some((key, value, negated)) = as_filter(word)
            && filters.add(key, value, negated)?
        {
            if filters.count() > MAX_FILTERS {
                return Err(IndexError::Query(format!(
                    "more than {MAX_FILTERS} filters in one query"
                )));
            }
            continue;
        }
        kept.push(word);
    }
    Ok((kept.join(" "), filters))
}

/// Whitespace-separated words; a `"` opens a run that whitespace does not split until the next
/// `"`. A quote without its partner is an ordinary character, as in `search::parse_query`.
fn words(q: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut quoted = false;
    let quotes = q.matches('"').count();
    let mut paired = quotes - quotes % 2;
    for (i, c) in q.char_indices() {
        if c == '"' && paired > 0 {
            paired -= 1;
            quoted = !quoted;
        }
        if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                out.push(&q[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(&q[s..]);
    }
    out
}

/// `key:value` or `-key:value`, the value unquoted; `None` when `word` has no such shape.
fn as_filter(word: &str) -> Option<(&str, &str, bool)> {
    let (negated, rest) = match word.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, word),
    };
    let (key, value) = rest.split_once(':')?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = match value.strip_prefix('"') {
        Some(v) => v.strip_suffix('"').unwrap_or(v),
        None => value,
    };
    Some((key, value, negated))
}

/// The date forms `after:` and `before:` take.
pub const DATE_FORMS: &str =
    "YYYY-MM-DD, YYYY-MM, YYYY, today, yesterday, or an age as 7d, 2w, 3m, 1y";

/// The first day a date word names: a day, the first of a month or a year, or `today` less an
/// age.
fn parse_day(s: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    let s = s.trim().to_ascii_lowercase();
    let not_a_date = || format!("not a date ({DATE_FORMS})");
    match s.as_str() {
        "today" => return Ok(today),
        "yesterday" => return Ok(today - Duration::days(1)),
        _ => {}
    }
    if let Some(unit) = s.chars().last().filter(|c| "dwmy".contains(*c))
        && let Ok(n) = s[..s.len() - 1].parse::<u32>()
    {
        let day = match unit {
            'd' => Duration::try_days(n.into()).and_then(|d| today.checked_sub_signed(d)),
            'w' => Duration::try_weeks(n.into()).and_then(|d| today.checked_sub_signed(d)),
            'm' => today.checked_sub_months(Months::new(n)),
            _ => n
                .checked_mul(12)
                .and_then(|m| today.checked_sub_months(Months::new(m))),
        };
        return day.ok_or_else(not_a_date);
    }
    let parts: Vec<&str> = s.split('-').collect();
    let num = |p: &str| p.parse::<u32>().ok().filter(|_| p.len() <= 4);
    let day = match parts.as_slice() {
        [y] if y.len() == 4 => num(y).and_then(|y| NaiveDate::from_ymd_opt(y as i32, 1, 1)),
        [y, m] if y.len() == 4 => num(y)
            .zip(num(m))
            .and_then(|(y, m)| NaiveDate::from_ymd_opt(y as i32, m, 1)),
        [y, m, d] if y.len() == 4 => match (num(y), num(m), num(d)) {
            (Some(y), Some(m), Some(d)) => NaiveDate::from_ymd_opt(y as i32, m, d),
            _ => None,
        },
        _ => None,
    };
    day.ok_or_else(not_a_date)
}

/// Start of `day` where the machine is, as seconds since the epoch.
fn day_start(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .and_then(crate::corpus::local_time)
        .unwrap_or(i64::MIN)
}

/// Filters resolved against the index's folders, ready to test files.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Vec<Scope>,
    exclude: Vec<Scope>,
    ext: Vec<String>,
    not_ext: Vec<String>,
    tags: Vec<String>,
    not_tags: Vec<String>,
    roots: Vec<PathBuf>,
    not_roots: Vec<PathBuf>,
    /// Seconds since the epoch: the note's date is at or after this …
    after: Option<i64>,
    /// … and before this.
    before: Option<i64>,
    /// What was asked, for showing.
    pub asked: Filters,
}

impl Selection {
    /// Resolves `filters` against `roots` (canonical, as the index keeps them): a path, glob
    /// or folder name that names nothing inside them is an error saying so.
    pub fn resolve(filters: &Filters, roots: &[PathBuf]) -> Result<Selection, IndexError> {
        let today = Local::now().date_naive();
        let scopes = |ps: &[String]| -> Result<Vec<Scope>, IndexError> {
            ps.iter().map(|p| Scope::parse(p, roots)).collect()
        };
        let exts = |es: &[String]| -> Vec<String> {
            es.iter()
                .map(|e| e.trim_start_matches('.').to_lowercase())
                .collect()
        };
        let tags = |ts: &[String]| -> Vec<String> {
            ts.iter()
                .map(|t| t.trim_start_matches('#').to_lowercase())
                .collect()
        };
        let folders = |names: &[String], key: &str| -> Result<Vec<PathBuf>, IndexError> {
            names.iter().map(|n| folder(n, roots, key)).collect()
        };
        let date = |v: &Option<String>, key: &str| -> Result<Option<i64>, IndexError> {
            v.as_deref()
                .map(|s| {
                    parse_day(s, today)
                        .map(day_start)
                        .map_err(|e| IndexError::Query(format!("filter {key}:{s}: {e}")))
                })
                .transpose()
        };
        let after = date(&filters.after, "after")?;
        let before = date(&filters.before, "before")?;
        Ok(Selection {
            include: scopes(&filters.path)?,
            exclude: scopes(&filters.not_path)?,
            ext: exts(&filters.ext),
            not_ext: exts(&filters.not_ext),
            tags: tags(&filters.tag),
            not_tags: tags(&filters.not_tag),
            roots: folders(&filters.within, "in")?,
            not_roots: folders(&filters.not_within, "-in")?,
            after,
            before,
            asked: filters.clone(),
        })
    }

    /// What the selection is, in a form to compare: what was asked, and the dates it resolved
    /// to (`7d` names another day tomorrow).
    pub fn key(&self) -> (Filters, Option<i64>, Option<i64>) {
        (self.asked.clone(), self.after, self.before)
    }

    /// Whether a file of the index (at `path`, with its record) may answer.
    pub fn holds(&self, path: &Path, file: &FileRecord) -> bool {
        let ext = || {
            path.extension()
                .map(|e| e.to_string_lossy().to_lowercase())
                .unwrap_or_default()
        };
        let tagged = |t: &String| {
            file.tags.iter().any(|have| {
                have == t
                    || have
                        .strip_prefix(t.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
        };
        let when = file
            .date
            .unwrap_or_else(|| file.mtime_ns.div_euclid(1_000_000_000) as i64);
        let in_root = |r: &PathBuf| file.root == *r || path.starts_with(r);
        (self.include.is_empty() || self.include.iter().any(|s| s.holds(path)))
            && !self.exclude.iter().any(|s| s.holds(path))
            && (self.ext.is_empty() || self.ext.contains(&ext()))
            && (self.not_ext.is_empty() || !self.not_ext.contains(&ext()))
            && self.tags.iter().all(tagged)
            && !self.not_tags.iter().any(tagged)
            && (self.roots.is_empty() || self.roots.iter().any(in_root))
            && !self.not_roots.iter().any(in_root)
            && self.after.is_none_or(|a| when >= a)
            && self.before.is_none_or(|b| when < b)
    }
}

/// The indexed folder `name` means: its path, or the last part of its path (`notes` for
/// `/home/me/notes`), or a path that resolves to it.
fn folder(name: &str, roots: &[PathBuf], key: &str) -> Result<PathBuf, IndexError> {
    let trimmed = name.trim_end_matches(['/', '\\']);
    if let Some(r) = roots.iter().find(|r| {
        r.as_os_str() == trimmed
            || r.file_name()
                .is_some_and(|n| n.to_string_lossy() == trimmed)
    }) {
        return Ok(r.clone());
    }
    if let Ok(canon) = crate::fsx::canonicalize(trimmed)
        && let Some(r) = roots.iter().find(|r| **r == canon)
    {
        return Ok(r.clone());
    }
    let names: Vec<String> = roots
        .iter()
        .map(|r| {
            r.file_name().map_or_else(
                || r.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    Err(IndexError::Query(format!(
        "filter {key}:{name}: no indexed folder of that name (they are: {})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    fn file(root: &Path, tags: &[&str], date: Option<i64>, mtime_s: i64) -> FileRecord {
        FileRecord {
            root: root.to_path_buf(),
            size: 1,
            mtime_ns: mtime_s as i128 * 1_000_000_000,
            hash: [0; 32],
            passages: Vec::new(),
            lossy: false,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            date,
            unread_meta: false,
        }
    }

    #[test]
    fn filter_words_leave_the_query_and_other_words_stay() {
        let (text, f) = split_filters(
            "deploy \"staging box\" path:work -path:\"old stuff\" ext:.MD tag:#meeting -tag:draft in:notes std::io http://x.org after:2024-03",
        )
        .unwrap();
        assert_eq!(text, "deploy \"staging box\" std::io http://x.org");
        assert_eq!(f.path, ["work"]);
        assert_eq!(f.not_path, ["old stuff"]);
        assert_eq!(f.ext, [".MD"]);
        assert_eq!(
            (f.tag.as_slice(), f.not_tag.as_slice()),
            (&["#meeting".to_string()][..], &["draft".to_string()][..])
        );
        assert_eq!(f.within, ["notes"]);
        assert_eq!(f.after.as_deref(), Some("2024-03"));
        assert_eq!(
            f.describe(),
            "path:work -path:\"old stuff\" ext:.MD tag:#meeting -tag:draft in:notes after:2024-03"
        );
        // Unknown keys are words; so is a key in quotes.
        let (text, f) = split_filters("note:this \"path:x\"").unwrap();
        assert_eq!(text, "note:this \"path:x\"");
        assert!(f.is_empty());
    }

    #[test]
    fn malformed_filters_are_one_line_errors_naming_the_filter() {
        for (q, want) in [
            ("a after:soon", "filter after:soon: not a date"),
            (
                "a before:2024-02-30",
                "filter before:2024-02-30: not a date",
            ),
            ("a -after:2024", "cannot be excluded"),
            ("a after:99999999d", "not a date"),
        ] {
            let e = split_filters(q).unwrap_err().to_string();
            assert!(e.contains(want), "{q}: {e}");
            assert!(!e.contains('\n'));
        }
        // A key with nothing after it is prose, as is a tag of only `#`.
        for q in [
            "user not logged in: session expired",
            "notes before: the launch",
            "a tag:#",
        ] {
            let (text, f) = split_filters(q).unwrap();
            assert_eq!((text.as_str(), f.is_empty()), (q, true), "{q}");
        }
        // An unpaired quote does not swallow the filters after it.
        let (text, f) = split_filters("zebra \"stripes path:sub").unwrap();
        assert_eq!(text, "zebra \"stripes");
        assert_eq!(f.path, ["sub"]);
        let many: String = (0..40).map(|i| format!("ext:e{i} ")).collect();
        assert!(
            split_filters(&many)
                .unwrap_err()
                .to_string()
                .contains("more than")
        );
    }

    #[test]
    fn dates_name_the_first_day_they_cover() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 31).unwrap();
        let d = |s| parse_day(s, today).unwrap();
        assert_eq!(d("2024"), NaiveDate::from_ymd_opt(2024, 1, 1).unwrap());
        assert_eq!(d("2024-02"), NaiveDate::from_ymd_opt(2024, 2, 1).unwrap());
        assert_eq!(
            d("2024-02-29"),
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
        );
        assert_eq!(d("today"), today);
        assert_eq!(
            d("Yesterday"),
            NaiveDate::from_ymd_opt(2026, 3, 30).unwrap()
        );
        assert_eq!(d("7d"), NaiveDate::from_ymd_opt(2026, 3, 24).unwrap());
        assert_eq!(d("2w"), NaiveDate::from_ymd_opt(2026, 3, 17).unwrap());
        assert_eq!(d("1m"), NaiveDate::from_ymd_opt(2026, 2, 28).unwrap());
        assert_eq!(d("1y").year(), 2025);
        // Old ages are not capped: 11,000 days is 1996.
        assert_eq!(d("11000d").year(), 1996);
        for bad in ["", "24", "2024-13", "2024-1-1x", "-3d", "d", "99999999999d"] {
            assert!(parse_day(bad, today).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_selection_tests_every_key() {
        let d = tempfile::tempdir().unwrap();
        let base = crate::fsx::canonicalize(d.path()).unwrap();
        let notes = base.join("notes");
        let work = base.join("work");
        std::fs::create_dir_all(notes.join("daily")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let roots = vec![notes.clone(), work.clone()];
        let sel = |q: &str| {
            let (_, f) = split_filters(q).unwrap();
            Selection::resolve(&f, &roots).unwrap()
        };
        let a = notes.join("daily/a.md");
        let b = work.join("b.PDF");
        let fa = file(&notes, &["meeting", "project/alpha"], None, 1_700_000_000);
        let fb = file(
            &work,
            &[],
            day_start(NaiveDate::from_ymd_opt(2020, 5, 1).unwrap()).into(),
            1_700_000_000,
        );
        let both = |q: &str| (sel(q).holds(&a, &fa), sel(q).holds(&b, &fb));
        assert_eq!(both(""), (true, true));
        assert_eq!(both("path:daily"), (true, false));
        assert_eq!(both("-path:daily"), (false, true));
        assert_eq!(both("path:*.md path:b.*"), (true, true));
        assert_eq!(both("ext:pdf"), (false, true));
        assert_eq!(both("-ext:md"), (false, true));
        assert_eq!(both("tag:meeting"), (true, false));
        assert_eq!(
            both("tag:project"),
            (true, false),
            "a nested tag is under its parent"
        );
        assert_eq!(both("tag:proj"), (false, false));
        assert_eq!(
            both("tag:meeting tag:other"),
            (false, false),
            "tags must all hold"
        );
        assert_eq!(both("-tag:meeting"), (false, true));
        assert_eq!(both("in:work"), (false, true));
        assert_eq!(both("-in:work"), (true, false));
        // The front matter's date beats the modification time (2023-11-14).
        assert_eq!(both("after:2021"), (true, false));
        assert_eq!(both("before:2021"), (false, true));
        assert_eq!(both("after:2020-05-01 before:2020-05-02"), (false, true));
        let (_, f) = split_filters("in:elsewhere").unwrap();
        let e = Selection::resolve(&f, &roots).unwrap_err().to_string();
        assert!(e.contains("they are: notes, work"), "{e}");
        let (_, f) = split_filters("path:nowhere").unwrap();
        assert!(Selection::resolve(&f, &roots).is_err());
    }
}
