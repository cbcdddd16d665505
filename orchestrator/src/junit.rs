//! Test counts from a JUnit XML report, the format most test runners can write (cargo-nextest,
//! pytest, jest-junit, Maven Surefire, go-junit-report). The report is written by the job's
//! own code, so it is read as hostile: from inside the workspace only, never through a link,
//! bounded in size, and only counted (nothing of its text reaches the job's status).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ckrv_wit::types::TestCounts;
use quick_xml::events::Event;

/// The largest report read: far above a real suite's, far below the worker's memory.
pub const MAX_REPORT_BYTES: u64 = 16 * 1024 * 1024;

/// Why a report was not counted; the job's verification notes it.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the report {0} was not written")]
    Missing(String),
    #[error("the report {0} is not a regular file inside the workspace (a link is not followed)")]
    NotAFile(String),
    #[error("the report {path} is larger than {} MB", MAX_REPORT_BYTES / 1024 / 1024)]
    TooLarge { path: String },
    #[error("reading the report {path} failed: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the report {path} is not JUnit XML: {problem}")]
    Xml { path: String, problem: String },
}

/// Reads and counts the report at `relative` (checked to be a clean relative path) under
/// `workspace`. Every directory on the way must be a directory, not a link.
pub fn read(workspace: &Path, relative: &Path) -> Result<TestCounts, ReportError> {
    let shown = relative.display().to_string();
    let mut path = workspace.to_path_buf();
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        path.push(part);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ReportError::Missing(shown));
            }
            Err(source) => {
                return Err(ReportError::Read {
                    path: shown,
                    source,
                });
            }
        };
        let wanted = if parts.peek().is_some() {
            meta.is_dir()
        } else {
            meta.is_file()
        };
        if !wanted {
            return Err(ReportError::NotAFile(shown));
        }
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(|_| ReportError::NotAFile(shown.clone()))?;
    let mut bytes = Vec::new();
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ReportError::Read {
            path: shown.clone(),
            source,
        })?;
    if bytes.len() as u64 > MAX_REPORT_BYTES {
        return Err(ReportError::TooLarge { path: shown });
    }
    count(&bytes).map_err(|problem| ReportError::Xml {
        path: shown,
        problem,
    })
}

