//! Syntax highlighting for the diff page: syntect's grammars (those bat and zola use) parse each
//! file's lines in order, and each run of text gets one short class by what it is (comment,
//! string, keyword …), which the stylesheet colours for light and dark. Every line's markup is
//! whole, so a line can be shown alone, and all text is escaped.

use std::sync::OnceLock;

use syntect::parsing::{ParseState, Scope, ScopeStack, SyntaxReference, SyntaxSet};

use crate::identity::web::escape;

fn syntaxes() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(SyntaxSet::load_defaults_newlines)
}

/// What a run of text is, by the first of these scopes its innermost scopes fall under.
fn kinds() -> &'static [(Scope, &'static str)] {
    static KINDS: OnceLock<Vec<(Scope, &'static str)>> = OnceLock::new();
    KINDS.get_or_init(|| {
        [
            ("comment", "hl-comment"),
            ("string", "hl-string"),
            ("constant.numeric", "hl-number"),
            ("constant", "hl-constant"),
            ("keyword", "hl-keyword"),
            ("storage", "hl-keyword"),
            ("entity.name.function", "hl-function"),
            ("support.function", "hl-function"),
            ("entity.name", "hl-type"),
            ("support.type", "hl-type"),
            ("support.class", "hl-type"),
            ("entity.name.tag", "hl-tag"),
            ("entity.other.attribute-name", "hl-attribute"),
            ("variable.parameter", "hl-variable"),
        ]
        .into_iter()
        .filter_map(|(scope, class)| Some((Scope::new(scope).ok()?, class)))
        .collect()
    })
}

/// Highlights one file's lines, in order.
pub struct FileHighlighter {
    parse: ParseState,
    stack: ScopeStack,
}

impl FileHighlighter {
    /// A highlighter for `path` by its extension or name; `None` when no grammar knows it.
    pub fn for_path(path: &str) -> Option<Self> {
        let set = syntaxes();
        let name = path.rsplit('/').next().unwrap_or(path);
        let syntax: &SyntaxReference = name
            .rsplit_once('.')
            .and_then(|(_, extension)| set.find_syntax_by_extension(extension))
            .or_else(|| set.find_syntax_by_extension(name))?;
        Some(Self {
            parse: ParseState::new(syntax),
            stack: ScopeStack::new(),
        })
    }

    /// One line (without its newline) as escaped HTML; a line the grammar fails on is plain.
    pub fn line(&mut self, text: &str) -> String {
        let with_newline = format!("{text}\n");
        let Ok(ops) = self.parse.parse_line(&with_newline, syntaxes()) else {
            return escape(text);
        };
        let mut html = String::with_capacity(text.len() * 2);
        let mut at = 0;
        for (index, op) in ops {
            let index = index.min(text.len());
            if index > at {
                self.push_run(&mut html, &text[at..index]);
                at = index;
            }
            if self.stack.apply(&op).is_err() {
                self.stack = ScopeStack::new();
            }
        }
        if at < text.len() {
            self.push_run(&mut html, &text[at..]);
        }
        html
    }

    fn push_run(&self, html: &mut String, run: &str) {
        let class = self.stack.as_slice().iter().rev().find_map(|scope| {
            kinds()
                .iter()
                .find(|(kind, _)| kind.is_prefix_of(*scope))
                .map(|(_, class)| *class)
        });
        match class {
            Some(class) => {
                html.push_str("<span class=\"");
                html.push_str(class);
                html.push_str("\">");
                html.push_str(&escape(run));
                html.push_str("</span>");
            }
            None => html.push_str(&escape(run)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_is_highlighted_and_escaped() {
        let mut rust = FileHighlighter::for_path("src/lib.rs").expect("a grammar for .rs");
        let html = rust.line("fn main() { let s = \"<b>\"; } // done");
        assert!(
            html.contains("<span class=\"hl-keyword\">fn</span>"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("<span class=\"hl-comment\">"), "{html}");
    }

    #[test]
    fn state_carries_from_line_to_line() {
        let mut rust = FileHighlighter::for_path("a.rs").expect("a grammar for .rs");
        rust.line("/* a comment");
        let html = rust.line("still the comment */");
        assert!(html.starts_with("<span class=\"hl-comment\">"), "{html}");
    }

    #[test]
    fn unknown_files_are_not_highlighted() {
        assert!(FileHighlighter::for_path("notes.unknownextension").is_none());
    }
}
