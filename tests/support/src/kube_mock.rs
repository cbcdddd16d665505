//! A mocked Kubernetes API for the dispatcher's tests: kube-rs's client talks to a
//! `tower-test` mock service, and this module answers every request the way the API server
//! would for Jobs, Pods, Secrets and NetworkPolicies in one namespace — objects kept in
//! memory, lists filtered by label, watch streams the test feeds — while recording each
//! request exactly as sent. No cluster runs on these machines; this stands in for one.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

type ResponseBody = BoxBody<Bytes, Infallible>;

/// One request the dispatcher sent.
#[derive(Debug, Clone)]
pub struct KubeRequest {
    pub method: String,
    /// `jobs`, `pods`, `secrets` or `networkpolicies`.
    pub resource: String,
    pub name: Option<String>,
    /// The query string, decoded.
    pub query: BTreeMap<String, String>,
    /// The body as JSON (`Null` when empty).
    pub body: Value,
}

impl KubeRequest {
    pub fn is(&self, method: &str, resource: &str) -> bool {
        self.method == method && self.resource == resource
    }

    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|w| w == "true")
    }
}

struct Refusal {
    method: String,
    resource: String,
    code: u16,
    message: String,
}

#[derive(Default)]
struct State {
    requests: Vec<KubeRequest>,
    /// By resource, then name.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    watchers: BTreeMap<String, Vec<mpsc::UnboundedSender<Bytes>>>,
    refusals: Vec<Refusal>,
    next_uid: u64,
    resource_version: u64,
}

/// The mocked cluster. Cloning shares it.
#[derive(Clone)]
pub struct MockCluster {
    state: Arc<Mutex<State>>,
    namespace: String,
}

