//! WAF: an ordered rule set of regexes and literals over the prompt; the first rule (in
//! rule order) that matches anywhere wins.
//!
//! Patterns mean what they mean to Python `re` (the Python twin). Where the `regex` crate
//! reads the same text differently, the pattern is translated so both twins agree:
//! `\s` also matches U+001C..U+001F, `\w` is `[\p{L}\p{N}_]`, `\b`/`\B` are boundaries of
//! that `\w`, `$` also matches before a final newline and `\Z` is the end of the text.
//! Backreferences, lookaround, conditionals, atomic groups and possessive quantifiers are
//! rejected at construction (Python has them, `regex` has not), with the same test as the
//! Python twin (`_UNSHARED`). Literals are substring tests; case-insensitive literals fold
//! ASCII letters only (aho-corasick's `ascii_case_insensitive`).
use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use std::sync::OnceLock;

/// The Python twin's `_UNSHARED`, applied to the raw pattern text.
const UNSHARED: &str = r"\\[1-9]|\(\?[=!]|\(\?<[=!]|\(\?P=|\(\?>|\(\?\(|[*+?}]\+|\\[ZAG]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    Regex,
    Literal,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    pub pattern: String,
    pub case_insensitive: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WafError {
    #[error("waf rule {id:?}: {what} is not supported (Python re and Rust regex disagree on it)")]
    Unsupported { id: String, what: &'static str },
    #[error("waf rule {id:?}: invalid regex: {msg}")]
    Invalid { id: String, msg: String },
    #[error("Waf: rule {id:?}: pattern must be a non-empty str")]
    Empty { id: String },
    #[error("Waf: rule {id:?}: {found:?} is not supported by both regex engines")]
    Unshared { id: String, found: String },
    #[error("Waf: duplicate rule id {0:?}")]
    Duplicate(String),
}

const W: &str = r"\p{L}\p{N}_";
const S_EXTRA: &str = r"\x1C-\x1F";

enum Matcher {
    Plain(regex::Regex),
    Fancy(fancy_regex::Regex),
    /// Index into the case-sensitive literal automaton's patterns.
    Literal,
}

pub struct Waf {
    ids: Vec<String>,
    matchers: Vec<Matcher>,
    /// Literals (case-sensitive, then ASCII-case-insensitive): automaton, pattern id -> rule index.
    literals: Vec<(AhoCorasick, Vec<usize>)>,
}

fn unshared() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(UNSHARED).expect("UNSHARED is a valid regex"))
}

