//! A small regular-expression matcher for route paths.
//!
//! Why not the `regex` or `regex-lite` crate: the filter module must stay under 400 KB and
//! `regex-lite` alone costs ~35 KB of it, for features a path pattern never needs (Unicode,
//! captures, search). This matcher compiles the common syntax to a Thompson NFA and runs it as
//! a Pike VM over bytes, so matching is linear in the path length times the pattern size,
//! whatever the pattern (no ReDoS). It is differentially tested against `regex-lite`.
//!
//! Supported: literals; `.` (any byte); classes `[a-z0-9_-]`, `[^/]`; escapes `\d \D \w \W \s
//! \S` and escaped punctuation (`\.`, `\/`, …), `\t \n \r`; groups `(…)` and `(?:…)`;
//! alternation `|`; repetition `* + ? {m} {m,} {m,n}` (a lazy `?` suffix is accepted and means
//! the same, since only match/no-match matters). The whole path must match: `^` and `$` are
//! implied and allowed only at the very start and end. Matching is on bytes: paths arrive
//! percent-encoded, so they are ASCII.

use std::fmt;

/// Largest compiled program (instructions); bounds memory and matching time.
const MAX_INSTS: usize = 10_000;
/// Largest counted repetition.
const MAX_REPEAT: u32 = 256;
/// Deepest group nesting.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn perr<T>(msg: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError(msg.into()))
}

/// A set of bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);

    fn add(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn add_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.add(b);
        }
    }

    fn union(&mut self, other: &ByteSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }

    fn negate(&mut self) {
        for a in &mut self.0 {
            *a = !*a;
        }
    }

    /// Adds the other ASCII case of every letter in the set.
    fn fold_case(&mut self) {
        for b in (b'a'..=b'z').chain(b'A'..=b'Z') {
            if self.contains(b) {
                self.add(b ^ 0x20);
            }
        }
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    fn one(b: u8) -> ByteSet {
        let mut s = ByteSet::EMPTY;
        s.add(b);
        s
    }

    fn of_class(c: u8) -> Option<ByteSet> {
        let mut s = ByteSet::EMPTY;
        match c.to_ascii_lowercase() {
            b'd' => s.add_range(b'0', b'9'),
            b'w' => {
                s.add_range(b'0', b'9');
                s.add_range(b'a', b'z');
                s.add_range(b'A', b'Z');
                s.add(b'_');
            }
            b's' => {
                for b in [b' ', b'\t', b'\n', b'\r', 0x0b, 0x0c] {
                    s.add(b);
                }
            }
            _ => return None,
        }
        if c.is_ascii_uppercase() {
            s.negate();
        }
        Some(s)
    }
}

#[derive(Clone)]
enum Node {
    Empty,
    Set(ByteSet),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

struct Parser<'a> {
    p: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.p.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += 1;
        c
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn alt(&mut self) -> Result<Node, PatternError> {
        let mut branches = vec![self.concat()?];
        while self.eat(b'|') {
            branches.push(self.concat()?);
        }
        Ok(if branches.len() == 1 {
            branches.pop().unwrap_or(Node::Empty)
        } else {
            Node::Alt(branches)
        })
    }

