//! The objects one job becomes on Kubernetes: a suspended `batch/v1` Job whose pod holds the
//! orchestrator and the agent (docs/job-pod.md), the Secret with the worker's token and the
//! agent's keys, and the NetworkPolicy that limits what the pod reaches. Pure functions of the
//! settings and the job, so tests can read, and validate, exactly what the cluster receives.

use std::collections::BTreeMap;
use std::path::Path;

use ckrv_agents::AgentDefinition;
use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, KeyToPath,
    LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::settings::{KubernetesSettings, Resources};

/// The label that names a job on everything made for it.
pub const JOB_LABEL: &str = "ckrv.dev/job";
/// The label that names the claim (the job's generation) it was made for.
pub const GENERATION_LABEL: &str = "ckrv.dev/generation";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "ckrv-api");
/// Selects everything this dispatcher made.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=ckrv-api";

/// The user and group every container runs as: the images' own `ckrv` user.
const UID: i64 = 10001;
/// Kept past the job's own timeout, so the API's (with its message) normally comes first.
const DEADLINE_MARGIN_S: u64 = 60;

pub const ORCHESTRATOR: &str = "orchestrator";
pub const AGENT: &str = "agent";
pub const INSTALL_ENTRYPOINT: &str = "install-entrypoint";

/// The Secret's key holding the worker's token.
pub const TOKEN_KEY: &str = "worker-token";
/// The Secret's key for the job's model token, which only the agent's container reads.
pub const MODEL_TOKEN_KEY: &str = "model-token";
/// The Secret's key for the URL of the API's egress proxy with the job's model token as its
/// password, which only the agent's container reads (as `HTTPS_PROXY` and the like).
pub const EGRESS_PROXY_KEY: &str = "egress-proxy";

// Where the volumes are mounted (docs/job-pod.md).
const WORKSPACE: &str = "/workspace";
const CONTROL: &str = "/ckrv/control";
const AGENT_OUTPUT: &str = "/ckrv/agent";
const ENTRYPOINT_DIR: &str = "/ckrv/bin";
const SECRETS_DIR: &str = "/ckrv/secrets";
const WORK: &str = "/work";
const AGENT_HOME: &str = "/home/agent";
/// The agent's home as the orchestrator mounts it, to restore and pack setup's `~/` caches.
const AGENT_HOME_IN_ORCHESTRATOR: &str = "/ckrv/home";

/// Addresses a job pod may never reach on the repository's or the models' port: private,
/// shared, loopback, link-local (cloud metadata), multicast and reserved ranges, where the
/// cluster and everything inside the operator's network live.
const NOT_PUBLIC_V4: [&str; 9] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];
const NOT_PUBLIC_V6: [&str; 6] = [
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// One job's pod: what it runs and what it needs.
#[derive(Debug, Clone)]
pub struct JobPod<'a> {
    pub job_id: &'a str,
    pub generation: i64,
    pub agent: &'a AgentDefinition,
    /// The port the repository is cloned from.
    pub repo_port: u16,
    /// Whether anything after the clone calls out: a stage with allowed hosts. Then public
    /// HTTPS stays open. (The agent's models are behind the API's gateway.)
    pub public_https_after_clone: bool,
    /// The agent's key variables whose keys the operator configured: the agent gets the job's
    /// model token in each, and the gateway's address for its route.
    pub model_keys: Vec<String>,
}

/// Which part of the job the pod's network is shaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkStage {
    /// The repository's host, on its port.
    Clone,
    /// Only what the agent and the later steps need.
    AfterClone,
}

/// The name of everything made for a claim: `ckrv-<job id>-g<generation>`.
pub fn object_name(job_id: &str, generation: i64) -> String {
    format!("ckrv-{job_id}-g{generation}")
}

/// The labels of everything made for the job: the operator's, then ours (which win).
pub fn labels(settings: &KubernetesSettings, pod: &JobPod<'_>) -> BTreeMap<String, String> {
    let mut labels = settings.job_labels.clone();
    for (key, value) in [
        ("app.kubernetes.io/name", "ckrv"),
        ("app.kubernetes.io/component", "job"),
        MANAGED_BY,
        (JOB_LABEL, pod.job_id),
    ] {
        labels.insert(key.to_string(), value.to_string());
    }
    labels.insert(GENERATION_LABEL.to_string(), pod.generation.to_string());
    labels
}

