//! A job's diff as a page: the files in a tree, then each file's hunks with line numbers and
//! syntax highlighting. The diff is the one `ckrv pull` applies, read from the artifact store
//! after the same checks as `GET /v1/jobs/{id}/artifacts/diff`. Its file names and lines are the
//! agent's output, so hostile: everything is escaped. A very large diff is cut, and says so.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum_extra::extract::cookie::SignedCookieJar;
use ckrv_wit::types::ErrorKind;

use super::ConsoleState;
use super::highlight::FileHighlighter;
use super::page::{self, Section, render, viewer};
use crate::error::AppError;
use crate::identity::web::escape;
use crate::jobs::routes::lookup::resolve;

/// Lines shown at most; the rest is for `ckrv diff`.
const MAX_LINES: usize = 20_000;
/// Files longer than this are shown without highlighting (it is the slow part).
const MAX_HIGHLIGHTED_LINES: usize = 5_000;

pub async fn page(
    State(state): State<ConsoleState>,
    jar: SignedCookieJar,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let user = match viewer(&state, &jar, &format!("/jobs/{id}/diff")).await? {
        Ok(user) => user,
        Err(sign_in) => return Ok(sign_in),
    };
    let row = match resolve(&state.jobs, &page::session(&user), &id).await {
        Ok(row) => row,
        Err(error) => return Ok(page::problem(&user, &error, Section::Jobs)),
    };
    let job = &row.job;
    let unavailable = if row.expired_at.is_some() {
        Some("its diff expired under this server's retention")
    } else if !job.change_is_pullable() || !row.has_diff {
        Some("it has no diff")
    } else {
        None
    };
    if let Some(why) = unavailable {
        let error = AppError::new(ErrorKind::NotFound, format!("job {}: {why}", job.id));
        return Ok(page::problem(&user, &error, Section::Jobs));
    }
    let bytes = state.jobs.artifacts.get_diff(&job.id).await?;
    let text = String::from_utf8_lossy(&bytes);
    let files = parse(&text);
    let shown: usize = files.iter().map(|f| f.lines.len()).sum();
    let body = format!(
        r#"<p><a href="/jobs/{id}">Back to the job</a> · <code>ckrv pull {id}</code></p>
<p class="stats">{count} files changed, <span class="ins">+{ins}</span> <span class="del">−{del}</span></p>
<div class="diff-layout"><nav class="file-tree" aria-label="Files">{tree}</nav><div class="files">{files}{cut}</div></div>"#,
        id = escape(&job.id),
        count = files.len(),
        ins = files.iter().map(|f| f.insertions).sum::<usize>(),
        del = files.iter().map(|f| f.deletions).sum::<usize>(),
        tree = tree(&files),
        files = files
            .iter()
            .enumerate()
            .map(|(n, f)| file(n, f))
            .collect::<String>(),
        cut = if shown >= MAX_LINES {
            format!(
                "<p class=\"warn\">The diff is longer than {MAX_LINES} lines; the rest is not shown here. Read all of it with <code>ckrv diff {}</code>.</p>",
                escape(&job.id)
            )
        } else {
            String::new()
        },
    );
    let title = format!("Diff of job {}", job.id.get(..8).unwrap_or(&job.id));
    Ok(render(
        &user,
        StatusCode::OK,
        Section::Jobs,
        "diff",
        &title,
        &body,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hunk,
    Added,
    Removed,
    Context,
    Note,
}

#[derive(Debug)]
struct Line<'a> {
    kind: Kind,
    old: Option<usize>,
    new: Option<usize>,
    text: &'a str,
}

#[derive(Debug, Default)]
struct FileDiff<'a> {
    path: String,
    binary: bool,
    insertions: usize,
    deletions: usize,
    lines: Vec<Line<'a>>,
}

/// The files of a unified git diff, their lines numbered, at most `MAX_LINES` lines in all.
fn parse(diff: &str) -> Vec<FileDiff<'_>> {
    let mut files: Vec<FileDiff<'_>> = Vec::new();
    let (mut old, mut new) = (0, 0);
    let mut in_hunk = false;
    let mut total = 0;
    for line in diff.lines() {
        if let Some(paths) = line.strip_prefix("diff --git ") {
            files.push(FileDiff {
                path: path_of(paths),
                ..FileDiff::default()
            });
            in_hunk = false;
            continue;
        }
        let Some(file) = files.last_mut() else {
            continue;
        };
        if let Some(header) = line.strip_prefix("@@ ") {
            (old, new) = hunk_starts(header);
            in_hunk = true;
            total += 1;
            if total <= MAX_LINES {
                file.lines.push(Line {
                    kind: Kind::Hunk,
                    old: None,
                    new: None,
                    text: line,
                });
            }
            continue;
        }
        if !in_hunk {
            if let Some(path) = line.strip_prefix("+++ b/") {
                file.path = path.to_string();
            } else if line.starts_with("Binary files ") || line == "GIT binary patch" {
                file.binary = true;
            }
            continue;
        }
        let (kind, text, numbers) = match line.as_bytes().first() {
            Some(b'+') => {
                file.insertions += 1;
                new += 1;
                (Kind::Added, &line[1..], (None, Some(new - 1)))
            }
            Some(b'-') => {
                file.deletions += 1;
                old += 1;
                (Kind::Removed, &line[1..], (Some(old - 1), None))
            }
            Some(b'\\') => (Kind::Note, line, (None, None)),
            _ => {
                old += 1;
                new += 1;
                (
                    Kind::Context,
                    line.get(1..).unwrap_or_default(),
                    (Some(old - 1), Some(new - 1)),
                )
            }
        };
        total += 1;
        if total <= MAX_LINES {
            file.lines.push(Line {
                kind,
                old: numbers.0,
                new: numbers.1,
                text,
            });
        }
    }
    files
}

