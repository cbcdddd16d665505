//! The web console in headless Chromium (WebDriver), against the real `ckrv-api` whose worker
//! the harness plays (as `engine.rs` does): the jobs page with 1,000 jobs to DOMContentLoaded
//! (as it opens, 100 shown, and all on one page),
//! a log line from the worker's POST to its row in the open job page, and a job page with a
//! 100,000-line log (load, search, a scroll's redraw, rows kept in the page).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, Locator};
use serde_json::Value;

use crate::engine::{Engine, PASSWORD, SCRIPT_SPEC, played_api};
use crate::table::Table;

const EMAIL: &str = "console@example.com";

/// What to measure.
pub struct Load {
    /// Jobs in the account when the jobs page is loaded.
    pub jobs: usize,
    /// Loads of each page measured.
    pub loads: usize,
    /// Log lines timed to the open page.
    pub probes: usize,
    /// Lines of the long log.
    pub log_lines: usize,
}

pub fn run(
    root: &Path,
    load: &Load,
    runtime: &tokio::runtime::Runtime,
    table: &mut Table,
) -> Result<()> {
    if !ckrv_test_support::chromium_installed() {
        bail!(
            "the console bench needs chromium and chromedriver: apt-get install chromium chromium-driver"
        );
    }
    let api = played_api(&root.join("console-api"), &[]);
    let engine = Engine::on(&api, EMAIL)?;
    runtime.block_on(async {
        let driver = ckrv_test_support::chromedriver()
            .await
            .context("chromedriver did not start")?;
        let browser = driver.browser().await;
        browser.set_window_size(1280, 900).await?;
        sign_in(&browser, &api.url).await?;
        // The jobs the worker claims first: a claim takes the oldest job waiting.
        log_latency(&engine, &browser, load, table).await?;
        long_log(&engine, &browser, load, table).await?;
        jobs_page(&engine, &browser, load, table).await?;
        browser.close().await?;
        Ok(())
    })
}

