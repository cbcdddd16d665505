//! What the operator tells the Kubernetes dispatcher (`ckrv-api serve --dispatcher kubernetes
//! …`), checked once at start so a typo is an error naming the flag, not a Job the cluster
//! refuses later.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Toleration;

/// The defaults of `ckrv-api serve`'s flags, and of [`KubernetesSettings::new`].
pub const DEFAULT_WORKER_CPU: &str = "500m";
pub const DEFAULT_WORKER_MEMORY: &str = "512Mi";
pub const DEFAULT_AGENT_CPU: &str = "2";
pub const DEFAULT_AGENT_MEMORY: &str = "4Gi";
pub const DEFAULT_WORKSPACE_SIZE: &str = "10Gi";
pub const DEFAULT_JOB_TTL: &str = "1h";
pub const DEFAULT_API_POD_LABEL: &str = "app.kubernetes.io/component=api";
pub const DEFAULT_DNS_NAMESPACE: &str = "kube-system";
pub const DEFAULT_DNS_POD_LABEL: &str = "k8s-app=kube-dns";
pub const DEFAULT_SCHEDULE_TIMEOUT: &str = "10m";

/// CPU and memory of one container, as Kubernetes quantities (`500m`, `4Gi`); each is both the
/// request and the limit, so a job gets what it was promised and never more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub cpu: String,
    pub memory: String,
}

/// How job pods are made.
#[derive(Debug, Clone)]
pub struct KubernetesSettings {
    /// Where job pods run (the API's own namespace unless told otherwise).
    pub namespace: String,
    /// The worker image: `ckrv-orchestrator`, git and `ckrv-agent-entrypoint`.
    pub worker_image: String,
    /// The URL job pods reach this API at (its Service).
    pub worker_api_url: String,
    /// Images that replace agent definitions' own, by agent name.
    pub agent_images: BTreeMap<String, String>,
    pub worker_resources: Resources,
    pub agent_resources: Resources,
    /// The size limit of the workspace volume.
    pub workspace_size: String,
    /// How long finished Jobs (and their pods, Secrets, policies) stay for inspection.
    pub job_ttl: Duration,
    /// A job's deadline; the Job's `activeDeadlineSeconds` is a little longer, so the API's
    /// own timeout (with its message) normally comes first.
    pub job_timeout: Duration,
    pub image_pull_secrets: Vec<String>,
    /// Labels of the API's own pods: job pods may reach those (on `api_port`).
    pub api_pod_labels: BTreeMap<String, String>,
    /// The port the API's pods listen on (a policy names the pod's port, not the Service's).
    pub api_port: u16,
    /// The port of the API's egress proxy for job pods, when it runs one: the agent's
    /// `HTTPS_PROXY` names it at the worker API URL's host (the Service must expose this port
    /// under the same number).
    pub egress_proxy_port: Option<u16>,
    /// Extra labels on everything made for a job (a release's instance label, say).
    pub job_labels: BTreeMap<String, String>,
    /// The service account of job pods; the namespace's default when `None`. Its token is
    /// never mounted.
    pub worker_service_account: Option<String>,
    /// Where the cluster's DNS pods are: namespace and labels.
    pub dns_namespace: String,
    pub dns_pod_labels: BTreeMap<String, String>,
    /// The API's own namespace, when job pods run in another.
    pub api_namespace: Option<String>,
    /// Jobs may clone local and private hosts (the operator's development flag): the clone's
    /// egress is then not limited to public addresses.
    pub allow_local_repos: bool,
    /// Where job pods may be scheduled: node labels they need, taints they tolerate, and
    /// their priority class (so a platform team can keep agents on their own nodes).
    pub scheduling: Scheduling,
}

/// The scheduling constraints of job pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduling {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub priority_class: Option<String>,
    /// How long a job pod may wait for a node that can take it before its job fails with
    /// the scheduler's reason (rather than at its timeout, saying nothing); zero waits on.
    pub schedule_timeout: Duration,
}

impl Default for Scheduling {
    fn default() -> Self {
        Self {
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            priority_class: None,
            schedule_timeout: humantime::parse_duration(DEFAULT_SCHEDULE_TIMEOUT)
                .unwrap_or(Duration::from_secs(600)),
        }
    }
}