/// Translate a Python `re` pattern into `regex` / `fancy_regex` syntax. Returns the
/// translated pattern and whether it needs lookaround (fancy_regex). `ignorecase`: the whole
/// pattern is case-insensitive (the rule's `case_insensitive`).
///
/// Python's `re.IGNORECASE` puts i, I, İ (U+0130) and ı (U+0131) in one class: each matches
/// all four. Unicode simple case folding, which `regex` uses, folds neither İ nor ı. So in a
/// case-insensitive scope (the whole pattern, a `(?i)` at its start, or an inline `(?i:...)`
/// group, until a `(?-i:...)`) a literal of the four becomes `[iIİı]`, and a class (negated
/// or not) whose literal members or ranges hold one of them gets all four. Not covered: a
/// class member written as an escape (`\x49`, `\u0130`).
pub fn translate(id: &str, pat: &str, ignorecase: bool) -> Result<(String, bool), WafError> {
    let unsupported = |what| {
        Err(WafError::Unsupported {
            id: id.to_string(),
            what,
        })
    };
    let c: Vec<char> = pat.chars().collect();
    let mut out = String::with_capacity(pat.len() + 16);
    let mut fancy = false;
    let mut in_class = false;
    let mut class_start = false; // right after `[` or `[^` (a `]` there is literal)
    let mut class_src = 0; // where the open class's members start in `c`
    let mut ci = ignorecase; // the current scope is case-insensitive
    let mut scopes: Vec<bool> = Vec::new(); // `ci` outside each open group
    let mut i = 0;
    let wb = format!(r"(?:(?<=[{W}])(?![{W}])|(?<![{W}])(?=[{W}]))");
    // Python's \B never matches in an empty text (sre: "ptr == end && ptr == beginning").
    let nwb = format!(r"(?:(?<=[{W}])(?=[{W}])|(?<![{W}])(?![{W}])(?:(?=(?s:.))|(?<=(?s:.))))");
    while i < c.len() {
        let ch = c[i];
        if ch == '\\' {
            let Some(&n) = c.get(i + 1) else {
                return Err(WafError::Invalid {
                    id: id.into(),
                    msg: "trailing backslash".into(),
                });
            };
            i += 2;
            class_start = false;
            match n {
                '1'..='9' if !in_class => return unsupported("a backreference (\\N)"),
                'g' => return unsupported("a backreference (\\g<...>)"),
                's' => out.push_str(&if in_class {
                    format!(r"\s{S_EXTRA}")
                } else {
                    format!(r"[\s{S_EXTRA}]")
                }),
                'S' => out.push_str(&format!(r"[^\s{S_EXTRA}]")),
                'w' => out.push_str(&if in_class {
                    W.to_string()
                } else {
                    format!("[{W}]")
                }),
                'W' => out.push_str(&format!("[^{W}]")),
                'b' if !in_class => {
                    fancy = true;
                    out.push_str(&wb)
                }
                'B' if !in_class => {
                    fancy = true;
                    out.push_str(&nwb)
                }
                'Z' if !in_class => out.push_str(r"\z"),
                'z' => return unsupported("\\z (Python spells it \\Z)"),
                _ => {
                    out.push('\\');
                    out.push(n);
                }
            }
            continue;
        }
        if in_class {
            if ch == ']' && !class_start {
                in_class = false;
                if ci && class_has_dotted_i(&c[class_src..i]) {
                    out.push_str(DOTTED_I_CLASS);
                }
            } else if ch == '[' {
                // Python reads a nested `[` as a literal; `regex` as a nested class.
                out.push_str(r"\[");
                i += 1;
                class_start = false;
                continue;
            } else if (ch == '&' || ch == '-' || ch == '~') && c.get(i + 1) == Some(&ch) {
                // `regex` class set operators (&&, --, ~~) are literal pairs in Python.
                out.push('\\');
                out.push(ch);
                out.push('\\');
                out.push(ch);
                i += 2;
                class_start = false;
                continue;
            }
            class_start = ch == '^' && out.ends_with('[');
            out.push(ch);
            i += 1;
            continue;
        }
        match ch {
            '[' => {
                in_class = true;
                class_start = true;
                out.push('[');
                if c.get(i + 1) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                i += 1;
                class_src = i;
                continue;
            }
            '$' => {
                fancy = true;
                out.push_str(r"(?=\n?\z)");
            }
            '(' if c.get(i + 1) == Some(&'?') => {
                let rest: String = c[i + 2..].iter().take(3).collect();
                if rest.starts_with('=')
                    || rest.starts_with('!')
                    || rest.starts_with("<=")
                    || rest.starts_with("<!")
                {
                    return unsupported("lookaround");
                }
                if rest.starts_with("P=") {
                    return unsupported("a backreference ((?P=name))");
                }
                if rest.starts_with('(') {
                    return unsupported("a conditional group");
                }
                if rest.starts_with('>') {
                    return unsupported("an atomic group");
                }
                if rest.starts_with('#') {
                    return unsupported("a comment group");
                }
                // Copy the group's opening through (a name's or a flag's letters are not
                // literals) and note the scope's case sensitivity.
                let mut j = i + 2;
                if c.get(j) == Some(&'P') && c.get(j + 1) == Some(&'<') {
                    while j < c.len() && c[j] != '>' {
                        j += 1;
                    }
                    scopes.push(ci);
                } else {
                    let mut on = true;
                    let (mut add_i, mut del_i) = (false, false);
                    while j < c.len() && (c[j].is_ascii_alphabetic() || c[j] == '-') {
                        match c[j] {
                            '-' => on = false,
                            'i' if on => add_i = true,
                            'i' => del_i = true,
                            _ => {}
                        }
                        j += 1;
                    }
                    if c.get(j) == Some(&')') {
                        // `(?i)`: Python takes global flags only at the start of the pattern
                        ci = ci || add_i;
                    } else {
                        scopes.push(ci);
                        ci = (ci || add_i) && !del_i;
                    }
                }
                let end = (j + 1).min(c.len());
                out.extend(&c[i..end]);
                i = end;
                continue;
            }
            '(' => {
                scopes.push(ci);
                out.push(ch);
            }
            ')' => {
                ci = scopes.pop().unwrap_or(ci);
                out.push(ch);
            }
            'i' | 'I' | '\u{130}' | '\u{131}' if ci => out.push_str(&format!("[{DOTTED_I_CLASS}]")),
            '*' | '+' | '?' | '}' if c.get(i + 1) == Some(&'+') => {
                return unsupported("a possessive quantifier")
            }
            _ => out.push(ch),
        }
        i += 1;
    }
    Ok((out, fancy))
}