fn metadata(settings: &KubernetesSettings, pod: &JobPod<'_>) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(pod.job_id, pod.generation)),
        namespace: Some(settings.namespace.clone()),
        labels: Some(labels(settings, pod)),
        ..ObjectMeta::default()
    }
}

/// The Job, created suspended: its pod starts once the Secret it mounts exists.
pub fn job(settings: &KubernetesSettings, pod: &JobPod<'_>) -> Job {
    let deadline = settings.job_timeout.as_secs() + DEADLINE_MARGIN_S;
    Job {
        metadata: metadata(settings, pod),
        spec: Some(JobSpec {
            suspend: Some(true),
            backoff_limit: Some(0),
            completions: Some(1),
            parallelism: Some(1),
            active_deadline_seconds: Some(i64::try_from(deadline).unwrap_or(i64::MAX)),
            ttl_seconds_after_finished: Some(
                i32::try_from(settings.job_ttl.as_secs()).unwrap_or(i32::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(settings, pod)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(settings, pod)),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(settings: &KubernetesSettings, pod: &JobPod<'_>) -> PodSpec {
    let name = object_name(pod.job_id, pod.generation);
    PodSpec {
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        service_account_name: settings.worker_service_account.clone(),
        image_pull_secrets: (!settings.image_pull_secrets.is_empty()).then(|| {
            settings
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        termination_grace_period_seconds: Some(30),
        node_selector: (!settings.scheduling.node_selector.is_empty())
            .then(|| settings.scheduling.node_selector.clone()),
        tolerations: (!settings.scheduling.tolerations.is_empty())
            .then(|| settings.scheduling.tolerations.clone()),
        priority_class_name: settings.scheduling.priority_class.clone(),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(UID),
            run_as_group: Some(UID),
            fs_group: Some(UID),
            seccomp_profile: Some(runtime_default()),
            ..PodSecurityContext::default()
        }),
        init_containers: Some(vec![Container {
            name: INSTALL_ENTRYPOINT.into(),
            image: Some(settings.worker_image.clone()),
            command: Some(strings(&[
                "ckrv-agent-entrypoint",
                "install",
                ENTRYPOINT_DIR,
            ])),
            resources: Some(resources(&Resources {
                cpu: "100m".into(),
                memory: "64Mi".into(),
            })),
            security_context: Some(hardened()),
            volume_mounts: Some(vec![mount("entrypoint", ENTRYPOINT_DIR, false)]),
            ..Container::default()
        }]),
        containers: vec![orchestrator(settings, pod), agent(settings, pod, &name)],
        volumes: Some(vec![
            empty_dir("workspace", None, Some(&settings.workspace_size)),
            empty_dir("control", Some("Memory"), Some("16Mi")),
            empty_dir("agent-output", None, Some("1Gi")),
            empty_dir("entrypoint", None, Some("64Mi")),
            empty_dir("work", None, Some(&settings.workspace_size)),
            empty_dir("agent-home", None, Some("2Gi")),
            empty_dir("tmp", None, Some("1Gi")),
            empty_dir("agent-tmp", None, Some("2Gi")),
            Volume {
                name: "worker-token".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(name),
                    items: Some(vec![KeyToPath {
                        key: TOKEN_KEY.into(),
                        path: TOKEN_KEY.into(),
                        mode: Some(0o400),
                    }]),
                    default_mode: Some(0o400),
                    optional: Some(false),
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

fn orchestrator(settings: &KubernetesSettings, pod: &JobPod<'_>) -> Container {
    let token = format!("{SECRETS_DIR}/{TOKEN_KEY}");
    let mut args = strings(&[
        "run",
        "--api-url",
        &settings.worker_api_url,
        "--job-id",
        pod.job_id,
        "--token-file",
        &token,
        "--work-dir",
        WORK,
        "--workspace",
        WORKSPACE,
        "--agent-control",
        CONTROL,
        "--agent-output",
        AGENT_OUTPUT,
        "--agent-home",
        AGENT_HOME_IN_ORCHESTRATOR,
    ]);
    if settings.allow_local_repos {
        args.push("--allow-local-repos".into());
    }
    Container {
        name: ORCHESTRATOR.into(),
        image: Some(settings.worker_image.clone()),
        command: Some(strings(&["ckrv-orchestrator"])),
        args: Some(args),
        env: Some(vec![value_env("HOME", WORK)]),
        resources: Some(resources(&settings.worker_resources)),
        security_context: Some(hardened()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![
            mount("workspace", WORKSPACE, false),
            mount("control", CONTROL, false),
            mount("agent-output", AGENT_OUTPUT, true),
            mount("agent-home", AGENT_HOME_IN_ORCHESTRATOR, false),
            mount("work", WORK, false),
            mount("tmp", "/tmp", false),
            mount("worker-token", SECRETS_DIR, true),
        ]),
        ..Container::default()
    }
}

fn agent(settings: &KubernetesSettings, pod: &JobPod<'_>, secret_name: &str) -> Container {
    let mut env = vec![
        value_env("HOME", AGENT_HOME),
        value_env("CKRV_JOB_ID", pod.job_id),
    ];
    // The job's model token comes from its Secret into this container alone, in each key
    // variable of a configured route, beside the gateway's address for that route; the
    // entrypoint hands the agent those its launch names.
    for route in pod
        .agent
        .models
        .iter()
        .filter(|route| pod.model_keys.contains(&route.key))
    {
        env.push(secret_env(&route.key, secret_name, MODEL_TOKEN_KEY));
        let base = ckrv_wit::protocol::paths::gateway_base(&settings.worker_api_url, &route.name);
        env.extend(
            route
                .base_url
                .iter()
                .map(|(var, path)| value_env(var, &format!("{base}{path}"))),
        );
    }
    // The API's egress proxy, when it runs one: the proxy URL carries the job's model token,
    // so it too comes from the Secret. The gateway is reached directly.
    if settings.egress_proxy_port.is_some() {
        for name in ckrv_agents::egress::PROXY_VARIABLES {
            env.push(secret_env(name, secret_name, EGRESS_PROXY_KEY));
        }
        let api_host = api_host(settings);
        for name in ckrv_agents::egress::NO_PROXY_VARIABLES {
            env.push(value_env(name, &api_host));
        }
    }
    Container {
        name: AGENT.into(),
        image: Some(settings.agent_image(pod.agent).to_string()),
        command: Some(strings(&[&format!(
            "{ENTRYPOINT_DIR}/ckrv-agent-entrypoint"
        )])),
        args: Some(
            ckrv_agents::pod::entrypoint_args(Path::new(CONTROL), Path::new(AGENT_OUTPUT))
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        ),
        working_dir: Some(WORKSPACE.into()),
        env: Some(env),
        resources: Some(resources(&settings.agent_resources)),
        security_context: Some(hardened()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![
            mount("workspace", WORKSPACE, false),
            mount("control", CONTROL, true),
            mount("agent-output", AGENT_OUTPUT, false),
            mount("entrypoint", ENTRYPOINT_DIR, true),
            mount("agent-home", AGENT_HOME, false),
            mount("agent-tmp", "/tmp", false),
        ]),
        ..Container::default()
    }
}

/// `name` from the Secret's `key`.
fn secret_env(name: &str, secret_name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret_name.to_string(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The host of the worker API URL: the API's Service, which the proxy shares.
fn api_host(settings: &KubernetesSettings) -> String {
    url::Url::parse(&settings.worker_api_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// The URL of the API's egress proxy for the job whose model token is `model_token`.
pub fn egress_proxy_url(settings: &KubernetesSettings, model_token: &str) -> Option<String> {
    let port = settings.egress_proxy_port?;
    Some(format!(
        "http://job:{model_token}@{}:{port}",
        api_host(settings)
    ))
}

/// Who owns the job's other objects: its Job, so they go when it goes.
pub fn owned_by(job: &Job) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job.metadata.name.clone()?,
        uid: job.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The worker's token (for the orchestrator's mount), the job's model token and its egress
/// proxy's URL (for the agent's environment), owned by the Job. No key of the operator's: the model gateway holds
/// those.
pub fn secret(
    settings: &KubernetesSettings,
    pod: &JobPod<'_>,
    token: &str,
    model_token: &str,
    owner: OwnerReference,
) -> Secret {
    let mut data = BTreeMap::from([(TOKEN_KEY.to_string(), ByteString(token.as_bytes().to_vec()))]);
    // Only an agent with a configured model route has a variable to hold the model token.
    if !pod.model_keys.is_empty() {
        data.insert(
            MODEL_TOKEN_KEY.to_string(),
            ByteString(model_token.as_bytes().to_vec()),
        );
    }
    if let Some(url) = egress_proxy_url(settings, model_token) {
        data.insert(EGRESS_PROXY_KEY.to_string(), ByteString(url.into_bytes()));
    }
    let mut metadata = metadata(settings, pod);
    metadata.owner_references = Some(vec![owner]);
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(data),
        ..Secret::default()
    }
}

/// The pod's network: no ingress; egress as [`egress`] says for `stage`.
pub fn network_policy(
    settings: &KubernetesSettings,
    pod: &JobPod<'_>,
    stage: NetworkStage,
    owner: OwnerReference,
) -> NetworkPolicy {
    let mut metadata = metadata(settings, pod);
    metadata.owner_references = Some(vec![owner]);
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (JOB_LABEL.to_string(), pod.job_id.to_string()),
                    (GENERATION_LABEL.to_string(), pod.generation.to_string()),
                ])),
                ..LabelSelector::default()
            }),
            policy_types: Some(strings(&["Ingress", "Egress"])),
            ingress: Some(Vec::new()),
            egress: Some(egress(settings, pod, stage)),
        }),
    }
}

/// Where the pod may connect: the cluster's DNS and the API always; while cloning, public
/// addresses on the repository's port; after, public HTTPS only if something needs it.
pub fn egress(
    settings: &KubernetesSettings,
    pod: &JobPod<'_>,
    stage: NetworkStage,
) -> Vec<NetworkPolicyEgressRule> {
    let mut rules = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(selector(&BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    settings.dns_namespace.clone(),
                )]))),
                pod_selector: Some(selector(&settings.dns_pod_labels)),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(selector(&BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    settings.api_namespace().to_string(),
                )]))),
                pod_selector: Some(selector(&settings.api_pod_labels)),
                ..NetworkPolicyPeer::default()
            }]),
            // The API, and its egress proxy when it runs one.
            ports: Some(
                std::iter::once(settings.api_port)
                    .chain(settings.egress_proxy_port)
                    .map(|number| port("TCP", number))
                    .collect(),
            ),
        },
    ];
    let public_port = match stage {
        NetworkStage::Clone => Some(pod.repo_port),
        NetworkStage::AfterClone => pod.public_https_after_clone.then_some(443),
    };
    if let Some(number) = public_port {
        let (v4, v6) = if settings.allow_local_repos && stage == NetworkStage::Clone {
            (Vec::new(), Vec::new())
        } else {
            (strings(&NOT_PUBLIC_V4), strings(&NOT_PUBLIC_V6))
        };
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![ip_block("0.0.0.0/0", v4), ip_block("::/0", v6)]),
            ports: Some(vec![port("TCP", number)]),
        });
    }
    rules
}