impl KubernetesSettings {
    /// Settings with the documented defaults for everything but what has none.
    pub fn new(namespace: &str, worker_image: &str, worker_api_url: &str, api_port: u16) -> Self {
        Self {
            namespace: namespace.to_string(),
            worker_image: worker_image.to_string(),
            worker_api_url: worker_api_url.to_string(),
            agent_images: BTreeMap::new(),
            worker_resources: Resources {
                cpu: DEFAULT_WORKER_CPU.into(),
                memory: DEFAULT_WORKER_MEMORY.into(),
            },
            agent_resources: Resources {
                cpu: DEFAULT_AGENT_CPU.into(),
                memory: DEFAULT_AGENT_MEMORY.into(),
            },
            workspace_size: DEFAULT_WORKSPACE_SIZE.into(),
            job_ttl: humantime::parse_duration(DEFAULT_JOB_TTL)
                .unwrap_or(Duration::from_secs(3600)),
            job_timeout: Duration::from_secs(60 * 60),
            image_pull_secrets: Vec::new(),
            api_pod_labels: parse_label(DEFAULT_API_POD_LABEL).into_iter().collect(),
            api_port,
            egress_proxy_port: None,
            job_labels: BTreeMap::new(),
            worker_service_account: None,
            dns_namespace: DEFAULT_DNS_NAMESPACE.into(),
            dns_pod_labels: parse_label(DEFAULT_DNS_POD_LABEL).into_iter().collect(),
            api_namespace: None,
            allow_local_repos: false,
            scheduling: Scheduling::default(),
        }
    }

    /// Checks every value against Kubernetes' own rules, naming the flag of the first that
    /// breaks one.
    pub fn check(&self) -> Result<(), SettingsError> {
        let bad = |flag: &'static str, problem: String| SettingsError { flag, problem };
        dns_label(&self.namespace).map_err(|p| bad("--namespace", p))?;
        if let Some(namespace) = &self.api_namespace {
            dns_label(namespace).map_err(|p| bad("the API's namespace", p))?;
        }
        if self.worker_image.trim().is_empty() {
            return Err(bad("--worker-image", "give the worker image".into()));
        }
        url::Url::parse(&self.worker_api_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                bad(
                    "--worker-api-url",
                    format!(
                        "`{}` is not an http(s) URL; give the URL job pods reach this API at, e.g. http://ckrv.ckrv.svc:8080",
                        self.worker_api_url
                    ),
                )
            })?;
        for (flag, value) in [
            ("--worker-cpu", &self.worker_resources.cpu),
            ("--worker-memory", &self.worker_resources.memory),
            ("--agent-cpu", &self.agent_resources.cpu),
            ("--agent-memory", &self.agent_resources.memory),
            ("--workspace-size", &self.workspace_size),
        ] {
            quantity(value).map_err(|p| bad(flag, p))?;
        }
        for (name, image) in &self.agent_images {
            if ckrv_agents::find_agent(name).is_none() {
                return Err(bad(
                    "--agent-image",
                    format!(
                        "unknown agent `{name}`; known agents: {}",
                        ckrv_agents::agent_names()
                    ),
                ));
            }
            if image.trim().is_empty() {
                return Err(bad("--agent-image", format!("no image given for `{name}`")));
            }
        }
        for name in &self.image_pull_secrets {
            dns_subdomain(name).map_err(|p| bad("--image-pull-secret", p))?;
        }
        if let Some(account) = &self.worker_service_account {
            dns_subdomain(account).map_err(|p| bad("--worker-service-account", p))?;
        }
        if self.api_pod_labels.is_empty() {
            return Err(bad(
                "--api-pod-label",
                "give at least one label of the API's pods, or job pods cannot reach the API"
                    .into(),
            ));
        }
        if let Some(class) = &self.scheduling.priority_class {
            dns_subdomain(class).map_err(|p| bad("--job-priority-class", p))?;
        }
        for toleration in &self.scheduling.tolerations {
            check_toleration(toleration).map_err(|p| bad("--job-toleration", p))?;
        }
        for (flag, labels) in [
            ("--api-pod-label", &self.api_pod_labels),
            ("--job-label", &self.job_labels),
            ("--job-node-selector", &self.scheduling.node_selector),
        ] {
            for (key, value) in labels {
                label(key, value).map_err(|p| bad(flag, p))?;
            }
        }
        Ok(())
    }

    /// The namespace of the API's pods.
    pub fn api_namespace(&self) -> &str {
        self.api_namespace.as_deref().unwrap_or(&self.namespace)
    }

    /// The image the agent runs in here.
    pub fn agent_image<'a>(&'a self, agent: &'a ckrv_agents::AgentDefinition) -> &'a str {
        self.agent_images.get(&agent.name).unwrap_or(&agent.image)
    }
}