/// Counts the `<testcase>` elements of a report: failed when one holds a `<failure>` or an
/// `<error>`, skipped when it holds a `<skipped>`, passed otherwise. Counting test cases
/// rather than trusting `<testsuite tests=…>` attributes keeps nested suites from counting
/// twice. A report with no `<testsuite>` or `<testsuites>` root is refused.
pub fn count(xml: &[u8]) -> Result<TestCounts, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut counts = TestCounts {
        passed: 0,
        failed: 0,
        skipped: 0,
    };
    let mut root_seen = false;
    // The outcome of the test case being read, if inside one.
    let mut case: Option<Outcome> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(element) | Event::Empty(element) if !root_seen => {
                let name = element.local_name();
                if name.as_ref() != b"testsuites" && name.as_ref() != b"testsuite" {
                    return Err(format!(
                        "its root element is <{}>, not <testsuites> or <testsuite>",
                        String::from_utf8_lossy(name.as_ref())
                    ));
                }
                root_seen = true;
            }
            Event::Start(element) => match element.local_name().as_ref() {
                b"testcase" => case = Some(Outcome::Passed),
                other => mark(&mut case, other),
            },
            Event::Empty(element) => match element.local_name().as_ref() {
                b"testcase" => tally(&mut counts, Outcome::Passed),
                other => mark(&mut case, other),
            },
            Event::End(element) if element.local_name().as_ref() == b"testcase" => {
                if let Some(outcome) = case.take() {
                    tally(&mut counts, outcome);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !root_seen {
        return Err("it has no <testsuites> or <testsuite> element".to_string());
    }
    Ok(counts)
}

#[derive(Clone, Copy)]
enum Outcome {
    Passed,
    Skipped,
    Failed,
}

/// Notes what an element inside a test case says of it: a failure outweighs a skip.
fn mark(case: &mut Option<Outcome>, element: &[u8]) {
    let Some(outcome) = case else {
        return;
    };
    match element {
        b"failure" | b"error" => *outcome = Outcome::Failed,
        b"skipped" if !matches!(outcome, Outcome::Failed) => *outcome = Outcome::Skipped,
        _ => {}
    }
}

fn tally(counts: &mut TestCounts, outcome: Outcome) {
    let slot = match outcome {
        Outcome::Passed => &mut counts.passed,
        Outcome::Skipped => &mut counts.skipped,
        Outcome::Failed => &mut counts.failed,
    };
    *slot = slot.saturating_add(1);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn counted(xml: &str) -> (u32, u32, u32) {
        let c = count(xml.as_bytes()).unwrap();
        (c.passed, c.failed, c.skipped)
    }

    #[test]
    fn test_cases_are_counted_by_outcome_across_nested_suites() {
        // As cargo-nextest and pytest write them: suites in suites, self-closing passes.
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="all" tests="5" failures="1">
  <testsuite name="a" tests="3">
    <testcase name="one" classname="a"/>
    <testcase name="two" classname="a"><system-out>fine</system-out></testcase>
    <testcase name="three" classname="a"><failure message="boom">assertion failed</failure></testcase>
  </testsuite>
  <testsuite name="b" tests="2">
    <testsuite name="b.inner">
      <testcase name="four"><skipped/></testcase>
      <testcase name="five"><error type="panic"/><skipped/></testcase>
    </testsuite>
  </testsuite>
</testsuites>"#;
        assert_eq!(counted(xml), (2, 2, 1));
        assert_eq!(counted("<testsuite/>"), (0, 0, 0));
    }

    #[test]
    fn what_is_not_a_junit_report_is_refused() {
        for (xml, said) in [
            ("<html><body>hi</body></html>", "its root element is <html>"),
            ("", "it has no <testsuites>"),
            ("<testsuite><testcase></testsuite>", "at byte"),
            ("not xml at all", "it has no <testsuites>"),
        ] {
            let error = count(xml.as_bytes()).unwrap_err();
            assert!(error.contains(said), "{xml}: {error}");
        }
    }

    #[test]
    fn entities_are_not_expanded() {
        // A billion-laughs report is text to this reader, not a way to exhaust the worker.
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<testsuite><testcase name="&lol2;"/></testsuite>"#;
        assert_eq!(counted(xml), (1, 0, 0));
    }

    #[test]
    fn the_report_is_read_only_from_inside_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("ws");
        std::fs::create_dir_all(workspace.join("target")).unwrap();
        std::fs::write(
            workspace.join("target/junit.xml"),
            "<testsuite><testcase/></testsuite>",
        )
        .unwrap();
        let counts = read(&workspace, Path::new("target/junit.xml")).unwrap();
        assert_eq!(counts.passed, 1);

        let outside = dir.path().join("outside.xml");
        std::fs::write(&outside, "<testsuite><testcase/></testsuite>").unwrap();
        std::os::unix::fs::symlink(&outside, workspace.join("link.xml")).unwrap();
        std::os::unix::fs::symlink(dir.path(), workspace.join("up")).unwrap();
        for (path, said) in [
            ("link.xml", "not a regular file"),
            ("up/outside.xml", "not a regular file"),
            ("target", "not a regular file"),
            ("missing.xml", "was not written"),
        ] {
            let error = read(&workspace, Path::new(path)).unwrap_err().to_string();
            assert!(error.contains(said), "{path}: {error}");
        }

        let big = std::fs::File::create(workspace.join("big.xml")).unwrap();
        big.set_len(MAX_REPORT_BYTES + 1).unwrap();
        let error = read(&workspace, Path::new("big.xml")).unwrap_err();
        assert!(error.to_string().contains("larger than 16 MB"), "{error}");
    }
}