fn ip_block(cidr: &str, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then_some(except),
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn port(protocol: &str, number: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(i32::from(number))),
        end_port: None,
    }
}

fn selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..LabelSelector::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// Every container: not root, no privilege to gain, no capabilities, a read-only image.
fn hardened() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(strings(&["ALL"])),
            add: None,
        }),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn resources(resources: &Resources) -> ResourceRequirements {
    let amounts = BTreeMap::from([
        ("cpu".to_string(), Quantity(resources.cpu.clone())),
        ("memory".to_string(), Quantity(resources.memory.clone())),
    ]);
    ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..ResourceRequirements::default()
    }
}

fn empty_dir(name: &str, medium: Option<&str>, size: Option<&str>) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_string),
            size_limit: size.map(|s| Quantity(s.to_string())),
        }),
        ..Volume::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// The port a repository URL is cloned from: its own, or its scheme's (`git@host:path` is SSH).
pub fn repository_port(url: &str) -> u16 {
    match url::Url::parse(url) {
        Ok(parsed) => parsed.port().unwrap_or(match parsed.scheme() {
            "ssh" | "git+ssh" => 22,
            "http" => 80,
            "git" => 9418,
            _ => 443,
        }),
        Err(_) => 22,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_ports_come_from_the_url() {
        assert_eq!(repository_port("https://git.example.invalid/o/r.git"), 443);
        assert_eq!(repository_port("https://git.example:8443/o/r.git"), 8443);
        assert_eq!(repository_port("ssh://git@git.example.invalid/o/r.git"), 22);
        assert_eq!(repository_port("ssh://git@host:2222/o/r.git"), 2222);
        assert_eq!(repository_port("git@git.example.invalid:o/r.git"), 22);
    }

    #[test]
    fn names_fit_kubernetes_limits() {
        let name = object_name("3f8a9b2c-1234-5678-abcd-ef0123456789", 12);
        assert_eq!(name, "ckrv-3f8a9b2c-1234-5678-abcd-ef0123456789-g12");
        assert!(name.len() <= 63);
    }
}
