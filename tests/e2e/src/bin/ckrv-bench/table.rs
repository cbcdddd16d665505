//! The results as a Markdown table.

use std::time::Duration;

/// Rows of "what, n, min, median, p95, p99" in milliseconds.
#[derive(Default)]
pub struct Table {
    rows: Vec<String>,
}

impl Table {
    pub fn row(&mut self, what: &str, times: &[Duration]) {
        let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        // Nearest rank: the smallest value with at least p of the samples at or below it.
        let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        self.rows.push(format!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            ms.len(),
            ms[0],
            rank(0.5),
            rank(0.95),
            rank(0.99)
        ));
    }

    pub fn render(&self) -> String {
        let head = "| measurement | n | min ms | median ms | p95 ms | p99 ms |\n\
                    |---|---:|---:|---:|---:|---:|";
        format!("{head}\n{}", self.rows.join("\n"))
    }
}
