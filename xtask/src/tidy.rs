//! Tidy checks that pin the docs and the wire contract to the code, in the spirit of
//! rust-analyzer's `tidy`: plain functions over the source tree, run as a test
//! (`xtask/tests/tidy.rs`, part of `cargo test --workspace`). Each check returns its offenders;
//! the test fails listing them all.
//!
//! - [`check_references`]: every markdown link and every mention of a repo doc (`docs/*.md`,
//!   `*/README.md`, `README.md#section`) names a file and heading that exist; nothing points at
//!   the team's design input outside the repository (`DESIGN.md`, `shared/docs`, `../shared`);
//!   `invariant N` names an invariant numbered in `docs/design.md`; mechanisms are named, not
//!   numbered; every test the design doc lists under an invariant exists.
//! - [`check_wire_literals`]: a wire string (filter↔sidecar path, `x-nanogate-*` header, x402
//!   header, `exact`, `XNO`, a mechanism name) appears as a string literal only in `protocol/`
//!   or in test code, so each has one definition.
//!
//! This file itself is exempt from the reference check: its fixtures are made of offenders.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// The repository's design document: the numbered invariants live there.
pub const DESIGN_DOC: &str = "docs/design.md";
/// This file (its fixtures would trip the reference check).
const SELF: &str = "xtask/src/tidy.rs";
/// Directories never scanned.
const SKIP_DIRS: &[&str] = &["target", "node_modules"];
/// Files whose text is checked.
const TEXT_EXTENSIONS: &[&str] = &["rs", "md", "toml", "yaml", "yml"];

/// One offender: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Offence {
    pub path: String,
    pub line: usize,
    pub what: String,
}

impl fmt::Display for Offence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.what)
    }
}

/// Offenders as the failing test prints them, one per line.
pub fn report(offences: &[Offence]) -> String {
    offences.iter().map(|o| format!("  {o}\n")).collect()
}

/// The source tree as the checks see it: the text of every checked file and every path (files
/// and directories, `/`-separated, relative to the root) that exists.
#[derive(Debug, Default)]
pub struct Tree {
    texts: BTreeMap<String, String>,
    paths: BTreeSet<String>,
}

impl Tree {
    /// Reads the tree under `root`, skipping hidden entries and build output.
    pub fn from_disk(root: &Path) -> std::io::Result<Tree> {
        let mut tree = Tree::default();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || SKIP_DIRS.contains(&name.as_str()) {
                    continue;
                }
                let rel = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                tree.paths.insert(rel.clone());
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    stack.push((entry.path(), rel));
                } else if kind.is_file() && checked(&rel) {
                    let bytes = std::fs::read(entry.path())?;
                    tree.texts
                        .insert(rel, String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        Ok(tree)
    }

    /// A tree of in-memory files (for the checks' own tests).
    pub fn from_files(files: &[(&str, &str)]) -> Tree {
        let mut tree = Tree::default();
        for (path, text) in files {
            let mut prefix = String::new();
            for part in path.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                tree.paths.insert(prefix.clone());
            }
            if checked(path) {
                tree.texts.insert((*path).to_owned(), (*text).to_owned());
            }
        }
        tree
    }

    fn exists(&self, path: &str) -> bool {
        path.is_empty() || self.paths.contains(path)
    }

    fn text(&self, path: &str) -> Option<&str> {
        self.texts.get(path).map(String::as_str)
    }
}

