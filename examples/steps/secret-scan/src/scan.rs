//! Finds likely credentials in the lines a patch adds. Plain Rust, no WIT: the step calls it
//! and `cargo test` exercises it on any machine.

use std::fmt;

/// One likely credential: where it is, what it looks like, and a redacted excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: String,
    /// The line in the new version of the file, counting from 1.
    pub line: u32,
    pub kind: &'static str,
    /// The first characters of the match, never the whole of it.
    pub excerpt: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} ({})",
            self.path, self.line, self.kind, self.excerpt
        )
    }
}

/// What a scan found, and in how many files.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub files_scanned: usize,
}

/// Files to skip (path globs: `*` within a name, `**` across directories) and known fixtures
/// (text that, found in a match, clears it).
#[derive(Debug, Default)]
pub struct Allowlist {
    entries: Vec<String>,
}

impl Allowlist {
    /// From the comma-separated `allowlist` parameter.
    pub fn parse(param: &str) -> Self {
        Self {
            entries: param
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect(),
        }
    }

    fn skips_file(&self, path: &str) -> bool {
        self.entries
            .iter()
            .any(|e| glob(e.as_bytes(), path.as_bytes()))
    }

    fn clears(&self, matched: &str) -> bool {
        self.entries.iter().any(|e| matched.contains(e.as_str()))
    }
}

/// Scans the lines `patch` (a `git diff` unified patch) adds.
pub fn scan_patch(patch: &str, allowlist: &Allowlist) -> Report {
    let mut report = Report::default();
    let mut path: Option<String> = None;
    let mut line = 0u32;
    let mut in_hunk = false;
    for text in patch.lines() {
        if text.starts_with("diff --git ") {
            report.files_scanned += 1;
            path = None;
            in_hunk = false;
        } else if !in_hunk && let Some(p) = text.strip_prefix("+++ ") {
            let p = unquote(p);
            path = p
                .strip_prefix("b/")
                .map(String::from)
                .filter(|p| !allowlist.skips_file(p));
        } else if let Some(range) = text.strip_prefix("@@ ") {
            line = new_start(range).unwrap_or(1);
            in_hunk = true;
        } else if text.starts_with("GIT binary patch") {
            in_hunk = false;
            path = None;
        } else if in_hunk && let Some(p) = &path {
            match text.as_bytes().first() {
                Some(b'+') => {
                    for (kind, matched) in detect(&text[1..]) {
                        if !allowlist.clears(matched) {
                            report.findings.push(Finding {
                                path: p.clone(),
                                line,
                                kind,
                                excerpt: redact(matched),
                            });
                        }
                    }
                    line += 1;
                }
                Some(b' ') => line += 1,
                _ => {}
            }
        }
    }
    report
}

/// `c` of a hunk header's `-a,b +c,d @@`.
fn new_start(range: &str) -> Option<u32> {
    let plus = range.split_whitespace().find(|p| p.starts_with('+'))?;
    plus[1..].split(',').next()?.parse().ok()
}

fn unquote(path: &str) -> String {
    match path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => path.to_string(),
    }
}

/// The first four characters and an ellipsis.
fn redact(matched: &str) -> String {
    let head: String = matched.chars().take(4).collect();
    format!("{head}…")
}

/// A token recognised by its prefix: the characters that may follow, and how many at least.
struct Prefixed {
    prefix: &'static str,
    kind: &'static str,
    class: fn(u8) -> bool,
    min: usize,
}

const fn p(
    prefix: &'static str,
    kind: &'static str,
    class: fn(u8) -> bool,
    min: usize,
) -> Prefixed {
    Prefixed {
        prefix,
        kind,
        class,
        min,
    }
}

const PREFIXED: &[Prefixed] = &[
    p("AKIA", "AWS access key id", upper_digit, 16),
    p("ASIA", "AWS temporary access key id", upper_digit, 16),
    p("AIza", "Google API key", token_dash, 35),
    p("ghp_", "GitHub token", alnum, 36),
    p("gho_", "GitHub token", alnum, 36),
    p("ghu_", "GitHub token", alnum, 36),
    p("ghs_", "GitHub token", alnum, 36),
    p("ghr_", "GitHub token", alnum, 36),
    p("github_pat_", "GitHub token", token, 22),
    p("glpat-", "GitLab token", token_dash, 20),
    p("xoxb-", "Slack token", token_dash, 10),
    p("xoxa-", "Slack token", token_dash, 10),
    p("xoxp-", "Slack token", token_dash, 10),
    p("xoxr-", "Slack token", token_dash, 10),
    p("xoxs-", "Slack token", token_dash, 10),
    p("sk_live_", "Stripe key", alnum, 24),
    p("rk_live_", "Stripe key", alnum, 24),
    p("sk-ant-", "Anthropic API key", token_dash, 32),
    p("sk-proj-", "OpenAI API key", token_dash, 32),
    p("sk-", "OpenAI API key", alnum, 32),
    p("npm_", "npm token", alnum, 36),
];