/// `b/path` of `a/path b/path` (the new name), without git's quoting.
fn path_of(paths: &str) -> String {
    let new = paths
        .rsplit_once(" b/")
        .map_or(paths, |(_, new)| new)
        .trim_matches('"');
    new.to_string()
}

/// Where a hunk's old and new lines start: `-12,5 +14,6 @@ …` gives (12, 14).
fn hunk_starts(header: &str) -> (usize, usize) {
    let mut parts = header.split_whitespace();
    let start = |part: Option<&str>, sign: char| {
        part.and_then(|p| p.strip_prefix(sign))
            .and_then(|p| p.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(1)
    };
    let old = start(parts.next(), '-');
    let new = start(parts.next(), '+');
    (old, new)
}

/// The files' paths as a tree of folders, each file linking to its section.
fn tree(files: &[FileDiff<'_>]) -> String {
    #[derive(Default)]
    struct Folder {
        folders: BTreeMap<String, Folder>,
        files: Vec<(String, usize)>,
    }
    let mut root = Folder::default();
    for (n, file) in files.iter().enumerate() {
        let mut parts: Vec<&str> = file.path.split('/').collect();
        let name = parts.pop().unwrap_or_default().to_string();
        let folder = parts.into_iter().fold(&mut root, |folder, part| {
            folder.folders.entry(part.to_string()).or_default()
        });
        folder.files.push((name, n));
    }
    fn render(folder: &Folder) -> String {
        let folders: String = folder
            .folders
            .iter()
            .map(|(name, sub)| format!("<li>{}/<ul>{}</ul></li>", escape(name), render(sub)))
            .collect();
        let files: String = folder
            .files
            .iter()
            .map(|(name, n)| format!("<li><a href=\"#file-{n}\">{}</a></li>", escape(name)))
            .collect();
        format!("{folders}{files}")
    }
    format!("<ul>{}</ul>", render(&root))
}

fn file(n: usize, file: &FileDiff<'_>) -> String {
    let mut highlighter = (file.lines.len() <= MAX_HIGHLIGHTED_LINES)
        .then(|| FileHighlighter::for_path(&file.path))
        .flatten();
    let rows: String = if file.binary {
        "<tr><td colspan=\"3\">A binary file: not shown.</td></tr>".to_string()
    } else {
        file.lines
            .iter()
            .map(|line| {
                let number = |n: Option<usize>| n.map(|n| n.to_string()).unwrap_or_default();
                let (class, code) = match line.kind {
                    Kind::Hunk => ("hunk", escape(line.text)),
                    Kind::Note => ("note", escape(line.text)),
                    kind => {
                        let code = match highlighter.as_mut() {
                            Some(h) => h.line(line.text),
                            None => escape(line.text),
                        };
                        let class = match kind {
                            Kind::Added => "add",
                            Kind::Removed => "del",
                            _ => "ctx",
                        };
                        (class, code)
                    }
                };
                let sign = match line.kind {
                    Kind::Added => "<span class=\"sign\" aria-label=\"added\">+</span>",
                    Kind::Removed => "<span class=\"sign\" aria-label=\"removed\">−</span>",
                    _ => "",
                };
                format!(
                    "<tr class=\"{class}\"><td class=\"ln\">{}</td><td class=\"ln\">{}</td><td class=\"code\">{sign}{code}</td></tr>",
                    number(line.old),
                    number(line.new),
                )
            })
            .collect()
    };
    format!(
        r#"<section class="file" id="file-{n}" aria-labelledby="file-{n}-h"><h2 id="file-{n}-h"><code>{path}</code> <span class="ins">+{ins}</span> <span class="del">−{del}</span></h2>
<div class="table-wrap"><table class="diff"><thead><tr><th scope="col">Old</th><th scope="col">New</th><th scope="col">Line</th></tr></thead><tbody>{rows}</tbody></table></div></section>"#,
        path = escape(&file.path),
        ins = file.insertions,
        del = file.deletions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "diff --git a/src/a.rs b/src/a.rs\nindex 1..2 100644\n--- a/src/a.rs\n+++ b/src/a.rs\n@@ -3,3 +3,3 @@ fn x\n keep\n-old\n+new <b>\n keep\ndiff --git a/img.png b/img.png\nBinary files a/img.png and b/img.png differ\n";

    #[test]
    fn files_lines_and_numbers_are_read() {
        let files = parse(DIFF);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "src/a.rs");
        assert_eq!((files[0].insertions, files[0].deletions), (1, 1));
        let numbers: Vec<_> = files[0].lines.iter().map(|l| (l.old, l.new)).collect();
        assert_eq!(
            numbers,
            [
                (None, None),
                (Some(3), Some(3)),
                (Some(4), None),
                (None, Some(4)),
                (Some(5), Some(5))
            ]
        );
        assert!(files[1].binary && files[1].path == "img.png");
    }

    #[test]
    fn names_and_lines_are_escaped_and_the_tree_links_them() {
        let diff = DIFF.replace("src/a.rs", "src/<script>.rs");
        let files = parse(&diff);
        let html = file(0, &files[0]);
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&lt;"));
        let tree = tree(&files);
        assert!(
            tree.contains("src/<ul>") && tree.contains("href=\"#file-0\">&lt;script&gt;.rs"),
            "{tree}"
        );
    }

    #[test]
    fn hunk_headers_give_their_starts() {
        assert_eq!(hunk_starts("-12,5 +14,6 @@ fn"), (12, 14));
        assert_eq!(hunk_starts("-1 +1 @@"), (1, 1));
        assert_eq!(hunk_starts("garbage"), (1, 1));
    }
}