/// A setting Kubernetes would refuse.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {problem}")]
pub struct SettingsError {
    pub flag: &'static str,
    pub problem: String,
}

/// `KEY=VALUE`, as `--api-pod-label` and `--job-label` take it.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    label(key, value)?;
    Ok((key.to_string(), value.to_string()))
}

/// The taint effects a toleration may name.
const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `KEY[=VALUE][:EFFECT]`, as `--job-toleration` takes it (kubectl taint's syntax): with a
/// value the taint must match it, without one any value is tolerated; without an effect,
/// every effect.
pub fn parse_toleration(text: &str) -> Result<Toleration, String> {
    let (taint, effect) = match text.rsplit_once(':') {
        Some((taint, effect)) => (taint, Some(effect)),
        None => (text, None),
    };
    let (key, value) = match taint.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (taint, None),
    };
    let toleration = Toleration {
        key: Some(key.to_string()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.into()),
        value: value.map(str::to_string),
        effect: effect.map(str::to_string),
        toleration_seconds: None,
    };
    check_toleration(&toleration)
        .map_err(|p| format!("`{text}` is not KEY[=VALUE][:EFFECT]: {p}"))?;
    Ok(toleration)
}

/// A toleration Kubernetes would accept: a label-shaped key and value, a known effect.
fn check_toleration(toleration: &Toleration) -> Result<(), String> {
    let key = toleration.key.as_deref().unwrap_or_default();
    if key.is_empty() {
        return Err("give the taint's key".into());
    }
    label(key, toleration.value.as_deref().unwrap_or_default())?;
    if let Some(effect) = toleration.effect.as_deref()
        && !TAINT_EFFECTS.contains(&effect)
    {
        return Err(format!(
            "unknown effect `{effect}`; use {}",
            TAINT_EFFECTS.join(", ")
        ));
    }
    Ok(())
}

/// `NAME=IMAGE`, as `--agent-image` takes it.
pub fn parse_agent_image(text: &str) -> Result<(String, String), String> {
    let (name, image) = text
        .split_once('=')
        .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        .ok_or_else(|| {
            format!("`{text}` is not AGENT=IMAGE, e.g. claude-code=registry.example/claude:1")
        })?;
    Ok((name.to_string(), image.to_string()))
}

/// A label's key (`[prefix/]name`) and value, by the rules of Kubernetes' label validation.
fn label(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        dns_subdomain(prefix).map_err(|p| format!("label key `{key}`: {p}"))?;
    }
    if !label_value(name) || name.is_empty() {
        return Err(format!(
            "label key `{key}`: the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    if !label_value(value) {
        return Err(format!(
            "label value `{value}`: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label value: empty, or up to 63 characters of `[A-Za-z0-9-_.]` with alphanumeric ends.
fn label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.is_empty()
        || (bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric))
}

/// An RFC 1123 label: a namespace's name.
fn dns_label(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
        ))
    }
}

/// An RFC 1123 subdomain: the name of a Secret or a service account.
fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 || name.split('.').any(|part| dns_label(part).is_err()) {
        return Err(format!(
            "`{name}` is not a valid name: lowercase letters, digits, '-' and '.', at most 253"
        ));
    }
    Ok(())
}