fn checked(path: &str) -> bool {
    path.rsplit_once('.')
        .is_some_and(|(_, ext)| TEXT_EXTENSIONS.contains(&ext))
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

fn offence(path: &str, text: &str, at: usize, what: String) -> Offence {
    Offence {
        path: path.to_owned(),
        line: line_of(text, at),
        what,
    }
}

// ---------------------------------------------------------------------------------------------
// (a) and (b): references

/// Dead links and mentions of docs, sections and invariants that do not exist, and any pointer
/// outside the repository.
pub fn check_references(tree: &Tree) -> Vec<Offence> {
    let invariants = tree
        .text(DESIGN_DOC)
        .map(numbered_invariants)
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for (path, text) in &tree.texts {
        if path == SELF {
            continue;
        }
        let is_md = path.ends_with(".md");
        for (at, target) in markdown_links(text, is_md) {
            if let Some(what) = dead_target(tree, path, &target) {
                out.insert(offence(path, text, at, what));
            }
        }
        for (at, mention) in doc_mentions(text) {
            if let Some(what) = dead_mention(tree, path, &mention) {
                out.insert(offence(path, text, at, what));
            }
        }
        for (at, what) in outside_pointers(text) {
            out.insert(offence(path, text, at, what));
        }
        for (at, n) in invariant_numbers(text) {
            if !invariants.contains(&n) {
                out.insert(offence(
                    path,
                    text,
                    at,
                    format!("invariant {n} is not a numbered invariant of {DESIGN_DOC}"),
                ));
            }
        }
        if path == DESIGN_DOC {
            for (at, what) in missing_defenders(tree, text) {
                out.insert(offence(path, text, at, what));
            }
        }
        for at in numbered_mechanisms(text) {
            out.insert(offence(
                path,
                text,
                at,
                format!("mechanisms have names, not numbers (see {DESIGN_DOC}#mechanisms)"),
            ));
        }
    }
    out.into_iter().collect()
}

/// The invariant numbers of the design doc: the numbered items under `## Invariants`.
pub fn numbered_invariants(design: &str) -> BTreeSet<u32> {
    let mut inside = false;
    let mut found = BTreeSet::new();
    for line in design.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            inside = h.trim().eq_ignore_ascii_case("invariants");
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((n, _)) = line.split_once(". ") {
            if let Ok(n) = n.parse() {
                found.insert(n);
            }
        }
    }
    found
}

/// The tests the design doc names under its invariants (`` `file.rs`: `test_a`, `test_b` ``)
/// that do not exist: a missing file, or no `fn test_a` in it.
fn missing_defenders(tree: &Tree, design: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut file: Option<String> = None;
    for (line, at) in outside_fences(design) {
        if let Some(h) = line.strip_prefix("## ") {
            inside = h.trim().eq_ignore_ascii_case("invariants");
            file = None;
            continue;
        }
        if !inside {
            continue;
        }
        for (i, token) in line.split('`').enumerate().filter(|(i, _)| i % 2 == 1) {
            let token_at = at + line.split('`').take(i).map(|s| s.len() + 1).sum::<usize>();
            if token.ends_with(".rs") {
                if !tree.exists(token) {
                    out.push((
                        token_at,
                        format!("`{token}`: no such file in the repository"),
                    ));
                }
                file = Some(token.to_owned());
            } else if let Some(f) = &file {
                let is_fn_name = token.contains('_')
                    && token
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                let defined = tree.text(f).is_some_and(|t| {
                    t.contains(&format!("fn {token}(")) || t.contains(&format!("fn {token}<"))
                });
                if is_fn_name && tree.exists(f) && !defined {
                    out.push((token_at, format!("`{token}`: no such test in {f}")));
                }
            }
        }
    }
    out
}

/// The heading anchors of a markdown file, as GitHub renders them (fenced code skipped).
pub fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for (line, _) in outside_fences(markdown) {
        let trimmed = line.trim_start();
        let hashes = trimmed.bytes().take_while(|b| *b == b'#').count();
        if hashes == 0 || hashes > 6 || !trimmed[hashes..].starts_with(' ') {
            continue;
        }
        let slug = slug(&trimmed[hashes..]);
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Lines of a markdown text outside fenced code blocks, with their byte offsets.
fn outside_fences(markdown: &str) -> Vec<(&str, usize)> {
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    let mut at = 0;
    for line in markdown.split_inclusive('\n') {
        let t = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| t.starts_with(m));
        match (fence, marker) {
            (None, Some(m)) => fence = Some(m),
            (Some(f), Some(m)) if f == m => fence = None,
            (None, None) => out.push((line.trim_end_matches('\n'), at)),
            _ => {}
        }
        at += line.len();
    }
    out
}