impl MockCluster {
    /// A cluster answering a client whose default namespace is `namespace`.
    pub fn start(namespace: &str) -> (Self, kube::Client) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<ResponseBody>>();
        let cluster = Self {
            state: Arc::default(),
            namespace: namespace.to_string(),
        };
        let serving = cluster.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = serving.respond(request).await;
                send.send_response(response);
            }
        });
        (cluster, kube::Client::new(service, namespace))
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<KubeRequest> {
        self.lock().requests.clone()
    }

    /// The requests that changed something (everything but reads and watches).
    pub fn writes(&self) -> Vec<KubeRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Waits (up to 20 s) for a request `matches`, and returns the first.
    pub async fn wait_for(
        &self,
        what: &str,
        matches: impl Fn(&KubeRequest) -> bool,
    ) -> KubeRequest {
        for _ in 0..400 {
            if let Some(found) = self.requests().into_iter().find(|r| matches(r)) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {what} within 20 s; requests: {:#?}", self.requests());
    }

    /// Waits until something watches `resource`.
    pub async fn wait_watching(&self, resource: &str) {
        self.wait_for(&format!("watch of {resource}"), |r| {
            r.resource == resource && r.is_watch()
        })
        .await;
    }

    /// The stored object, as the cluster holds it now.
    pub fn object(&self, resource: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(resource)?.get(name).cloned()
    }

    /// Names of the stored objects of `resource`.
    pub fn names(&self, resource: &str) -> Vec<String> {
        self.lock()
            .objects
            .get(resource)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Puts an object in the cluster without a request, as if made before the API started.
    pub fn insert(&self, resource: &str, mut object: Value) {
        let mut state = self.lock();
        stamp(&mut state, &mut object);
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        state
            .objects
            .entry(resource.to_string())
            .or_default()
            .insert(name, object);
    }

    /// Changes an object as a controller of the cluster would, and tells its watchers.
    pub fn update(&self, resource: &str, object: Value) {
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let existed = self.object(resource, &name).is_some();
        self.insert(resource, object);
        let stored = self.object(resource, &name).unwrap();
        self.notify(
            resource,
            if existed { "MODIFIED" } else { "ADDED" },
            &stored,
        );
    }

    /// Removes an object and tells its watchers.
    pub fn remove(&self, resource: &str, name: &str) {
        let removed = self
            .lock()
            .objects
            .get_mut(resource)
            .and_then(|o| o.remove(name));
        if let Some(object) = removed {
            self.notify(resource, "DELETED", &object);
        }
    }

    /// Answers the next `method` request on `resource` (and every later one) with `code`.
    pub fn refuse(&self, method: &str, resource: &str, code: u16, message: &str) {
        self.lock().refusals.push(Refusal {
            method: method.to_string(),
            resource: resource.to_string(),
            code,
            message: message.to_string(),
        });
    }

    /// Answers normally again.
    pub fn stop_refusing(&self) {
        self.lock().refusals.clear();
    }

    fn notify(&self, resource: &str, kind: &str, object: &Value) {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        if let Some(watchers) = self.lock().watchers.get_mut(resource) {
            watchers.retain(|w| w.send(line.clone()).is_ok());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    async fn respond(&self, request: Request<kube::client::Body>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        let path = parts.uri.path().to_string();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let Some(at) = segments.iter().position(|s| *s == "namespaces") else {
            return status(404, "NotFound", &format!("no route for {path}"));
        };
        assert_eq!(
            segments.get(at + 1).copied(),
            Some(self.namespace.as_str()),
            "a request outside the namespace: {path}"
        );
        let resource = segments
            .get(at + 2)
            .copied()
            .unwrap_or_default()
            .to_string();
        let name = segments.get(at + 3).map(|s| (*s).to_string());
        let recorded = KubeRequest {
            method: parts.method.to_string(),
            resource: resource.clone(),
            name: name.clone(),
            query,
            body,
        };
        self.lock().requests.push(recorded.clone());

        if let Some((code, message)) = self.lock().refusals.iter().find_map(|r| {
            (r.method == recorded.method && r.resource == resource)
                .then(|| (r.code, r.message.clone()))
        }) {
            return status(code, reason_of(code), &message);
        }
        match (recorded.method.as_str(), name) {
            ("GET", None) if recorded.is_watch() => self.watch(&resource),
            ("GET", None) => self.list(&resource, recorded.query.get("labelSelector")),
            ("GET", Some(name)) => match self.object(&resource, &name) {
                Some(object) => json_response(200, &object),
                None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
            },
            ("POST", None) => self.create(&resource, recorded.body),
            ("PATCH", Some(name)) => self.patch(&resource, &name, &recorded.body),
            ("DELETE", Some(name)) => match self.object(&resource, &name) {
                Some(_) => {
                    self.remove(&resource, &name);
                    json_response(
                        200,
                        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                "details": {"name": name, "kind": resource}}),
                    )
                }
                None => status(404, "NotFound", &format!("{resource} \"{name}\" not found")),
            },
            (method, _) => status(405, "MethodNotAllowed", &format!("{method} {path}")),
        }
    }

    fn create(&self, resource: &str, object: Value) -> Response<ResponseBody> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if self.object(resource, &name).is_some() {
            return status(
                409,
                "AlreadyExists",
                &format!("{resource} \"{name}\" already exists"),
            );
        }
        self.insert(resource, object);
        let stored = self.object(resource, &name).unwrap();
        self.notify(resource, "ADDED", &stored);
        json_response(201, &stored)
    }

    fn patch(&self, resource: &str, name: &str, patch: &Value) -> Response<ResponseBody> {
        let Some(mut object) = self.object(resource, name) else {
            return status(404, "NotFound", &format!("{resource} \"{name}\" not found"));
        };
        merge(&mut object, patch);
        self.update(resource, object);
        json_response(200, &self.object(resource, name).unwrap())
    }

    fn list(&self, resource: &str, selector: Option<&String>) -> Response<ResponseBody> {
        let wanted: Vec<(String, String)> = selector
            .map(|s| {
                s.split(',')
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let state = self.lock();
        let items: Vec<Value> = state
            .objects
            .get(resource)
            .into_iter()
            .flat_map(|o| o.values())
            .filter(|o| {
                wanted
                    .iter()
                    .all(|(k, v)| o["metadata"]["labels"][k].as_str() == Some(v))
            })
            .cloned()
            .collect();
        let (api_version, kind) = kind_of(resource);
        json_response(
            200,
            &json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                    "metadata": {"resourceVersion": state.resource_version.to_string()},
                    "items": items}),
        )
    }

    fn watch(&self, resource: &str) -> Response<ResponseBody> {
        let (send, receive) = mpsc::unbounded_channel::<Bytes>();
        self.lock()
            .watchers
            .entry(resource.to_string())
            .or_default()
            .push(send);
        let frames = futures::stream::unfold(receive, |mut receive| async move {
            let line = receive.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), receive))
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(BoxBody::new(StreamBody::new(frames)))
            .unwrap()
    }
}

/// What the API server adds to an object it stores: a uid, a resource version, its kind.
fn stamp(state: &mut State, object: &mut Value) {
    state.resource_version += 1;
    let metadata = &mut object["metadata"];
    if metadata["uid"].is_null() {
        state.next_uid += 1;
        metadata["uid"] = json!(format!("uid-{}", state.next_uid));
    }
    metadata["resourceVersion"] = json!(state.resource_version.to_string());
}

/// RFC 7386 JSON merge patch, as `Patch::Merge` sends it.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (key, value) in fields {
                if value.is_null() {
                    if let Some(map) = target.as_object_mut() {
                        map.remove(key);
                    }
                } else {
                    merge(&mut target[key], value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "jobs" => ("batch/v1", "Job"),
        "pods" => ("v1", "Pod"),
        "secrets" => ("v1", "Secret"),
        "networkpolicies" => ("networking.k8s.io/v1", "NetworkPolicy"),
        _ => ("v1", "Unknown"),
    }
}

fn reason_of(code: u16) -> &'static str {
    match code {
        403 => "Forbidden",
        404 => "NotFound",
        409 => "AlreadyExists",
        422 => "Invalid",
        _ => "InternalError",
    }
}

fn json_response(code: u16, value: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(BoxBody::new(Full::new(Bytes::from(
            serde_json::to_vec(value).unwrap(),
        ))))
        .unwrap()
}

/// A `Status` failure, as the API server sends one.
fn status(code: u16, reason: &str, message: &str) -> Response<ResponseBody> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}