fn upper_digit(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}
fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn token_dash(b: u8) -> bool {
    token(b) || b == b'-'
}

/// Names that say their value is a secret.
const SECRET_NAMES: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "auth",
    "credential",
];

/// Everything in `line` that looks like a credential: (kind, the matched text).
pub fn detect(line: &str) -> Vec<(&'static str, &str)> {
    let mut found = Vec::new();
    if let Some(start) = line.find("-----BEGIN ")
        && line[start..].contains("PRIVATE KEY")
    {
        found.push(("private key", &line[start..]));
        return found;
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !token_dash(bytes[i - 1]);
        let hit = boundary
            .then(|| {
                PREFIXED.iter().find_map(|t| {
                    let rest = line[i..].strip_prefix(t.prefix)?;
                    let len = rest.bytes().take_while(|b| (t.class)(*b)).count();
                    (len >= t.min).then_some((t.kind, i + t.prefix.len() + len))
                })
            })
            .flatten();
        match hit {
            Some((kind, end)) => {
                found.push((kind, &line[i..end]));
                i = end;
            }
            None => i += 1,
        }
    }
    if found.is_empty()
        && let Some(value) = assigned_secret(line)
    {
        found.push((
            "high-entropy value assigned to a secret-looking name",
            value,
        ));
    }
    found
}

/// The value in `name = "value"`, `name: value`, `NAME=value` or `"name": "value"` when the
/// name looks secret and the value looks random (long, high entropy, not a placeholder).
fn assigned_secret(line: &str) -> Option<&str> {
    let sep = line.find([':', '='])?;
    let name = line[..sep]
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .trim_end_matches(':')
        .to_ascii_lowercase();
    let name = name.rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    let name = name.into_iter().next().unwrap_or_default();
    if !SECRET_NAMES.iter().any(|s| name.contains(s)) {
        return None;
    }
    let rest = line[sep + 1..].trim_start_matches(['=', '>', ' ', '\t']);
    let value = match rest.chars().next() {
        Some(q @ ('"' | '\'' | '`')) => rest[1..].split(q).next()?,
        _ => rest.split([' ', '\t', ';', ',']).next()?,
    };
    let placeholder = value.contains("${")
        || value.contains("{{")
        || value.starts_with('$')
        || value.starts_with('<')
        || value.to_ascii_lowercase().contains("example")
        || value.to_ascii_lowercase().contains("changeme")
        || value.bytes().all(|b| b == value.as_bytes()[0]);
    (value.len() >= 16 && !placeholder && entropy(value) >= 3.5).then_some(value)
}