    fn concat(&mut self) -> Result<Node, PatternError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == b'|' || c == b')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.repeats(atom)?);
        }
        Ok(Node::Concat(items))
    }

    fn repeats(&mut self, mut node: Node) -> Result<Node, PatternError> {
        loop {
            let (min, max) = match self.peek() {
                Some(b'*') => (0, None),
                Some(b'+') => (1, None),
                Some(b'?') => (0, Some(1)),
                Some(b'{') => {
                    self.i += 1;
                    let r = self.counted()?;
                    self.i -= 1;
                    r
                }
                _ => return Ok(node),
            };
            self.i += 1;
            self.eat(b'?'); // lazy: same match/no-match
            node = Node::Repeat {
                node: Box::new(node),
                min,
                max,
            };
        }
    }

    /// After `{`: `m}`, `m,}` or `m,n}`. Leaves the cursor on the `}`'s successor minus one.
    fn counted(&mut self) -> Result<(u32, Option<u32>), PatternError> {
        let min = self.number()?;
        let max = if self.eat(b',') {
            if self.peek() == Some(b'}') {
                None
            } else {
                Some(self.number()?)
            }
        } else {
            Some(min)
        };
        if !self.eat(b'}') {
            return perr("unclosed counted repetition {…}");
        }
        if max.is_some_and(|m| m < min) {
            return perr("repetition {m,n} with n < m");
        }
        Ok((min, max))
    }

    fn number(&mut self) -> Result<u32, PatternError> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let digits = self.p.get(start..self.i).unwrap_or_default();
        match std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        {
            Some(n) if n <= MAX_REPEAT => Ok(n),
            Some(_) => perr(format!("repetition count above {MAX_REPEAT}")),
            None => perr("expected a number in {…}"),
        }
    }

    fn atom(&mut self) -> Result<Node, PatternError> {
        match self.next() {
            Some(b'(') => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return perr("groups nested too deeply");
                }
                if self.eat(b'?') && !self.eat(b':') {
                    return perr("only (…) and (?:…) groups are supported");
                }
                let inner = self.alt()?;
                if !self.eat(b')') {
                    return perr("unclosed group");
                }
                self.depth -= 1;
                Ok(inner)
            }
            Some(b')') => perr("unopened group"),
            Some(b'[') => self.class().map(Node::Set),
            Some(b'.') => {
                let mut all = ByteSet::EMPTY;
                all.negate();
                Ok(Node::Set(all))
            }
            Some(b'\\') => self.escape().map(Node::Set),
            Some(b'*' | b'+' | b'?' | b'{') => perr("repetition with nothing to repeat"),
            Some(b'^' | b'$') => perr("^ and $ are allowed only at the start and end"),
            Some(c) => Ok(Node::Set(ByteSet::one(c))),
            None => perr("unexpected end of pattern"),
        }
    }

    fn escape(&mut self) -> Result<ByteSet, PatternError> {
        match self.next() {
            Some(b't') => Ok(ByteSet::one(b'\t')),
            Some(b'n') => Ok(ByteSet::one(b'\n')),
            Some(b'r') => Ok(ByteSet::one(b'\r')),
            Some(c) if c.is_ascii_alphanumeric() => ByteSet::of_class(c)
                .map_or_else(|| perr(format!("unsupported escape \\{}", c as char)), Ok),
            Some(c) if c.is_ascii() => Ok(ByteSet::one(c)),
            _ => perr("bad escape"),
        }
    }

    /// After `[`.
    fn class(&mut self) -> Result<ByteSet, PatternError> {
        let negate = self.eat(b'^');
        let mut set = ByteSet::EMPTY;
        let mut first = true;
        loop {
            let c = match self.next() {
                None => return perr("unclosed class […]"),
                Some(b']') if !first => break,
                Some(c) => c,
            };
            first = false;
            let lo = if c == b'\\' {
                let s = self.escape()?;
                // A class escape (\d) cannot start a range; a single byte can.
                if s.0.iter().map(|w| w.count_ones()).sum::<u32>() != 1 {
                    set.union(&s);
                    continue;
                }
                (0..=255u8).find(|&b| s.contains(b)).unwrap_or(0)
            } else {
                c
            };
            if self.peek() == Some(b'-') && self.p.get(self.i + 1).is_some_and(|&n| n != b']') {
                self.i += 1;
                let hi = match self.next() {
                    Some(b'\\') => {
                        let s = self.escape()?;
                        match (0..=255u8).filter(|&b| s.contains(b)).collect::<Vec<_>>()[..] {
                            [one] => one,
                            _ => return perr("a class escape cannot end a range"),
                        }
                    }
                    Some(h) => h,
                    None => return perr("unclosed class […]"),
                };
                if hi < lo {
                    return perr("class range out of order");
                }
                set.add_range(lo, hi);
            } else {
                set.add(lo);
            }
        }
        if negate {
            set.negate();
        }
        Ok(set)
    }
}