/// The four characters Python's `re.IGNORECASE` treats as one (see `translate`).
const DOTTED_I_CLASS: &str = "iI\u{130}\u{131}";

/// Whether a class's members (the text between `[` or `[^` and `]`) name one of i, I, İ, ı,
/// as a literal or inside a range of literals. Escaped members are skipped.
fn class_has_dotted_i(members: &[char]) -> bool {
    let hit = |lo: char, hi: char| {
        ['i', 'I', '\u{130}', '\u{131}']
            .iter()
            .any(|&f| lo <= f && f <= hi)
    };
    let mut k = 0;
    let mut prev: Option<char> = None; // the last literal member: a range's start
    while k < members.len() {
        let ch = members[k];
        if ch == '\\' {
            k += 2;
            prev = None;
            continue;
        }
        if ch == '-' && k + 1 < members.len() && members[k + 1] != '\\' {
            if let Some(lo) = prev {
                if hit(lo, members[k + 1]) {
                    return true;
                }
                k += 2;
                prev = None;
                continue;
            }
        }
        if hit(ch, ch) {
            return true;
        }
        prev = Some(ch);
        k += 1;
    }
    false
}

impl Waf {
    pub fn new(rules: Vec<Rule>) -> Result<Self, WafError> {
        let mut ids = Vec::with_capacity(rules.len());
        let mut matchers = Vec::with_capacity(rules.len());
        // [case-sensitive, ascii-case-insensitive]: (patterns, rule indices)
        let mut lits: [(Vec<String>, Vec<usize>); 2] = Default::default();
        for (idx, r) in rules.into_iter().enumerate() {
            if r.pattern.is_empty() {
                return Err(WafError::Empty { id: r.id });
            }
            let m = match r.kind {
                RuleKind::Literal => {
                    let l = &mut lits[r.case_insensitive as usize];
                    l.0.push(r.pattern.clone());
                    l.1.push(idx);
                    Matcher::Literal
                }
                RuleKind::Regex => {
                    if let Some(m) = unshared().find(&r.pattern) {
                        return Err(WafError::Unshared {
                            id: r.id,
                            found: m.as_str().to_string(),
                        });
                    }
                    let (p, fancy) = translate(&r.id, &r.pattern, r.case_insensitive)?;
                    let p = if r.case_insensitive {
                        format!("(?i){p}")
                    } else {
                        p
                    };
                    if fancy {
                        Matcher::Fancy(fancy_regex::Regex::new(&p).map_err(|e| {
                            WafError::Invalid {
                                id: r.id.clone(),
                                msg: e.to_string(),
                            }
                        })?)
                    } else {
                        plain(&r.id, &p)?
                    }
                }
            };
            ids.push(r.id);
            matchers.push(m);
        }
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(WafError::Duplicate(id.clone()));
            }
        }
        let mut literals = Vec::new();
        for (ci, (pats, rule_idx)) in lits.into_iter().enumerate() {
            if pats.is_empty() {
                continue;
            }
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(ci == 1)
                .build(&pats)
                .map_err(|e| WafError::Invalid {
                    id: ids[rule_idx[0]].clone(),
                    msg: e.to_string(),
                })?;
            literals.push((ac, rule_idx));
        }
        Ok(Self {
            ids,
            matchers,
            literals,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of the first rule (in rule order) matching anywhere in `text`.
    pub fn scan(&self, text: &str) -> Option<&str> {
        // The earliest literal rule that occurs; rules after it need not be tried.
        let first_lit = self
            .literals
            .iter()
            .filter_map(|(ac, map)| {
                ac.find_overlapping_iter(text)
                    .map(|m| map[m.pattern().as_usize()])
                    .min()
            })
            .min();
        let limit = first_lit.unwrap_or(self.matchers.len());
        for (i, m) in self.matchers[..limit].iter().enumerate() {
            let hit = match m {
                Matcher::Plain(re) => re.is_match(text),
                // A regex whose backtracking limit runs out counts as a match (fail closed).
                Matcher::Fancy(re) => re.is_match(text).unwrap_or(true),
                Matcher::Literal => false,
            };
            if hit {
                return Some(&self.ids[i]);
            }
        }
        first_lit.map(|i| self.ids[i].as_str())
    }
}

fn plain(id: &str, p: &str) -> Result<Matcher, WafError> {
    regex::RegexBuilder::new(p)
        .size_limit(1 << 24)
        .build()
        .map(Matcher::Plain)
        .map_err(|e| WafError::Invalid {
            id: id.to_string(),
            msg: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_and_dotless_i_match_as_python_ignorecase_does() {
        // found by the WAF parity test: Python's IGNORECASE matches İ and ı where i/I match
        let w = Waf::new(vec![
            rule("ci", RuleKind::Regex, "a*[A-Z]a*", true),
            rule("cs", RuleKind::Regex, "[a-z]", false),
        ])
        .unwrap();
        assert_eq!(w.scan("İ"), Some("ci"));
        assert_eq!(w.scan("ı"), Some("ci"));
        let lit = Waf::new(vec![rule("ci", RuleKind::Regex, "a*İa*", true)]).unwrap();
        assert_eq!(
            (lit.scan("İ"), lit.scan("i"), lit.scan("I")),
            (Some("ci"), Some("ci"), Some("ci"))
        );
        let cs = Waf::new(vec![rule("cs", RuleKind::Regex, "[a-z]", false)]).unwrap();
        assert_eq!(cs.scan("İı"), None); // case-sensitive rules see the text as it is
                                         // an inline (?i:...) group in a case-sensitive pattern: only the group folds
        let inline = Waf::new(vec![rule("g", RuleKind::Regex, "(?i:[A-Z])x?", false)]).unwrap();
        assert_eq!(
            (inline.scan("İ"), inline.scan("ı"), inline.scan("1")),
            (Some("g"), Some("g"), None)
        );
        let scoped = Waf::new(vec![rule("s", RuleKind::Regex, "(?i:a)İ", false)]).unwrap();
        assert_eq!(
            (scoped.scan("AİX"), scoped.scan("Ai"), scoped.scan("aı")),
            (Some("s"), None, None)
        );
        let off = Waf::new(vec![rule("o", RuleKind::Regex, "(?-i:[i])z", true)]).unwrap();
        assert_eq!(
            (off.scan("iZ"), off.scan("İz"), off.scan("Iz")),
            (Some("o"), None, None)
        );
        let named = Waf::new(vec![rule("n", RuleKind::Regex, "(?P<id>i)", true)]).unwrap();
        assert_eq!(named.scan("İ"), Some("n")); // the group's name is not a literal
        let neg = Waf::new(vec![rule("x", RuleKind::Regex, "[^h-j]", true)]).unwrap();
        assert_eq!(
            (neg.scan("İ"), neg.scan("ı"), neg.scan("k")),
            (None, None, Some("x"))
        );
    }

    fn rule(id: &str, kind: RuleKind, p: &str, ci: bool) -> Rule {
        Rule {
            id: id.into(),
            kind,
            pattern: p.into(),
            case_insensitive: ci,
        }
    }

    fn waf() -> Waf {
        Waf::new(vec![
            rule(
                "inj",
                RuleKind::Regex,
                r"ignore\s+(all\s+)?previous\s+instructions",
                true,
            ),
            rule("key", RuleKind::Regex, r"sk-[A-Za-z0-9]{20,}", false),
            rule("word", RuleKind::Regex, r"\bpass\b", false),
            rule("lit", RuleKind::Literal, "DROP TABLE", false),
            rule("lit-ci", RuleKind::Literal, "jailbreak", true),
            rule("end", RuleKind::Regex, r"bye$", false),
        ])
        .unwrap()
    }

    #[test]
    fn first_rule_in_order_wins() {
        let w = waf();
        assert_eq!(
            w.scan("please IGNORE all previous\tinstructions; DROP TABLE x"),
            Some("inj")
        );
        assert_eq!(
            w.scan("DROP TABLE x; sk-abcdefghijklmnopqrstuvwxyz"),
            Some("key")
        );
        assert_eq!(w.scan("x DROP TABLE y JailBreak"), Some("lit"));
        assert_eq!(w.scan("a JAILBREAK"), Some("lit-ci"));
        assert_eq!(w.scan("a JAİLBREAK"), None); // only ASCII letters fold
        assert_eq!(w.scan("hello"), None);
        assert_eq!(w.scan(""), None);
    }

    #[test]
    fn python_semantics_of_classes_and_anchors() {
        let w = waf();
        assert_eq!(w.scan("my pass."), Some("word"));
        assert_eq!(w.scan("passé"), None); // é is a word char
        assert_eq!(w.scan("pass\u{0303}"), Some("word")); // a combining mark is not \w in Python
        assert_eq!(w.scan("bye\n"), Some("end"));
        assert_eq!(w.scan("bye\n\n"), None);
        let nb = Waf::new(vec![rule("nb", RuleKind::Regex, r"\B", false)]).unwrap();
        assert_eq!(nb.scan(""), None);
        assert_eq!(nb.scan(" "), Some("nb"));
        assert_eq!(w.scan("ignore\u{1c}previous instructions"), Some("inj"));
    }

    #[test]
    fn rejects_what_the_twins_read_differently() {
        for p in [
            r"(a)\1",
            r"a(?=b)",
            r"(?<!a)b",
            r"(?P<x>a)(?P=x)",
            r"(?>a)",
            r"a++",
            r"a\Z",
            r"(?(1)a|b)",
        ] {
            let e = Waf::new(vec![rule("r", RuleKind::Regex, p, false)]).err();
            assert!(matches!(e, Some(WafError::Unshared { .. })), "{p}: {e:?}");
        }
        // Caught by the translation when the raw-text test lets them through.
        assert!(matches!(
            Waf::new(vec![rule("r", RuleKind::Regex, r"(?#c)a", false)]),
            Err(WafError::Unsupported { .. })
        ));
        assert!(matches!(
            Waf::new(vec![rule("r", RuleKind::Regex, "(", false)]),
            Err(WafError::Invalid { .. })
        ));
        assert!(matches!(
            Waf::new(vec![rule("r", RuleKind::Literal, "", false)]),
            Err(WafError::Empty { .. })
        ));
        let dup = vec![
            rule("r", RuleKind::Literal, "a", false),
            rule("r", RuleKind::Literal, "b", false),
        ];
        assert!(matches!(Waf::new(dup), Err(WafError::Duplicate(_))));
    }
}