/// Shannon entropy in bits per character.
fn entropy(text: &str) -> f64 {
    let mut counts = [0usize; 256];
    for b in text.bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

/// `pattern` (with `*`, `**` and `?`) matches all of `text`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => {
            let rest = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=text.len()).any(|i| glob(rest, &text[i..]))
        }
        [b'*', rest @ ..] => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| glob(rest, &text[i..])),
        [b'?', rest @ ..] => text.first().is_some_and(|&c| c != b'/') && glob(rest, &text[1..]),
        [c, rest @ ..] => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fake credentials are assembled here so that this file does not itself trip scanners.
    fn aws() -> String {
        ["AKIA", "Q3EGRT7OPLMN2ZXW"].concat()
    }
    fn github() -> String {
        ["ghp_", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"].concat()
    }

    fn patch(path: &str, added: &[&str]) -> String {
        let mut p = format!(
            "diff --git a/{path} b/{path}\nindex 1111111..2222222 100644\n--- a/{path}\n+++ b/{path}\n@@ -1,2 +1,{} @@\n context\n",
            added.len() + 2
        );
        for line in added {
            p.push_str(&format!("+{line}\n"));
        }
        p.push_str("-removed\n context\n");
        p
    }

    #[test]
    fn each_detector_finds_its_kind() {
        let cases = [
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----".to_string(),
                "private key",
            ),
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----".to_string(),
                "private key",
            ),
            (format!("aws_key_id = {}", aws()), "AWS access key id"),
            (
                format!(
                    "key: {}",
                    ["AIza", "SyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"].concat()
                ),
                "Google API key",
            ),
            (format!("GH={}", github()), "GitHub token"),
            (
                ["x ", "glpat-", "abcdefghij0123456789"].concat(),
                "GitLab token",
            ),
            (
                ["slack: ", "xoxb-", "1234567890-abcdef"].concat(),
                "Slack token",
            ),
            (
                ["k = '", "sk_live_", "4eC39HqLyjWDarjtT1zdp7dc", "'"].concat(),
                "Stripe key",
            ),
            (
                [
                    "ANTHROPIC=",
                    "sk-ant-",
                    "api03-abcdefghijklmnopqrstuvwxyz012345",
                ]
                .concat(),
                "Anthropic API key",
            ),
            (
                ["t ", "npm_", "abcdefghijklmnopqrstuvwxyz0123456789"].concat(),
                "npm token",
            ),
            (
                "db_password = \"Zx8!qR2#vL9@mK4$\"".to_string(),
                "high-entropy value assigned to a secret-looking name",
            ),
            (
                "\"apiToken\": \"9f8e7d6c5b4a3f2e1d0c9b8a\"".to_string(),
                "high-entropy value assigned to a secret-looking name",
            ),
        ];
        for (line, kind) in cases {
            let found = detect(&line);
            assert_eq!(found.first().map(|f| f.0), Some(kind), "{line}");
        }
    }

    #[test]
    fn ordinary_text_and_placeholders_are_not_flagged() {
        for line in [
            "Use sk- keys from the dashboard",
            "the AKIA prefix marks an access key",
            "password = \"changeme\"",
            "password = ${DB_PASSWORD}",
            "api_key: <your-api-key-goes-here>",
            "token = \"xxxxxxxxxxxxxxxxxxxxxxxx\"",
            "secret_name = \"prod\"",
            "let total = compute_everything_twice_and_sum(values);",
            "-----BEGIN PUBLIC KEY-----",
            "MY_AKIAQ3EGRT7OPLMN2ZXW", // not at a word boundary
        ] {
            assert_eq!(detect(line), Vec::<(&str, &str)>::new(), "{line}");
        }
    }

    #[test]
    fn lines_are_numbered_in_the_new_file_across_hunks_and_files() {
        let mut p = patch("config/app.env", &["FOO=1", &format!("AWS={}", aws())]);
        p.push_str(&format!(
            "@@ -40,3 +41,4 @@\n same\n+{}\n same\n same\n",
            github()
        ));
        p.push_str(&patch("src/keys.rs", &[&format!("// {}", github())]));
        let report = scan_patch(&p, &Allowlist::default());
        let at: Vec<(&str, u32, &str)> = report
            .findings
            .iter()
            .map(|f| (f.path.as_str(), f.line, f.kind))
            .collect();
        assert_eq!(
            at,
            [
                ("config/app.env", 3, "AWS access key id"),
                ("config/app.env", 42, "GitHub token"),
                ("src/keys.rs", 2, "GitHub token"),
            ]
        );
        assert_eq!(report.files_scanned, 2);
    }

    #[test]
    fn removed_lines_binary_patches_and_deleted_files_are_not_scanned() {
        let p = format!(
            "diff --git a/a.txt b/a.txt\n--- a/a.txt\n+++ b/a.txt\n@@ -1,1 +1,1 @@\n-{aws}\n+clean\n\
             diff --git a/gone.txt b/gone.txt\ndeleted file mode 100644\n--- a/gone.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-{aws}\n\
             diff --git a/x.bin b/x.bin\nGIT binary patch\nliteral 4\n+{aws}\n",
            aws = aws()
        );
        let report = scan_patch(&p, &Allowlist::default());
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.files_scanned, 3);
    }

    #[test]
    fn the_allowlist_skips_files_by_glob_and_fixtures_by_text() {
        let mut p = patch("tests/fixtures/deep/creds.txt", &[&aws()]);
        p.push_str(&patch("src/main.rs", &[&aws(), &github()]));
        let all = scan_patch(&p, &Allowlist::default()).findings.len();
        assert_eq!(all, 3);
        let by_glob = scan_patch(&p, &Allowlist::parse("tests/**/*.txt"));
        assert_eq!(by_glob.findings.len(), 2);
        assert!(by_glob.findings.iter().all(|f| f.path == "src/main.rs"));
        let by_text = scan_patch(&p, &Allowlist::parse(&format!("tests/**, {}", aws())));
        assert_eq!(by_text.findings.len(), 1);
        assert_eq!(by_text.findings[0].kind, "GitHub token");
        // `*` stays within a directory.
        assert_eq!(
            scan_patch(&p, &Allowlist::parse("tests/*.txt"))
                .findings
                .len(),
            3
        );
    }

    #[test]
    fn a_finding_never_shows_the_whole_secret() {
        let report = scan_patch(&patch("a.env", &[&github()]), &Allowlist::default());
        let shown = report.findings[0].to_string();
        assert_eq!(shown, "a.env:2: GitHub token (ghp_…)");
        assert!(!shown.contains(&github()[4..]));
    }
}