/// A Kubernetes quantity: a decimal number with an optional SI or binary suffix.
fn quantity(text: &str) -> Result<(), String> {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| text.strip_suffix(s).filter(|n| !n.is_empty()))
        .unwrap_or_default();
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let fraction = parts.next();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(whole) && fraction.is_none_or(digits) && number.parse::<f64>().is_ok_and(|n| n > 0.0)
    {
        Ok(())
    } else {
        Err(format!(
            "`{text}` is not a Kubernetes quantity such as 500m, 2, 512Mi or 10Gi"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_kubernetes() {
        for good in ["500m", "2", "0.5", "512Mi", "10Gi", "1G", "1.5Gi"] {
            assert_eq!(quantity(good), Ok(()), "{good}");
        }
        for bad in ["", "Gi", "-1", "0", "1.", "1gi", "ten", "1 Gi", ".5"] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_follow_kubernetes() {
        assert_eq!(
            parse_label("app.kubernetes.io/instance=ckrv"),
            Ok(("app.kubernetes.io/instance".into(), "ckrv".into()))
        );
        assert_eq!(parse_label("tier="), Ok(("tier".into(), String::new())));
        for bad in [
            "noequals",
            "=v",
            "k=-v",
            "Bad_Prefix/k=v",
            "k=v v",
            &format!("k={}", "a".repeat(64)),
        ] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tolerations_read_like_kubectl_taints() {
        let toleration = |text| {
            parse_toleration(text).map(|t| {
                (
                    t.key.unwrap_or_default(),
                    t.operator.unwrap_or_default(),
                    t.value,
                    t.effect,
                )
            })
        };
        assert_eq!(
            toleration("dedicated=agents:NoSchedule"),
            Ok((
                "dedicated".into(),
                "Equal".into(),
                Some("agents".into()),
                Some("NoSchedule".into())
            ))
        );
        assert_eq!(
            toleration("nvidia.com/gpu:NoExecute"),
            Ok((
                "nvidia.com/gpu".into(),
                "Exists".into(),
                None,
                Some("NoExecute".into())
            ))
        );
        assert_eq!(
            toleration("spot"),
            Ok(("spot".into(), "Exists".into(), None, None))
        );
        for bad in [
            "",
            ":NoSchedule",
            "k=v:Never",
            "k=v=w",
            "Bad Key",
            "k=-v:NoSchedule",
        ] {
            assert!(parse_toleration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_toleration("k=v:Never"),
            Err("`k=v:Never` is not KEY[=VALUE][:EFFECT]: unknown effect `Never`; use NoSchedule, PreferNoSchedule, NoExecute".into())
        );
    }

    #[test]
    fn bad_scheduling_names_its_flag() {
        let mut settings = KubernetesSettings::new("ckrv", "worker:1", "http://ckrv:8080", 8080);
        settings.scheduling.priority_class = Some("Batch_Low".into());
        assert_eq!(
            settings.check().map_err(|e| e.flag),
            Err("--job-priority-class")
        );
        settings.scheduling.priority_class = Some("batch-low".into());
        settings
            .scheduling
            .node_selector
            .insert("pool".into(), "agents pool".into());
        assert_eq!(
            settings.check().map_err(|e| e.flag),
            Err("--job-node-selector")
        );
        settings
            .scheduling
            .node_selector
            .insert("pool".into(), "agents".into());
        assert!(settings.check().is_ok());
    }

    #[test]
    fn a_bad_setting_names_its_flag() {
        let mut settings = KubernetesSettings::new("ckrv", "worker:1", "http://ckrv:8080", 8080);
        assert!(settings.check().is_ok());
        settings.agent_resources.memory = "4GB".into();
        assert_eq!(
            settings.check().map_err(|e| e.to_string()),
            Err(
                "--agent-memory: `4GB` is not a Kubernetes quantity such as 500m, 2, 512Mi or 10Gi"
                    .into()
            )
        );
        let mut settings = KubernetesSettings::new("Ckrv", "worker:1", "http://ckrv:8080", 8080);
        assert_eq!(settings.check().map_err(|e| e.flag), Err("--namespace"));
        settings.namespace = "ckrv".into();
        settings.worker_api_url = "ckrv:8080".into();
        assert_eq!(
            settings.check().map_err(|e| e.flag),
            Err("--worker-api-url")
        );
        settings.worker_api_url = "http://ckrv:8080".into();
        settings.agent_images.insert("claud".into(), "x".into());
        assert!(
            settings
                .check()
                .is_err_and(|e| e.problem.starts_with("unknown agent `claud`"))
        );
    }
}
