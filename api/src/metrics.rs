//! What `/metrics` shows, in the Prometheus text format: requests by method and status, their
//! latency, log lines ingested, Kubernetes watch errors, the model gateway's requests and tokens,
//! webhook delivery tries by outcome, and (read from the database at each scrape, so every replica
//! agrees) jobs by state and the queue's depth.

use std::time::Duration;

use ckrv_wit::types::JobState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    route: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    log_lines: Counter,
    jobs: Family<StateLabels, Gauge>,
    queued: Gauge,
    watch_errors: Family<ResourceLabels, Counter>,
    model_requests: Family<ModelLabels, Counter>,
    model_tokens: Family<TokenLabels, Counter>,
    webhook_tries: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ckrv");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        // 1 ms to about 16 s.
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "http_request_duration_seconds",
            "How long requests took to answer (a log stream: until its headers)",
            latency.clone(),
        );
        let log_lines = Counter::default();
        registry.register(
            "log_lines_ingested",
            "Job log lines stored",
            log_lines.clone(),
        );
        let jobs = Family::<StateLabels, Gauge>::default();
        registry.register("jobs", "Jobs by state", jobs.clone());
        let queued = Gauge::default();
        registry.register("queue_depth", "Jobs waiting for a worker", queued.clone());
        let watch_errors = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "kubernetes_watch_errors",
            "Errors watching or handling the Kubernetes objects of jobs, by resource",
            watch_errors.clone(),
        );
        let model_requests = Family::<ModelLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Model API requests through the gateway, by route and the status answered",
            model_requests.clone(),
        );
        let model_tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "gateway_tokens",
            "Model tokens the gateway's answers reported, by route and direction (input, output)",
            model_tokens.clone(),
        );
        let webhook_tries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_delivery_tries",
            "Tries to deliver a webhook event, by outcome (delivered, retry, failed)",
            webhook_tries.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            log_lines,
            jobs,
            queued,
            watch_errors,
            model_requests,
            model_tokens,
            webhook_tries,
        }
    }
}

impl Metrics {
    pub fn request(&self, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                status,
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// One error of the Kubernetes dispatcher's watch of `resource` (`pods`, `jobs`).
    pub fn kubernetes_watch_error(&self, resource: &str) {
        self.watch_errors
            .get_or_create(&ResourceLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }

    /// One request through the model gateway on `route`, and the status it answered.
    pub fn model_request(&self, route: &str, status: u16) {
        self.model_requests
            .get_or_create(&ModelLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// The tokens one model answer on `route` reported.
    pub fn model_tokens(&self, route: &str, input: u64, output: u64) {
        for (direction, tokens) in [("input", input), ("output", output)] {
            self.model_tokens
                .get_or_create(&TokenLabels {
                    route: route.to_owned(),
                    direction,
                })
                .inc_by(tokens);
        }
    }

    /// One try of a webhook delivery and what it came to.
    pub fn webhook_try(&self, outcome: &'static str) {
        self.webhook_tries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn log_lines_ingested(&self, lines: u64) {
        self.log_lines.inc_by(lines);
    }

    /// The text format, with the job counts just read.
    pub fn render(&self, jobs_by_state: &[(JobState, i64)]) -> Result<String, std::fmt::Error> {
        for state in JobState::ALL {
            let count = jobs_by_state
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.jobs
                .get_or_create(&StateLabels {
                    state: state.as_str().to_owned(),
                })
                .set(count);
            if state == JobState::Pending {
                self.queued.set(count);
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