async fn sign_in(browser: &Client, url: &str) -> Result<()> {
    browser.goto(&format!("{url}/signin")).await?;
    browser
        .find(Locator::Css("input[name=email]"))
        .await?
        .send_keys(EMAIL)
        .await?;
    browser
        .find(Locator::Css("input[name=password]"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    browser
        .find(Locator::Css("form[action='/signin'] button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_for(browser, "main", "Jobs").await
}

/// Waits up to 60 s for the element `css` to show `expected`.
async fn wait_for(browser: &Client, css: &str, expected: &str) -> Result<()> {
    for _ in 0..600 {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && element.text().await.is_ok_and(|t| t.contains(expected))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{css} never showed {expected:?}")
}

/// The jobs page with `load.jobs` jobs in the account: as it opens (its first 100) and with all
/// of them on one page, to DOMContentLoaded, and the server's part of that.
async fn jobs_page(
    engine: &Engine,
    browser: &Client,
    load: &Load,
    table: &mut Table,
) -> Result<()> {
    for _ in 0..load.jobs {
        engine.create_job(SCRIPT_SPEC).await?;
    }
    // And the two jobs of the log measurements, made first.
    let total = load.jobs + 2;
    let all = load.jobs.min(1000);
    for (shown, address) in [
        (total.min(100), format!("{}/", engine.url)),
        (all, format!("{}/?limit={all}", engine.url)),
    ] {
        let (mut times, mut answers) = (Vec::new(), Vec::new());
        for _ in 0..load.loads {
            browser.goto(&address).await?;
            let rows = browser
                .execute(
                    "return document.querySelectorAll('#jobs tbody tr').length",
                    vec![],
                )
                .await?;
            ensure!(
                rows.as_u64() == Some(shown as u64),
                "the page shows {rows} jobs, not {shown}"
            );
            let timing = browser
                .execute(
                    "const n = performance.getEntriesByType('navigation')[0];
                     return [n.domContentLoadedEventEnd - n.startTime, n.responseEnd - n.requestStart];",
                    vec![],
                )
                .await?;
            let ms: Vec<f64> = timing
                .as_array()
                .context("a navigation timing")?
                .iter()
                .filter_map(Value::as_f64)
                .collect();
            ensure!(ms.len() == 2, "navigation timing {timing}");
            times.push(Duration::from_secs_f64(ms[0] / 1000.0));
            answers.push(Duration::from_secs_f64(ms[1] / 1000.0));
        }
        table.row(
            &format!("console: jobs page, {shown} of {total} jobs shown, to DOMContentLoaded"),
            &times,
        );
        table.row(
            &format!("console: jobs page, {shown} of {total} jobs shown, the server's answer"),
            &answers,
        );
    }
    Ok(())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// From a worker's POST of a line to the line's row in the open job page (one clock: the
/// browser and the harness run on this machine).
async fn log_latency(
    engine: &Engine,
    browser: &Client,
    load: &Load,
    table: &mut Table,
) -> Result<()> {
    let mut job = engine.running_job(SCRIPT_SPEC).await?;
    browser
        .goto(&format!("{}/jobs/{}", engine.url, job.id))
        .await?;
    wait_for(browser, "#log-count", "0 lines").await?;
    browser
        .execute(
            "window.seen = {};
             new MutationObserver(() => {
               for (const row of document.querySelectorAll('#log .log-line')) {
                 const m = row.textContent.match(/probe (\\d+) (\\d+)/);
                 if (m && !(m[1] in window.seen)) window.seen[m[1]] = Date.now() - Number(m[2]);
               }
             }).observe(document.getElementById('log'), { childList: true, subtree: true });
             return true;",
            vec![],
        )
        .await?;
    for n in 0..load.probes {
        engine
            .append(&mut job, &[format!("probe {n} {}", now_ms())])
            .await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = browser.execute("return window.seen", vec![]).await?;
        if seen.as_object().is_some_and(|s| s.len() == load.probes) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.as_object().context("the page's timings")?;
    ensure!(
        seen.len() == load.probes,
        "the page showed {} of {} lines",
        seen.len(),
        load.probes
    );
    let times: Vec<Duration> = seen
        .values()
        .filter_map(Value::as_f64)
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        .collect();
    table.row(
        "console: a log line, worker's POST to its row in the open page",
        &times,
    );
    Ok(())
}

/// A job page with a long log: to all lines loaded, a search over them, a scroll's redraw.
async fn long_log(engine: &Engine, browser: &Client, load: &Load, table: &mut Table) -> Result<()> {
    let mut job = engine.running_job(SCRIPT_SPEC).await?;
    let mut written = 0;
    while written < load.log_lines {
        let batch: Vec<String> = (written..(written + 5000).min(load.log_lines))
            .map(|i| format!("agent output line {i} with some text"))
            .collect();
        written += batch.len();
        engine.append(&mut job, &batch).await?;
    }
    let expected = format!("{} lines", load.log_lines);
    let (mut loaded, mut searched, mut scrolled) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows = 0;
    for _ in 0..load.loads.min(5) {
        browser
            .goto(&format!("{}/jobs/{}", engine.url, job.id))
            .await?;
        let ms = browser
            .execute_async(
                "const [expected, done] = arguments;
                 const check = () => {
                   if (document.getElementById('log-count')?.textContent.startsWith(expected)) done(performance.now());
                   else setTimeout(check, 5);
                 };
                 check();",
                vec![Value::from(expected.clone())],
            )
            .await?
            .as_f64()
            .context("a load time")?;
        loaded.push(Duration::from_secs_f64(ms / 1000.0));
        let timings = browser
            .execute(
                "const search = document.getElementById('log-search');
                 const view = document.getElementById('log');
                 let at = performance.now();
                 search.value = 'line 77777 ';
                 search.dispatchEvent(new Event('input'));
                 const searched = performance.now() - at;
                 at = performance.now();
                 view.scrollTop = view.scrollHeight / 2;
                 view.dispatchEvent(new Event('scroll'));
                 const scrolled = performance.now() - at;
                 return [searched, scrolled, view.querySelectorAll('.log-line').length];",
                vec![],
            )
            .await?;
        let numbers: Vec<f64> = timings
            .as_array()
            .context("timings")?
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        ensure!(numbers.len() == 3, "timings {timings}");
        searched.push(Duration::from_secs_f64(numbers[0] / 1000.0));
        scrolled.push(Duration::from_secs_f64(numbers[1] / 1000.0));
        rows = numbers[2] as usize;
    }
    let lines = load.log_lines;
    table.row(
        &format!("console: job page with a {lines}-line log, to every line loaded"),
        &loaded,
    );
    table.row(
        &format!("console: search over {lines} lines (input to matches drawn)"),
        &searched,
    );
    table.row(
        &format!(
            "console: scroll to the middle of {lines} lines, redrawn ({rows} rows in the page)"
        ),
        &scrolled,
    );
    Ok(())
}