/// `[text](target)` links. In Rust files only targets naming a `.md` file count (the rest are
/// intra-doc links).
fn markdown_links(text: &str, is_md: bool) -> Vec<(usize, String)> {
    let lines: Vec<(&str, usize)> = if is_md {
        outside_fences(text)
    } else {
        vec![(text, 0)]
    };
    let mut out = Vec::new();
    for (line, base) in lines {
        let mut from = 0;
        while let Some(i) = line[from..].find("](") {
            let start = from + i + 2;
            let rest = &line[start..];
            let end = rest.find([')', ' ', '\n']).unwrap_or(rest.len());
            let target = rest[..end].trim_matches(['<', '>']);
            from = start;
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            if !is_md && !target.contains(".md") {
                continue;
            }
            out.push((base + start, target.to_owned()));
        }
    }
    out
}

/// What is wrong with a link target of `from`, if anything.
fn dead_target(tree: &Tree, from: &str, target: &str) -> Option<String> {
    let (file, section) = match target.split_once('#') {
        Some((f, s)) => (f, Some(s)),
        None => (target, None),
    };
    let file = file.split('?').next().unwrap_or(file);
    let resolved = if file.is_empty() {
        from.to_owned()
    } else {
        join(parent(from), file)?
    };
    if !tree.exists(resolved.trim_end_matches('/')) {
        return Some(format!("`{target}`: no file {resolved}"));
    }
    dead_section(tree, &resolved, section, target)
}

fn dead_section(tree: &Tree, file: &str, section: Option<&str>, shown: &str) -> Option<String> {
    let section = section?;
    let text = tree.text(file)?;
    (!anchors(text).contains(section))
        .then(|| format!("`{shown}`: no heading #{section} in {file}"))
}

/// Mentions of repo docs in prose or code: `…docs/name.md`, `…/README.md`, `README.md#x`.
fn doc_mentions(text: &str) -> Vec<(usize, String)> {
    let path_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'/');
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(".md") {
        let dot = from + i;
        from = dot + 3;
        let mut start = dot;
        while start > 0 && path_char(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = dot + 3;
        if end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            continue; // `.mdx`, `.md_…`: not a markdown file name.
        }
        if end < bytes.len() && bytes[end] == b'#' {
            end += 1;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b'-'))
            {
                end += 1;
            }
        }
        let mention = &text[start..end];
        let file = &text[start..dot + 3];
        let in_url = start > 0 && bytes[start - 1] == b':' || mention.contains("//");
        // A markdown link's target is checked as a link.
        let link_target = text[..start].ends_with("](");
        let a_doc =
            file.starts_with("docs/") || file.contains("/docs/") || file.ends_with("README.md");
        if in_url || link_target || !a_doc || file == "README.md" && !mention.contains('#') {
            continue;
        }
        out.push((start, mention.to_owned()));
    }
    out
}

