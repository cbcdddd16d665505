//! Reading an agent's output: bytes, not text. A line is cut at [`MAX_LINE_BYTES`] with a
//! visible marker (a line without end must not exhaust memory), bytes that are not UTF-8 are
//! replaced rather than ending the stream, and each line waits for room in a bounded channel,
//! so an agent that writes faster than its log is shipped is slowed, never lost.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Not the agent's: a connection its sandbox's egress proxy refused, one line each
    /// (`Connection blocked by network allowlist: HOST:PORT (REASON)`), for the job log and a
    /// count.
    Egress,
}

/// One line of the agent's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    pub stream: Stream,
    pub line: String,
}

/// The longest line kept whole; the rest of a longer line is dropped and counted.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Reads `reader` line by line into `lines` until it ends or the receiver is gone.
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    stream: Stream,
    lines: mpsc::Sender<OutputLine>,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    let mut dropped = 0usize;
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            if !line.is_empty() || dropped > 0 {
                let _ = lines.send(finish(stream, &line, dropped)).await;
            }
            return;
        }
        let end = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        let keep = chunk.len().min(MAX_LINE_BYTES - line.len());
        line.extend_from_slice(&chunk[..keep]);
        dropped += chunk.len() - keep;
        let consumed = chunk.len() + usize::from(end.is_some());
        reader.consume(consumed);
        if end.is_some() {
            let done = finish(stream, &line, dropped);
            line.clear();
            dropped = 0;
            if lines.send(done).await.is_err() {
                return;
            }
        }
    }
}

/// The line as text: invalid UTF-8 and NUL (which the API refuses: PostgreSQL cannot store it)
/// replaced, a carriage return before the newline dropped, and how much was cut said at the end.
fn finish(stream: Stream, bytes: &[u8], dropped: usize) -> OutputLine {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut line = String::from_utf8_lossy(bytes).replace('\0', "\u{fffd}");
    if dropped > 0 {
        line.push_str(&format!(" [… line truncated: {dropped} more bytes]"));
    }
    OutputLine { stream, line }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn read(input: &[u8]) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(4);
        let input = input.to_vec();
        let reader = tokio::spawn(async move { pump(&input[..], Stream::Stdout, tx).await });
        let mut out = Vec::new();
        while let Some(line) = rx.recv().await {
            out.push(line.line);
        }
        reader.await.unwrap();
        out
    }

    #[tokio::test]
    async fn invalid_utf8_and_nul_are_replaced_and_the_lines_after_it_still_arrive() {
        let mut input = b"before\n".to_vec();
        input.extend_from_slice(b"bad \xff\xfe byte\0\r\n");
        for i in 0..2000 {
            input.extend_from_slice(format!("after {i}\n").as_bytes());
        }
        let lines = read(&input).await;
        assert_eq!(lines.len(), 2002);
        assert_eq!(lines[1], "bad \u{fffd}\u{fffd} byte\u{fffd}");
        assert_eq!(lines[2001], "after 1999");
    }

    #[tokio::test]
    async fn a_huge_line_is_cut_with_a_marker_and_the_next_line_is_whole() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 1000];
        input.extend_from_slice(b"\nnext\nno newline at the end");
        let lines = read(&input).await;
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(&"x".repeat(MAX_LINE_BYTES)));
        assert!(
            lines[0].ends_with("[… line truncated: 1000 more bytes]"),
            "{}",
            &lines[0][MAX_LINE_BYTES..]
        );
        assert_eq!(lines[1], "next");
        assert_eq!(lines[2], "no newline at the end");
    }
}