#[derive(Clone, Copy)]
enum Inst {
    Set(usize),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A compiled path pattern.
#[derive(Clone)]
pub struct PathRegex {
    source: String,
    insts: Vec<Inst>,
    sets: Vec<ByteSet>,
}

impl fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathRegex({:?})", self.source)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

struct Compiler {
    insts: Vec<Inst>,
    sets: Vec<ByteSet>,
}

impl Compiler {
    fn push(&mut self, i: Inst) -> Result<usize, PatternError> {
        if self.insts.len() >= MAX_INSTS {
            return perr("pattern too large once compiled");
        }
        self.insts.push(i);
        Ok(self.insts.len() - 1)
    }

    fn patch(&mut self, at: usize, i: Inst) {
        if let Some(slot) = self.insts.get_mut(at) {
            *slot = i;
        }
    }

    fn node(&mut self, n: &Node) -> Result<(), PatternError> {
        match n {
            Node::Empty => Ok(()),
            Node::Set(s) => {
                let idx = match self.sets.iter().position(|x| x == s) {
                    Some(i) => i,
                    None => {
                        self.sets.push(*s);
                        self.sets.len() - 1
                    }
                };
                self.push(Inst::Set(idx)).map(|_| ())
            }
            Node::Concat(items) => items.iter().try_for_each(|i| self.node(i)),
            Node::Alt(branches) => {
                let mut jumps = Vec::new();
                for (k, b) in branches.iter().enumerate() {
                    if k + 1 < branches.len() {
                        let split = self.push(Inst::Jmp(0))?;
                        self.node(b)?;
                        jumps.push(self.push(Inst::Jmp(0))?);
                        let next = self.insts.len();
                        self.patch(split, Inst::Split(split + 1, next));
                    } else {
                        self.node(b)?;
                    }
                }
                let end = self.insts.len();
                for j in jumps {
                    self.patch(j, Inst::Jmp(end));
                }
                Ok(())
            }
            Node::Repeat { node, min, max } => {
                for _ in 0..*min {
                    self.node(node)?;
                }
                match max {
                    None => {
                        let split = self.push(Inst::Jmp(0))?;
                        self.node(node)?;
                        self.push(Inst::Jmp(split))?;
                        let end = self.insts.len();
                        self.patch(split, Inst::Split(split + 1, end));
                    }
                    Some(max) => {
                        let mut splits = Vec::new();
                        for _ in *min..*max {
                            splits.push(self.push(Inst::Jmp(0))?);
                            self.node(node)?;
                        }
                        let end = self.insts.len();
                        for s in splits {
                            self.patch(s, Inst::Split(s + 1, end));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl PathRegex {
    pub fn new(pattern: &str) -> Result<PathRegex, PatternError> {
        let body = pattern.strip_prefix('^').unwrap_or(pattern);
        // A trailing `$` is an anchor unless escaped (`\$`).
        let body = match body.strip_suffix('$') {
            Some(b) if !b.ends_with('\\') || b.ends_with("\\\\") => b,
            _ => body,
        };
        let mut parser = Parser {
            p: body.as_bytes(),
            i: 0,
            depth: 0,
        };
        let ast = parser.alt()?;
        if parser.i < parser.p.len() {
            return perr("unopened group");
        }
        let mut c = Compiler {
            insts: Vec::new(),
            sets: Vec::new(),
        };
        c.node(&ast)?;
        c.push(Inst::Match)?;
        Ok(PathRegex {
            source: pattern.to_owned(),
            insts: c.insts,
            sets: c.sets,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The same pattern matching ASCII letters in either case: a text matches iff some
    /// upper/lower-case spelling of it matches the original pattern (so `[^a-z]` folds to any
    /// byte: only ever more matches, never fewer).
    pub fn case_folded(mut self) -> PathRegex {
        for set in &mut self.sets {
            set.fold_case();
        }
        self
    }

    /// Whether the whole of `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        let n = self.insts.len();
        let mut clist: Vec<usize> = Vec::with_capacity(n);
        let mut nlist: Vec<usize> = Vec::with_capacity(n);
        let mut mark: Vec<usize> = vec![usize::MAX; n];
        let mut stack: Vec<usize> = Vec::new();
        self.add(&mut clist, &mut mark, &mut stack, 0, 0);
        for (pos, &b) in text.as_bytes().iter().enumerate() {
            if clist.is_empty() {
                return false;
            }
            nlist.clear();
            for &pc in &clist {
                if let Some(Inst::Set(s)) = self.insts.get(pc) {
                    if self.sets.get(*s).is_some_and(|set| set.contains(b)) {
                        self.add(&mut nlist, &mut mark, &mut stack, pc + 1, pos + 1);
                    }
                }
            }
            std::mem::swap(&mut clist, &mut nlist);
        }
        clist
            .iter()
            .any(|&pc| matches!(self.insts.get(pc), Some(Inst::Match)))
    }

    /// Adds `pc` and its epsilon closure to `list` (each pc once per `generation`).
    fn add(
        &self,
        list: &mut Vec<usize>,
        mark: &mut [usize],
        stack: &mut Vec<usize>,
        pc: usize,
        generation: usize,
    ) {
        stack.push(pc);
        while let Some(pc) = stack.pop() {
            match mark.get_mut(pc) {
                Some(m) if *m != generation => *m = generation,
                _ => continue,
            }
            match self.insts.get(pc) {
                Some(Inst::Jmp(t)) => stack.push(*t),
                Some(Inst::Split(a, b)) => {
                    stack.push(*b);
                    stack.push(*a);
                }
                Some(_) => list.push(pc),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        PathRegex::new(p).unwrap().is_match(t)
    }

    #[test]
    fn basics() {
        assert!(m("/items/[0-9]+", "/items/12"));
        assert!(!m("/items/[0-9]+", "/items/"));
        assert!(!m("/items/[0-9]+", "/items/12/x"));
        assert!(m("^/a/(b|cd)*/?$", "/a/bcdb/"));
        assert!(m("/a/(?:b|cd)*", "/a/"));
        assert!(m("/v[12]/\\w+\\.json", "/v2/report_1.json"));
        assert!(!m("/v[12]/\\w+\\.json", "/v2/report_1xjson"));
        assert!(m("/x{2,3}", "/xxx"));
        assert!(!m("/x{2,3}", "/xxxx"));
        assert!(m("/x{2}", "/xx"));
        assert!(m("/x{2,}", "/xxxxx"));
        assert!(m("/[^/]+/end", "/abc/end"));
        assert!(!m("/[^/]+/end", "/a/b/end"));
        assert!(m("/.*", "/anything/at/all"));
        assert!(m("", ""));
        assert!(m("a|", ""));
        assert!(m("(a*)*b", "aaab"));
        assert!(m("[]a]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("/price\\$", "/price$"));
        assert!(m("/a+?", "/aa"));
        assert!(m("[\\d_]+", "1_2"));
    }

    #[test]
    fn errors() {
        for bad in [
            "(", ")", "a)", "[a", "*a", "a{2,1}", "a{999}", "a{", "\\q", "a^b", "[b-a]", "(?=a)",
            "\\",
        ] {
            assert!(PathRegex::new(bad).is_err(), "{bad}");
        }
        let deep = "(".repeat(100) + &")".repeat(100);
        assert!(PathRegex::new(&deep).is_err());
        assert!(
            PathRegex::new("(a{100}){100}").is_err(),
            "too large once compiled"
        );
    }

    #[test]
    fn case_folded_matches_any_case_spelling() {
        let re = PathRegex::new("/Items/[a-c0-9]+/x").unwrap().case_folded();
        for t in ["/items/12/x", "/ITEMS/Ab1/X", "/iTeMs/c/x"] {
            assert!(re.is_match(t), "{t}");
        }
        for t in ["/items/d/x", "/items//x", "/items/1/y"] {
            assert!(!re.is_match(t), "{t}");
        }
        // Folding never loses a match the original had.
        assert!(PathRegex::new("[^a-z]")
            .unwrap()
            .case_folded()
            .is_match("q"));
        assert!(!PathRegex::new("/Items").unwrap().is_match("/items"));
    }

    #[test]
    fn pathological_patterns_stay_linear() {
        let re = PathRegex::new("(a*)*(a|aa)*b").unwrap();
        let text = "a".repeat(20_000);
        let started = std::time::Instant::now();
        assert!(!re.is_match(&text));
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    fn reference(p: &str) -> Option<regex_lite::Regex> {
        regex_lite::Regex::new(&format!("^(?:{p})$")).ok()
    }

    #[test]
    fn agrees_with_regex_lite_on_every_short_text() {
        let patterns = [
            "a*b",
            "(a|b)*",
            "a+b?",
            "(ab|a)(b|)",
            "[^a]*",
            "a{2,3}b*",
            "(a*)*",
            "(a|ab)(c|bcd)?",
            "/[a-c]+/?",
            "\\w{1,2}\\d",
            ".a.",
            "(?:a|b|)c{0,1}",
            "a?a?aa",
            "[-a]b",
            "(a+|b+)+",
        ];
        let alphabet = ['a', 'b', 'c', '/', '1', '_', '-'];
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
            texts.dedup();
        }
        for p in patterns {
            let ours = PathRegex::new(p).unwrap();
            let theirs = reference(p).unwrap();
            for t in &texts {
                assert_eq!(ours.is_match(t), theirs.is_match(t), "{p} on {t:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Differential test against regex-lite over a small alphabet.
        #[test]
        fn agrees_with_regex_lite(
            pattern in "([ab/.]|\\[\\^?[ab/]{1,3}\\]|\\((\\?:)?|\\)|\\||[*+?]|\\{[0-3](,[0-3]?)?\\}|\\\\d|\\\\w|[0-9]){0,10}",
            text in "[ab/0-9_]{0,12}",
        ) {
            let ours = PathRegex::new(&pattern);
            if let (Ok(ours), Some(theirs)) = (ours, reference(&pattern)) {
                proptest::prop_assert_eq!(ours.is_match(&text), theirs.is_match(&text), "{} on {}", pattern, text);
            }
        }

        /// Folded matching is matching some case spelling: differential against regex-lite's
        /// `(?i)` on patterns without negated classes (where the two definitions agree).
        #[test]
        fn case_folded_agrees_with_regex_lite_case_insensitive(
            pattern in "([aB/.]|\\[[aBc/]{1,3}\\]|\\(|\\)|\\||[*+?]|\\\\w){0,10}",
            text in "[aAbBcC/0-9_]{0,12}",
        ) {
            let ours = PathRegex::new(&pattern).map(PathRegex::case_folded);
            let theirs = regex_lite::Regex::new(&format!("^(?i:{pattern})$")).ok();
            if let (Ok(ours), Some(theirs)) = (ours, theirs) {
                proptest::prop_assert_eq!(ours.is_match(&text), theirs.is_match(&text), "{} on {}", pattern, text);
            }
        }

        #[test]
        fn arbitrary_patterns_never_panic(pattern in ".{0,40}", text in ".{0,40}") {
            if let Ok(re) = PathRegex::new(&pattern) {
                let _ = re.is_match(&text);
            }
        }
    }
}