/// What is wrong with a mention in `from`, if anything. Paths resolve from the root or from
/// the mentioning file; a bare `README.md#x` from the nearest README up the tree.
fn dead_mention(tree: &Tree, from: &str, mention: &str) -> Option<String> {
    let (file, section) = match mention.split_once('#') {
        Some((f, s)) => (f, Some(s).filter(|s| !s.is_empty())),
        None => (mention, None),
    };
    let candidates: Vec<String> = if file == "README.md" {
        let mut dir = parent(from).to_owned();
        let mut found = Vec::new();
        loop {
            let readme = if dir.is_empty() {
                "README.md".to_owned()
            } else {
                format!("{dir}/README.md")
            };
            if tree.exists(&readme) {
                found.push(readme);
            }
            if dir.is_empty() {
                break;
            }
            dir = parent(&dir).to_owned();
        }
        found
    } else {
        [join("", file), join(parent(from), file)]
            .into_iter()
            .flatten()
            .filter(|p| tree.exists(p))
            .collect()
    };
    if candidates.is_empty() {
        return Some(format!("`{mention}`: no such file in the repository"));
    }
    let misses: Vec<String> = candidates
        .iter()
        .filter_map(|c| dead_section(tree, c, section, mention))
        .collect();
    (misses.len() == candidates.len()).then(|| misses.join("; "))
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// `dir` joined with a relative `path`, `.` and `..` resolved; `None` above the root.
fn join(dir: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Pointers at the team's design input, which lives outside the repository.
fn outside_pointers(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for needle in ["DESIGN.md", "shared/docs", "../shared"] {
        for (at, _) in text.match_indices(needle) {
            out.push((
                at,
                format!(
                    "`{needle}` is outside the repository: point at {DESIGN_DOC} or state the fact"
                ),
            ));
        }
    }
    out
}

/// Every number named by `invariant N` / `invariants N, M and K` (any case).
pub fn invariant_numbers(text: &str) -> Vec<(usize, u32)> {
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    for (at, word) in lower.match_indices("invariant") {
        let mut rest = &lower[at + word.len()..];
        rest = rest.strip_prefix('s').unwrap_or(rest);
        let Some(stripped) = rest.strip_prefix(' ') else {
            continue;
        };
        rest = stripped;
        loop {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                break;
            }
            if let Ok(n) = rest[..digits].parse() {
                out.push((at, n));
            }
            rest = &rest[digits..];
            let Some(next) = [", and ", ", ", " and ", " or ", ",", "/"]
                .into_iter()
                .find_map(|sep| rest.strip_prefix(sep))
            else {
                break;
            };
            rest = next;
        }
    }
    out
}

/// `mechanism N`: the design doc names its mechanisms instead.
fn numbered_mechanisms(text: &str) -> Vec<usize> {
    let lower = text.to_ascii_lowercase();
    lower
        .match_indices("mechanism ")
        .filter(|(at, m)| lower[at + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
        .map(|(at, _)| at)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// (c): wire strings

/// The wire strings that must be defined once, in `protocol`.
#[derive(Debug, Clone, Default)]
pub struct WireStrings {
    /// Exact values (case-insensitive: header names, paths).
    pub exact: BTreeSet<String>,
    /// Prefixes (case-insensitive) that mark a wire string: `/v1/`, `x-nanogate-`.
    pub prefixes: Vec<String>,
    /// Values that double as JSON keys or config fields (`exact`, `block`, `tagged`): a literal
    /// used as an object key or looked up by name is not the wire value.
    pub words: BTreeSet<String>,
    /// `(file, value)` pairs where the value means something else (a migration's name, a
    /// config field), each justified where the list is written.
    pub not_wire: BTreeSet<(String, String)>,
}

impl WireStrings {
    fn matches(&self, lit: &StrLit) -> bool {
        let lower = lit.value.to_ascii_lowercase();
        if self
            .exact
            .iter()
            .any(|e| e.eq_ignore_ascii_case(&lit.value))
            || self
                .prefixes
                .iter()
                .any(|p| lower.starts_with(&p.to_ascii_lowercase()))
        {
            return true;
        }
        self.words.contains(&lit.value) && !lit.is_key
    }
}

/// Wire strings as string literals in non-test Rust code outside `protocol/`.
pub fn check_wire_literals(tree: &Tree, wire: &WireStrings) -> Vec<Offence> {
    let mut test_files = BTreeSet::new();
    let mut scans = Vec::new();
    for (path, text) in &tree.texts {
        if !path.ends_with(".rs") || path.starts_with("protocol/") || in_test_dir(path) {
            continue;
        }
        let scan = scan_rust(text);
        for module in &scan.test_modules {
            for child in child_module_paths(path, module) {
                test_files.insert(child);
            }
        }
        scans.push((path, text, scan));
    }
    let mut out = Vec::new();
    for (path, text, scan) in scans {
        if test_files.contains(path.as_str()) {
            continue;
        }
        let not_wire = |l: &StrLit| wire.not_wire.contains(&(path.clone(), l.value.clone()));
        for lit in scan
            .literals
            .iter()
            .filter(|l| wire.matches(l) && !not_wire(l))
        {
            out.push(offence(
                path,
                text,
                lit.at,
                format!(
                    "wire string \"{}\" as a literal: use protocol's constant",
                    lit.value
                ),
            ));
        }
    }
    out
}

fn in_test_dir(path: &str) -> bool {
    path.split('/')
        .rev()
        .skip(1)
        .any(|dir| matches!(dir, "tests" | "benches" | "examples"))
}

/// Where `mod name;` declared in `file` lives.
fn child_module_paths(file: &str, name: &str) -> Vec<String> {
    let dir = parent(file);
    let stem = file
        .rsplit('/')
        .next()
        .unwrap_or(file)
        .trim_end_matches(".rs");
    let base = if matches!(stem, "mod" | "lib" | "main") {
        dir.to_owned()
    } else if dir.is_empty() {
        stem.to_owned()
    } else {
        format!("{dir}/{stem}")
    };
    vec![format!("{base}/{name}.rs"), format!("{base}/{name}/mod.rs")]
}

/// A string literal in Rust code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrLit {
    /// Byte offset of the literal.
    pub at: usize,
    /// The contents between the quotes, escapes left as written.
    pub value: String,
    /// Used as an object key (`"k": v`) or looked up by name (`.get("k")`, `x["k"]`).
    pub is_key: bool,
}

/// What [`scan_rust`] finds outside comments and `#[cfg(test)]` items.
#[derive(Debug, Default)]
pub struct RustScan {
    pub literals: Vec<StrLit>,
    /// `#[cfg(test)] mod name;` declarations: those files are test code.
    pub test_modules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(StrLit),
    Word(String),
    Punct(char),
}

/// Lexes Rust source into words, punctuation and string literals (comments, char literals
/// and lifetimes dropped). Good enough for this check; not a full lexer.
fn lex(src: &str) -> Vec<(usize, Tok)> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if src[i..].starts_with("//") {
            i = src[i..].find('\n').map_or(b.len(), |n| i + n);
        } else if src[i..].starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if src[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if src[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some((prefix, hashes)) = raw_string_start(&src[i..]) {
            let body = i + prefix + hashes + 1;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = src[body..].find(&close).map_or(b.len(), |n| body + n);
            toks.push((
                i,
                Tok::Str(StrLit {
                    at: i,
                    value: src[body..end].to_owned(),
                    is_key: false,
                }),
            ));
            i = (end + close.len()).min(b.len());
        } else if c == b'"'
            || (c == b'b' || c == b'c') && b.get(i + 1) == Some(&b'"') && !ident_before(b, i)
        {
            let start = if c == b'"' { i + 1 } else { i + 2 };
            let mut j = start;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(b.len());
            toks.push((
                i,
                Tok::Str(StrLit {
                    at: i,
                    value: src[start..end].to_owned(),
                    is_key: false,
                }),
            ));
            i = end + 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let close = src[i + 2..].find('\'').map_or(b.len(), |n| i + 2 + n);
                i = close + 1;
            } else {
                let ch_len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                if b.get(i + 1 + ch_len) == Some(&b'\'') {
                    i += ch_len + 2;
                } else {
                    i += 1;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            toks.push((start, Tok::Word(src[start..i].to_owned())));
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else {
            let ch = src[i..].chars().next().unwrap_or(' ');
            toks.push((i, Tok::Punct(ch)));
            i += ch.len_utf8();
        }
    }
    toks
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `r"`, `r#"`, `br##"`…: (letters before the hashes, number of hashes).
fn raw_string_start(s: &str) -> Option<(usize, usize)> {
    let prefix = if s.starts_with("br") || s.starts_with("cr") {
        2
    } else if s.starts_with('r') {
        1
    } else {
        return None;
    };
    let hashes = s[prefix..].bytes().take_while(|b| *b == b'#').count();
    (s.as_bytes().get(prefix + hashes) == Some(&b'"')).then_some((prefix, hashes))
}

/// Lookups by name: a literal passed to one of these (or indexed with `[..]`) is a key.
fn is_key_lookup(word: &str) -> bool {
    matches!(
        word,
        "get"
            | "get_mut"
            | "contains_key"
            | "remove"
            | "try_get"
            | "insert"
            | "entry"
            | "at"
            | "pointer"
    ) || word.starts_with("opt_")
        || word.starts_with("req_")
}

/// String literals outside `#[cfg(test)]` items, and the `#[cfg(test)] mod x;` names.
pub fn scan_rust(src: &str) -> RustScan {
    let toks = lex(src);
    let mut scan = RustScan::default();
    let mut i = 0;
    while i < toks.len() {
        if let Some(after) = cfg_test_attr(&toks, i) {
            i = skip_item(&toks, after, &mut scan.test_modules);
            continue;
        }
        if let Tok::Str(lit) = &toks[i].1 {
            let next = toks.get(i + 1).map(|t| &t.1);
            let next2 = toks.get(i + 2).map(|t| &t.1);
            let as_field = next == Some(&Tok::Punct(':')) && next2 != Some(&Tok::Punct(':'));
            let prev = i.checked_sub(1).map(|p| &toks[p].1);
            let prev2 = i.checked_sub(2).map(|p| &toks[p].1);
            // `x["k"]` indexes; `&["k"]`, `= ["k"]` are arrays of values.
            let indexed = prev == Some(&Tok::Punct('['))
                && matches!(prev2, Some(Tok::Word(_) | Tok::Punct(')' | ']')));
            let looked_up = indexed
                || prev == Some(&Tok::Punct('('))
                    && matches!(prev2, Some(Tok::Word(w)) if is_key_lookup(w));
            scan.literals.push(StrLit {
                is_key: as_field || looked_up,
                ..lit.clone()
            });
        }
        i += 1;
    }
    scan
}

/// If `toks[i..]` starts `#[cfg(…test…)]` (not `not(test)`), the index after the `]`.
fn cfg_test_attr(toks: &[(usize, Tok)], i: usize) -> Option<usize> {
    let word = |k: usize, w: &str| matches!(toks.get(k), Some((_, Tok::Word(x))) if x == w);
    let punct = |k: usize, c: char| matches!(toks.get(k), Some((_, Tok::Punct(x))) if *x == c);
    if !(punct(i, '#') && punct(i + 1, '[') && word(i + 2, "cfg")) {
        return None;
    }
    let end = matching(toks, i + 1)?;
    let words: Vec<&str> = toks[i + 2..end]
        .iter()
        .filter_map(|(_, t)| match t {
            Tok::Word(w) => Some(w.as_str()),
            _ => None,
        })
        .collect();
    (words.contains(&"test") && !words.contains(&"not")).then_some(end + 1)
}

/// The index of the bracket closing the one at `open`.
fn matching(toks: &[(usize, Tok)], open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, (_, t)) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Skips the item starting at `i` (after its attributes); records `mod name;`.
fn skip_item(toks: &[(usize, Tok)], mut i: usize, test_modules: &mut Vec<String>) -> usize {
    while matches!(toks.get(i), Some((_, Tok::Punct('#')))) {
        match toks.get(i + 1).and_then(|_| matching(toks, i + 1)) {
            Some(end) => i = end + 1,
            None => return toks.len(),
        }
    }
    let mut k = i;
    while let Some((_, t)) = toks.get(k) {
        match t {
            Tok::Punct(';') => {
                if let [(_, Tok::Word(m)), (_, Tok::Word(name)), ..] = &toks[k.saturating_sub(2)..]
                {
                    if m == "mod" {
                        test_modules.push(name.clone());
                    }
                }
                return k + 1;
            }
            Tok::Punct('{') => return matching(toks, k).map_or(toks.len(), |e| e + 1),
            Tok::Punct('(' | '[') => k = matching(toks, k).map_or(toks.len(), |e| e + 1),
            _ => k += 1,
        }
    }
    toks.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN: &str = "# Design\n\n## Invariants\n\n1. **One**: x.\n   - `t/a.rs`: `defends_one`\n2. **Two**: y.\n\n## Mechanisms\n\nSigned block.\n";

    fn whats(offences: &[Offence]) -> Vec<String> {
        offences.iter().map(ToString::to_string).collect()
    }

    fn refs(files: &[(&str, &str)]) -> Vec<String> {
        let mut all = vec![
            (DESIGN_DOC, DESIGN),
            ("t/a.rs", "#[test]\nfn defends_one() {}\n"),
        ];
        all.extend_from_slice(files);
        whats(&check_references(&Tree::from_files(&all)))
    }

    #[test]
    fn a_clean_tree_passes() {
        let found = refs(&[
            ("README.md", "# Top\n\n## How it works\n\nSee [design](docs/design.md#invariants) and docs/design.md#mechanisms.\n"),
            ("client/README.md", "# Client\n\nBack to [top](../README.md#how-it-works). Keeps invariant 1 and invariants 1 and 2.\n"),
            ("client/src/lib.rs", "//! See `client/README.md` and README.md#client, or https://example.com/docs/x.md.\n"),
        ]);
        assert_eq!(found, Vec::<String>::new());
    }

    #[test]
    fn dead_links_and_sections_are_reported() {
        let found = refs(&[
            ("README.md", "# Top\n\n[gone](docs/gone.md) and [bad](docs/design.md#nowhere) and [self](#top) and [bad self](#missing)\n"),
        ]);
        assert_eq!(
            found,
            [
                "README.md:3: `#missing`: no heading #missing in README.md",
                "README.md:3: `docs/design.md#nowhere`: no heading #nowhere in docs/design.md",
                "README.md:3: `docs/gone.md`: no file docs/gone.md",
            ]
        );
    }

    #[test]
    fn mentions_of_missing_docs_are_reported() {
        let found = refs(&[
            ("README.md", "# Top\n"),
            ("sidecar/src/x.rs", "// see docs/envoy.md gotcha 11\n// and README.md#nothing\n// and filter/README.md\n"),
        ]);
        assert_eq!(
            found,
            [
                "sidecar/src/x.rs:1: `docs/envoy.md`: no such file in the repository",
                "sidecar/src/x.rs:2: `README.md#nothing`: no heading #nothing in README.md",
                "sidecar/src/x.rs:3: `filter/README.md`: no such file in the repository",
            ]
        );
    }

    #[test]
    fn links_in_code_blocks_are_not_links() {
        let found = refs(&[(
            "README.md",
            "# Top\n\n```\n[x](nowhere.md)\n# not a heading\n```\n[y](#not-a-heading)\n",
        )]);
        assert_eq!(
            found,
            ["README.md:7: `#not-a-heading`: no heading #not-a-heading in README.md"]
        );
    }

    #[test]
    fn pointers_outside_the_repo_and_unknown_numbers_are_reported() {
        let found = refs(&[(
            "a.rs",
            "// DESIGN.md\n// shared/docs/nano.md\n// ../shared/x\n// invariant 3\n// Invariants 1, 2 and 12\n// mechanism 2\n",
        )]);
        assert_eq!(found.len(), 7, "{found:#?}");
        assert!(found[0].starts_with("a.rs:1: `DESIGN.md` is outside"));
        assert!(found[1].starts_with("a.rs:2: `shared/docs/nano.md`: no such file"));
        assert!(found[2].starts_with("a.rs:2: `shared/docs` is outside"));
        assert!(found[3].starts_with("a.rs:3: `../shared` is outside"));
        assert_eq!(
            found[4],
            "a.rs:4: invariant 3 is not a numbered invariant of docs/design.md"
        );
        assert_eq!(
            found[5],
            "a.rs:5: invariant 12 is not a numbered invariant of docs/design.md"
        );
        assert!(found[6].starts_with("a.rs:6: mechanisms have names"));
    }

    #[test]
    fn tests_named_by_the_design_doc_must_exist() {
        let design = "## Invariants\n\n1. **One**.\n   - `t/a.rs`: `defends_one`,\n     `gone_test`\n   - `t/b.rs`: `x_y`\n";
        let tree = Tree::from_files(&[(DESIGN_DOC, design), ("t/a.rs", "fn defends_one() {}")]);
        assert_eq!(
            whats(&check_references(&tree)),
            [
                "docs/design.md:5: `gone_test`: no such test in t/a.rs",
                "docs/design.md:6: `t/b.rs`: no such file in the repository",
            ]
        );
    }

    #[test]
    fn invariant_lists_and_slugs() {
        let n: Vec<u32> =
            invariant_numbers("invariants 1, 4, and 10; invariant 7: x; invariants are")
                .into_iter()
                .map(|(_, n)| n)
                .collect();
        assert_eq!(n, [1, 4, 10, 7]);
        assert_eq!(numbered_invariants(DESIGN), BTreeSet::from([1, 2]));
        let a = anchors("# Filter ↔ sidecar contract\n## `POST /v1/pay`\n## Notes\n## Notes\n");
        assert!(a.contains("filter--sidecar-contract"), "{a:?}");
        assert!(a.contains("post-v1pay"), "{a:?}");
        assert!(a.contains("notes-1"), "{a:?}");
    }

    fn wire() -> WireStrings {
        WireStrings {
            exact: ["PAYMENT-SIGNATURE", "/v1/pay"].map(String::from).into(),
            prefixes: vec!["x-nanogate-".into()],
            words: ["exact", "XNO", "tagged"].map(String::from).into(),
            not_wire: [("filter/src/other.rs".to_owned(), "tagged".to_owned())].into(),
        }
    }

    fn literals(files: &[(&str, &str)]) -> Vec<String> {
        whats(&check_wire_literals(&Tree::from_files(files), &wire()))
    }

    #[test]
    fn wire_literals_outside_protocol_and_tests_are_reported() {
        let src = r##"
// "exact" in a comment is fine
const H: &str = "payment-signature";
fn f(v: &serde_json::Value) {
    let _ = json!({"exact": 1, "scheme": "exact"});
    let _ = v.get("tagged");
    let _ = v["XNO"];
    const NAMES: &[&str] = &["tagged", "other"];
    let _ = r#"x-nanogate-secret"#;
    let _ = 'a'; let _: &'static str = "/v1/pay";
}
#[cfg(test)]
mod tests { const T: &str = "exact"; }
#[cfg(test)]
mod more;
"##;
        let found = literals(&[
            ("filter/src/lib.rs", src),
            ("filter/src/more.rs", "const X: &str = \"XNO\";"),
            ("filter/src/other.rs", "const M: &str = \"tagged\";"),
            ("filter/tests/it.rs", "const X: &str = \"XNO\";"),
            ("protocol/src/lib.rs", "pub const SCHEME: &str = \"exact\";"),
        ]);
        assert_eq!(
            found,
            [
                "filter/src/lib.rs:3: wire string \"payment-signature\" as a literal: use protocol's constant",
                "filter/src/lib.rs:5: wire string \"exact\" as a literal: use protocol's constant",
                "filter/src/lib.rs:8: wire string \"tagged\" as a literal: use protocol's constant",
                "filter/src/lib.rs:9: wire string \"x-nanogate-secret\" as a literal: use protocol's constant",
                "filter/src/lib.rs:10: wire string \"/v1/pay\" as a literal: use protocol's constant",
            ]
        );
    }

    #[test]
    fn cfg_test_items_of_every_shape_are_skipped() {
        let scan = scan_rust(
            "#[cfg(test)]\n#[allow(x)]\nfn t() { \"a\"; }\n#[cfg(all(test, feature = \"pow\"))]\nuse x::y;\n#[cfg(not(test))]\nconst B: &str = \"b\";\n",
        );
        let values: Vec<&str> = scan.literals.iter().map(|l| l.value.as_str()).collect();
        assert_eq!(values, ["b"]);
    }
}
