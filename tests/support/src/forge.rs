//! A git forge on loopback for the publish feature's end-to-end tests: real git smart HTTP
//! (`git http-backend` behind a small CGI bridge, so pushes, hooks and protocol v2 behave as on
//! a real host) and stand-ins of GitHub's and GitLab's REST calls that open a pull (merge)
//! request, strict about what their documentation asks of a client.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::fake_endpoint::Recorded;
use crate::git::git;

/// Where GitHub's errors point.
const GITHUB_DOCS: &str = "https://docs.github.com/rest";
const GITHUB_CREATE_PULL_DOCS: &str =
    "https://docs.github.com/rest/pulls/pulls#create-a-pull-request";
/// The only REST API version the stand-in knows, as `X-GitHub-Api-Version` names it.
const GITHUB_API_VERSION: &str = "2022-11-28";
const GITHUB_MEDIA_TYPE: &str = "application/vnd.github+json";

/// A forge serving the bare repositories under a root; it stops when dropped (not from inside
/// an async context: it owns its runtime).
pub struct Forge {
    pub addr: SocketAddr,
    state: Arc<Shared>,
    _runtime: tokio::runtime::Runtime,
}

/// What the server's handlers and the test share.
struct Shared {
    root: PathBuf,
    token: String,
    /// `http://127.0.0.1:PORT`, for the links the REST answers carry.
    url: String,
    /// `HOME` of `git http-backend`: empty, so no one's global git config changes the server.
    home: tempfile::TempDir,
    log: Mutex<Log>,
}

#[derive(Default)]
struct Log {
    api: Vec<Recorded>,
    git_authorizations: Vec<String>,
    opened: Vec<Value>,
    open: Vec<Open>,
    /// The last number (GitHub) or iid (GitLab) handed out, per repository.
    numbers: HashMap<PathBuf, u64>,
    last_id: u64,
    /// Branch name prefixes `protect` was given, per repository.
    protected: HashMap<PathBuf, Vec<String>>,
}

/// An open pull (merge) request, to refuse a second one for the same branches as forges do.
struct Open {
    repo: PathBuf,
    flavor: Flavor,
    source: String,
    target: String,
    number: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    GitHub,
    GitLab,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        // A handler that panicked leaves nothing half-written that matters to a test.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn repo_dir(&self, path: &str) -> PathBuf {
        self.root.join(format!("{path}.git"))
    }
}

impl Forge {
    /// Serves the bare repositories under `root` (as `root/<owner>/<name>.git`). Git requests
    /// need HTTP basic authentication with any user name and `token` as the password; REST
    /// requests `Authorization: Bearer <token>` (or GitHub's `token <token>`, GitLab's
    /// `PRIVATE-TOKEN`).
    pub fn start(root: &Path, token: &str) -> Self {
        std::fs::create_dir_all(root).expect("create the forge's root");
        let (runtime, listener, addr) = crate::git::loopback_server(2);
        let state = Arc::new(Shared {
            root: root.to_path_buf(),
            token: token.to_owned(),
            url: format!("http://{addr}"),
            home: tempfile::tempdir().expect("a home for git http-backend"),
            log: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(serve)
            // A push of a few megabytes is ordinary; git sends it chunked.
            .layer(DefaultBodyLimit::disable())
            .with_state(Arc::clone(&state));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            state,
            _runtime: runtime,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.state.url.clone()
    }

    /// Creates the bare repository `root/<owner>/<name>.git` with one commit on `main` holding
    /// `files` (path, contents), and returns its clone URL.
    pub fn create_repo(&self, owner: &str, name: &str, files: &[(&str, &str)]) -> String {
        let bare = self.state.repo_dir(&format!("{owner}/{name}"));
        std::fs::create_dir_all(&bare).expect("mkdir the repository");
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        // Receive-pack over HTTP, whatever user name the client gave.
        git(&bare, &["config", "http.receivepack", "true"]);
        let src = tempfile::tempdir().expect("tempdir");
        git(src.path(), &["init", "-q", "-b", "main"]);
        for (path, contents) in files {
            let file = src.path().join(path);
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(file, contents).expect("write a file of the repository");
        }
        git(src.path(), &["add", "-A"]);
        git(
            src.path(),
            &["commit", "-q", "--allow-empty", "-m", "initial"],
        );
        git(
            src.path(),
            &["push", "-q", bare.to_str().expect("utf-8 path"), "main"],
        );
        format!("{}/{owner}/{name}.git", self.state.url)
    }

    /// Makes the repository refuse pushes to branches whose name starts with `prefix`, as
    /// GitHub's protected branches do: a pre-receive hook that says `GH006: ...` (the client
    /// shows it as `remote: GH006: ...`) and declines. Prefixes add up over calls.
    pub fn protect(&self, owner: &str, name: &str, prefix: &str) {
        let bare = self.state.repo_dir(&format!("{owner}/{name}"));
        let prefixes = {
            let mut log = self.state.log();
            let prefixes = log.protected.entry(bare.clone()).or_default();
            prefixes.push(prefix.to_owned());
            prefixes.clone()
        };
        let patterns = prefixes
            .iter()
            .map(|p| format!("'refs/heads/{}'*", p.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" | ");
        let hook = format!(
            "#!/bin/sh\n\
             # Protected branches, as GitHub refuses them.\n\
             status=0\n\
             while read -r old new ref; do\n\
             \x20 case \"$ref\" in\n\
             \x20   {patterns})\n\
             \x20     echo \"GH006: Protected branch update failed for $ref.\" >&2\n\
             \x20     status=1\n\
             \x20     ;;\n\
             \x20 esac\n\
             done\n\
             exit $status\n"
        );
        let hooks = bare.join("hooks");
        std::fs::create_dir_all(&hooks).expect("mkdir hooks");
        let staged = hooks.join("pre-receive.new");
        std::fs::write(&staged, hook).expect("write the pre-receive hook");
        std::fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("make the hook executable");
        std::fs::rename(&staged, hooks.join("pre-receive")).expect("install the hook");
    }

    /// The commit a branch points at in the served repository, if it exists.
    pub fn branch(&self, owner: &str, name: &str, branch: &str) -> Option<String> {
        branch_commit(&self.state.repo_dir(&format!("{owner}/{name}")), branch)
    }

    /// Every REST request (anything under `/api/`), in order, authorized or not.
    pub fn api_requests(&self) -> Vec<Recorded> {
        self.state.log().api.clone()
    }

    /// The pull requests (GitHub) and merge requests (GitLab) opened so far, as the JSON the
    /// stand-in answered with.
    pub fn opened(&self) -> Vec<Value> {
        self.state.log().opened.clone()
    }

    /// Every `Authorization` header a git request carried, right or wrong, in order.
    pub fn git_authorizations(&self) -> Vec<String> {
        self.state.log().git_authorizations.clone()
    }
}

async fn serve(
    State(state): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if uri.path().starts_with("/api/") {
        let request = Recorded {
            method,
            uri,
            headers,
            body,
        };
        state.log().api.push(request.clone());
        // The answers look at the repositories with git, which blocks.
        return tokio::task::spawn_blocking(move || rest(&state, &request))
            .await
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(given) = &authorization {
        state.log().git_authorizations.push(given.clone());
    }
    let Some(user) = authorization
        .as_deref()
        .and_then(|given| basic_user(given, &state.token))
    else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"forge\"")],
            "Unauthorized\n",
        )
            .into_response();
    };
    tokio::task::spawn_blocking(move || http_backend(&state, &method, &uri, &headers, body, &user))
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The user name of HTTP basic credentials whose password is `token`.
fn basic_user(authorization: &str, token: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, encoded) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (password == token).then(|| user.to_owned())
}

/// Runs `git http-backend` for one request, as a web server runs a CGI program.
fn http_backend(
    state: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    user: &str,
) -> Response {
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", uri.path())
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        // The whole body is here (chunked or not), so its length is known.
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", state.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !user.is_empty() {
        command.env("REMOTE_USER", user);
    }
    for (variable, name) in [
        ("CONTENT_TYPE", "content-type"),
        // git gzips large requests; http-backend inflates them itself.
        ("HTTP_CONTENT_ENCODING", "content-encoding"),
        // Protocol v2.
        ("HTTP_GIT_PROTOCOL", "git-protocol"),
    ] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            command.env(variable, value);
        }
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("forge: cannot run git http-backend: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    // Written from another thread while this one reads the answer, so neither pipe fills up.
    let writer = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            // A backend that answers before reading it all (an error) closes the pipe early.
            let _ = stdin.write_all(&body);
        })
    });
    let output = child.wait_with_output();
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            eprintln!("forge: git http-backend: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    if !output.stderr.is_empty() {
        eprintln!(
            "forge: git http-backend {method} {uri}: {}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    if output.stdout.is_empty() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    cgi_response(&output.stdout)
}

/// A CGI program's output as an HTTP response: header lines (`Status:` sets the status), an
/// empty line, the body.
fn cgi_response(output: &[u8]) -> Response {
    let crlf = find(output, b"\r\n\r\n").map(|at| (at, at + 4));
    let lf = find(output, b"\n\n").map(|at| (at, at + 2));
    let Some((head_end, body_start)) = [crlf, lf].into_iter().flatten().min() else {
        eprintln!("forge: git http-backend sent no CGI header");
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut response = Response::new(Body::from(output[body_start..].to_vec()));
    for line in String::from_utf8_lossy(&output[..head_end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            match code.parse().map(StatusCode::from_u16) {
                Ok(Ok(status)) => *response.status_mut() = status,
                _ => return StatusCode::BAD_GATEWAY.into_response(),
            }
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The commit `refs/heads/<branch>` points at; `None` for a missing branch or a name that is
/// not exactly a branch (`main~1` is not one).
fn branch_commit(repo: &Path, branch: &str) -> Option<String> {
    let output = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["show-ref", "--verify", "--hash"])
        .arg(format!("refs/heads/{branch}"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let sha = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !sha.is_empty()).then_some(sha)
}

/// Whether `target` already holds every commit of `source`, so a request would be empty.
fn nothing_to_merge(repo: &Path, source: &str, target: &str) -> bool {
    source == target
        || Command::new("git")
            .arg("--git-dir")
            .arg(repo)
            .args(["merge-base", "--is-ancestor", source, target])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

fn rest(state: &Shared, request: &Recorded) -> Response {
    let path = request.path();
    if let Some(route) = path.strip_prefix("/api/v3/") {
        github(state, request, route)
    } else if let Some(route) = path.strip_prefix("/api/v4/") {
        gitlab(state, request, route)
    } else {
        answer(StatusCode::NOT_FOUND, json!({"message": "Not Found"}))
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A segment of a repository path a forge would accept (and that cannot climb out of the root).
fn plain_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The bearer credential of an `Authorization` header whose scheme is one of `schemes`.
fn credential<'a>(authorization: &'a str, schemes: &[&str]) -> Option<&'a str> {
    let (scheme, given) = authorization.split_once(' ')?;
    schemes
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
        .then(|| given.trim())
}

/// Whether a `Content-Type` names JSON.
fn is_json(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn github_error(status: StatusCode, message: &str) -> Response {
    answer(
        status,
        json!({
            "message": message,
            "documentation_url": GITHUB_DOCS,
            "status": status.as_u16().to_string(),
        }),
    )
}

fn github_invalid(errors: Value) -> Response {
    answer(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({
            "message": "Validation Failed",
            "errors": errors,
            "documentation_url": GITHUB_CREATE_PULL_DOCS,
            "status": "422",
        }),
    )
}

/// GitHub Enterprise's REST API under `/api/v3`: only "create a pull request".
fn github(state: &Shared, request: &Recorded, route: &str) -> Response {
    // GitHub turns a request without a User-Agent away before anything else.
    if request.header("user-agent").is_empty() {
        return github_error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a \
             User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
             Check https://developer.github.com for other possible causes.",
        );
    }
    let token = credential(request.header("authorization"), &["bearer", "token"]);
    if token != Some(state.token.as_str()) {
        return github_error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let accepts = request
        .header("accept")
        .split(',')
        .any(|media| media.split(';').next().unwrap_or("").trim() == GITHUB_MEDIA_TYPE);
    if !accepts {
        return github_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported 'Accept' header: this API expects 'application/vnd.github+json'",
        );
    }
    if let Some(version) = request.headers.get("x-github-api-version")
        && version.as_bytes() != GITHUB_API_VERSION.as_bytes()
    {
        return github_error(StatusCode::BAD_REQUEST, "Invalid API version");
    }
    let segments: Vec<&str> = route.split('/').collect();
    let ["repos", owner, repo, "pulls"] = segments.as_slice() else {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    };
    if request.method != Method::POST || !plain_segment(owner) || !plain_segment(repo) {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    let dir = state.repo_dir(&format!("{owner}/{repo}"));
    if !dir.is_dir() {
        return github_error(StatusCode::NOT_FOUND, "Not Found");
    }
    if !is_json(request.header("content-type")) {
        return github_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported 'Content-Type' header: expected 'application/json'",
        );
    }
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&request.body) else {
        return github_error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    create_pull(state, &fields, owner, repo, &dir)
}

fn create_pull(
    state: &Shared,
    fields: &Map<String, Value>,
    owner: &str,
    repo: &str,
    dir: &Path,
) -> Response {
    // Wrong types are refused as GitHub's schema validation words it.
    for (name, kind) in [
        ("title", "string"),
        ("head", "string"),
        ("base", "string"),
        ("body", "string"),
        ("draft", "boolean"),
        ("maintainer_can_modify", "boolean"),
    ] {
        let fits = match fields.get(name) {
            None | Some(Value::Null) => true,
            Some(Value::String(_)) => kind == "string",
            Some(Value::Bool(_)) => kind == "boolean",
            Some(_) => false,
        };
        if !fits {
            let given = fields.get(name).map(Value::to_string).unwrap_or_default();
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "message": format!(
                        "Invalid request.\n\nFor 'properties/{name}', {given} is not a {kind}."
                    ),
                    "documentation_url": GITHUB_CREATE_PULL_DOCS,
                    "status": "422",
                }),
            );
        }
    }
    let text = |name: &str| fields.get(name).and_then(Value::as_str);
    let missing: Vec<Value> = ["title", "head", "base"]
        .into_iter()
        .filter(|name| text(name).is_none())
        .map(|name| json!({"resource": "PullRequest", "field": name, "code": "missing_field"}))
        .collect();
    let (Some(title), Some(head), Some(base)) = (text("title"), text("head"), text("base")) else {
        return github_invalid(Value::Array(missing));
    };
    // `owner:branch` names a branch of a fork; there are no forks here but the repository's own.
    let head_branch = match head.split_once(':') {
        Some((head_owner, branch)) if head_owner.eq_ignore_ascii_case(owner) => Some(branch),
        Some(_) => None,
        None => Some(head),
    };
    let Some((head_branch, head_sha)) =
        head_branch.and_then(|branch| Some((branch, branch_commit(dir, branch)?)))
    else {
        return github_invalid(
            json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}]),
        );
    };
    let Some(base_sha) = branch_commit(dir, base) else {
        return github_invalid(
            json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}]),
        );
    };
    let empty = nothing_to_merge(dir, &head_sha, &base_sha);
    let mut log = state.log();
    let taken = log.open.iter().any(|open| {
        open.flavor == Flavor::GitHub
            && open.repo == dir
            && open.source == head_branch
            && open.target == base
    });
    if taken {
        return github_invalid(json!([{
            "resource": "PullRequest",
            "code": "custom",
            "message": format!("A pull request already exists for {owner}:{head_branch}."),
        }]));
    }
    if empty {
        return github_invalid(json!([{
            "resource": "PullRequest",
            "code": "custom",
            "message": format!("No commits between {base} and {head_branch}"),
        }]));
    }
    let number = next_number(&mut log, dir);
    log.last_id += 1;
    let url = format!("{}/api/v3/repos/{owner}/{repo}/pulls/{number}", state.url);
    let pull = json!({
        "id": log.last_id,
        "number": number,
        "state": "open",
        "title": title,
        "body": text("body"),
        "draft": fields.get("draft").and_then(Value::as_bool).unwrap_or(false),
        "html_url": format!("{}/{owner}/{repo}/pull/{number}", state.url),
        "url": url,
        "head": {"ref": head_branch, "sha": head_sha, "label": format!("{owner}:{head_branch}")},
        "base": {"ref": base, "sha": base_sha, "label": format!("{owner}:{base}")},
    });
    log.open.push(Open {
        repo: dir.to_path_buf(),
        flavor: Flavor::GitHub,
        source: head_branch.to_owned(),
        target: base.to_owned(),
        number,
    });
    log.opened.push(pull.clone());
    let mut response = answer(StatusCode::CREATED, pull);
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn next_number(log: &mut Log, dir: &Path) -> u64 {
    let number = log.numbers.entry(dir.to_path_buf()).or_default();
    *number += 1;
    *number
}

fn gitlab_message(status: StatusCode, message: Value) -> Response {
    answer(status, json!({"message": message}))
}

/// GitLab's REST API under `/api/v4`: only "create a merge request".
fn gitlab(state: &Shared, request: &Recorded, route: &str) -> Response {
    let bearer = credential(request.header("authorization"), &["bearer"]);
    let token = state.token.as_str();
    if request.header("private-token") != token && bearer != Some(token) {
        return gitlab_message(StatusCode::UNAUTHORIZED, json!("401 Unauthorized"));
    }
    let segments: Vec<&str> = route.split('/').collect();
    let ["projects", id, "merge_requests"] = segments.as_slice() else {
        return answer(StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}));
    };
    if request.method != Method::POST {
        return answer(StatusCode::NOT_FOUND, json!({"error": "404 Not Found"}));
    }
    // The project is its path, URL-encoded: `owner%2Fname`.
    let project =
        percent_decode(id).filter(|path| path.contains('/') && path.split('/').all(plain_segment));
    let Some(project) = project else {
        return gitlab_message(StatusCode::NOT_FOUND, json!("404 Project Not Found"));
    };
    let dir = state.repo_dir(&project);
    if !dir.is_dir() {
        return gitlab_message(StatusCode::NOT_FOUND, json!("404 Project Not Found"));
    }
    let params = match gitlab_params(request) {
        Ok(params) => params,
        Err((status, error)) => return answer(status, error),
    };
    create_merge_request(state, &params, &project, &dir)
}

/// The parameters of a GitLab call: the query string's, then the body's (JSON or a form).
fn gitlab_params(request: &Recorded) -> Result<Map<String, Value>, (StatusCode, Value)> {
    let mut params = Map::new();
    let pairs = |text: &[u8]| -> Vec<(String, Value)> {
        url::form_urlencoded::parse(text)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect()
    };
    params.extend(pairs(request.uri.query().unwrap_or("").as_bytes()));
    let content_type = request.header("content-type");
    if is_json(content_type) {
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(&request.body) else {
            return Err((
                StatusCode::BAD_REQUEST,
                json!({"error": "The request body is not a JSON object"}),
            ));
        };
        params.extend(fields);
    } else if content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        params.extend(pairs(&request.body));
    } else if !request.body.is_empty() {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": format!("The provided content-type '{content_type}' is not supported.")}),
        ));
    }
    Ok(params)
}

fn create_merge_request(
    state: &Shared,
    params: &Map<String, Value>,
    project: &str,
    dir: &Path,
) -> Response {
    let mut problems = Vec::new();
    for name in ["title", "source_branch", "target_branch", "description"] {
        match params.get(name) {
            None | Some(Value::Null) if name != "description" => {
                problems.push(format!("{name} is missing"));
            }
            None | Some(Value::Null | Value::String(_)) => {}
            Some(_) => problems.push(format!("{name} is invalid")),
        }
    }
    let text = |name: &str| params.get(name).and_then(Value::as_str);
    let (Some(title), Some(source), Some(target)) =
        (text("title"), text("source_branch"), text("target_branch"))
    else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": problems.join(", ")}),
        );
    };
    if !problems.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": problems.join(", ")}),
        );
    }
    if source == target {
        return gitlab_message(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["You can't use same project/branch for source and target"]),
        );
    }
    let Some(sha) = branch_commit(dir, source) else {
        return gitlab_message(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["Source branch does not exist"]),
        );
    };
    if branch_commit(dir, target).is_none() {
        return gitlab_message(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!(["Target branch does not exist"]),
        );
    }
    let mut log = state.log();
    let taken = log
        .open
        .iter()
        .find(|open| open.flavor == Flavor::GitLab && open.repo == dir && open.source == source)
        .map(|open| open.number);
    if let Some(iid) = taken {
        return gitlab_message(
            StatusCode::CONFLICT,
            json!([format!(
                "Another open merge request already exists for this source branch: !{iid}"
            )]),
        );
    }
    let iid = next_number(&mut log, dir);
    log.last_id += 1;
    let lowered = title.trim_start().to_ascii_lowercase();
    let draft = ["draft:", "[draft]", "(draft)"]
        .iter()
        .any(|marker| lowered.starts_with(marker));
    let merge_request = json!({
        "id": log.last_id,
        "iid": iid,
        "title": title,
        "description": text("description"),
        "state": "opened",
        "draft": draft,
        "work_in_progress": draft,
        "source_branch": source,
        "target_branch": target,
        "web_url": format!("{}/{project}/-/merge_requests/{iid}", state.url),
        "sha": sha,
    });
    log.open.push(Open {
        repo: dir.to_path_buf(),
        flavor: Flavor::GitLab,
        source: source.to_owned(),
        target: target.to_owned(),
        number: iid,
    });
    log.opened.push(merge_request.clone());
    answer(StatusCode::CREATED, merge_request)
}

/// `%XX` escapes decoded; `None` when the result is not UTF-8 or an escape is broken.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "forge-test-token-3f9a";

    /// git as a client that never asks anyone for credentials and never uses a proxy.
    fn client_git(dir: &Path, args: &[&str]) -> std::process::Output {
        client_git_with(dir, &[], args)
    }

    fn client_git_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
        Command::new("git")
            .current_dir(dir)
            .envs(env.iter().copied())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_ASKPASS")
            .env_remove("SSH_ASKPASS")
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1")
            .args(["-c", "credential.helper=", "-c", "core.askPass="])
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .output()
            .expect("git runs")
    }

    fn ok(dir: &Path, args: &[&str]) -> String {
        let out = client_git(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn with_token(url: &str, password: &str) -> String {
        url.replacen("http://", &format!("http://x-access-token:{password}@"), 1)
    }

    /// Clones `url` with the token into a new directory under `work` and returns it.
    fn clone(work: &Path, url: &str, dir: &str) -> PathBuf {
        ok(work, &["clone", "-q", &with_token(url, TOKEN), dir]);
        work.join(dir)
    }

    /// Commits a change on a new `branch` in `checkout` and returns the commit.
    fn commit_on(checkout: &Path, branch: &str, file: &str) -> String {
        ok(checkout, &["checkout", "-q", "-b", branch]);
        std::fs::write(checkout.join(file), format!("{branch}\n")).expect("write");
        ok(checkout, &["add", "-A"]);
        ok(checkout, &["commit", "-q", "-m", branch]);
        ok(checkout, &["rev-parse", "HEAD"])
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
    }

    #[test]
    fn pushes_over_smart_http_with_the_token_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let forge = Forge::start(root.path(), TOKEN);
        let url = forge.create_repo("o", "r", &[("README.md", "hello\n")]);
        assert_eq!(url, format!("http://{}/o/r.git", forge.addr));
        assert_eq!(forge.url(), format!("http://{}", forge.addr));

        let checkout = clone(work.path(), &url, "c");
        let readme = std::fs::read_to_string(checkout.join("README.md")).expect("README");
        assert_eq!(readme, "hello\n");
        ok(&checkout, &["checkout", "-q", "-b", "ckrv/x"]);
        // Incompressible and over git's 1 MiB post buffer: sent chunked, past axum's default
        // body limit.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..3 << 20)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()[0]
            })
            .collect();
        std::fs::write(checkout.join("noise.bin"), noise).expect("write");
        ok(&checkout, &["add", "-A"]);
        ok(&checkout, &["commit", "-q", "-m", "change"]);
        let commit = ok(&checkout, &["rev-parse", "HEAD"]);
        assert_eq!(forge.branch("o", "r", "ckrv/x"), None);
        ok(&checkout, &["push", "-q", "origin", "ckrv/x"]);
        assert_eq!(forge.branch("o", "r", "ckrv/x"), Some(commit.clone()));
        // Fetched back through upload-pack (protocol v2).
        let again = clone(work.path(), &url, "again");
        ok(&again, &["checkout", "-q", "ckrv/x"]);
        assert_eq!(ok(&again, &["rev-parse", "HEAD"]), commit);
        // ... in protocol v2, which needs the `Git-Protocol` header passed on.
        let traced = client_git_with(
            &again,
            &[("GIT_TRACE_PACKET", "1")],
            &["-c", "protocol.version=2", "ls-remote", "origin", "ckrv/x"],
        );
        assert!(traced.status.success());
        assert!(String::from_utf8_lossy(&traced.stdout).starts_with(&commit));
        let trace = String::from_utf8_lossy(&traced.stderr);
        assert!(trace.contains("git< version 2"), "{trace}");
        // Many local commits make a negotiation long enough for git to gzip it.
        ok(&again, &["checkout", "-q", "-b", "local"]);
        let commits = "for i in $(seq 100); do git -c user.name=T -c user.email=t@e \
                       commit -q --allow-empty -m $i || exit 1; done";
        let made = Command::new("sh")
            .current_dir(&again)
            .args(["-c", commits])
            .status();
        assert!(made.is_ok_and(|status| status.success()));
        ok(&checkout, &["checkout", "-q", "main"]);
        std::fs::write(checkout.join("later.txt"), "later\n").expect("write");
        ok(&checkout, &["add", "-A"]);
        ok(&checkout, &["commit", "-q", "-m", "later"]);
        ok(&checkout, &["push", "-q", "origin", "main"]);
        let fetched = client_git_with(
            &again,
            &[("GIT_TRACE_CURL", "1"), ("GIT_TRACE_CURL_NO_DATA", "1")],
            &["-c", "protocol.version=0", "fetch", "-q", "origin"],
        );
        let trace = String::from_utf8_lossy(&fetched.stderr);
        assert!(fetched.status.success(), "{trace}");
        assert!(trace.contains("Content-Encoding: gzip"), "{trace}");
        assert_eq!(
            ok(&again, &["rev-parse", "origin/main"]),
            forge.branch("o", "r", "main").expect("main")
        );
        ok(&checkout, &["checkout", "-q", "ckrv/x"]);

        {
            use base64::Engine as _;
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{TOKEN}"))
            );
            assert!(forge.git_authorizations().contains(&basic));
        }
        let git_requests = forge.git_authorizations().len();

        // No credentials, then a wrong token: refused, and nothing changes.
        let anonymous = client_git(work.path(), &["clone", "-q", &url, "anonymous"]);
        assert!(!anonymous.status.success());
        assert!(!work.path().join("anonymous").exists());
        let wrong = client_git(
            work.path(),
            &["clone", "-q", &with_token(&url, "wrong"), "wrong"],
        );
        assert!(!wrong.status.success());
        assert!(
            String::from_utf8_lossy(&wrong.stderr).contains("Authentication failed"),
            "{}",
            String::from_utf8_lossy(&wrong.stderr)
        );
        ok(&checkout, &["checkout", "-q", "-b", "ckrv/z"]);
        let push = client_git(
            &checkout,
            &["push", "-q", &with_token(&url, "wrong"), "ckrv/z"],
        );
        assert!(!push.status.success());
        assert_eq!(forge.branch("o", "r", "ckrv/z"), None);
        assert!(forge.git_authorizations().len() > git_requests);
        assert!(forge.api_requests().is_empty());

        let refused = runtime().block_on(async {
            http()
                .get(format!("{url}/info/refs?service=git-receive-pack"))
                .send()
                .await
                .expect("request")
        });
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"forge\""
        );
    }

    #[test]
    fn protected_branches_refuse_pushes_as_github_does() {
        let root = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let forge = Forge::start(root.path(), TOKEN);
        let url = forge.create_repo("o", "r", &[("a.txt", "a\n")]);
        forge.protect("o", "r", "ckrv/");
        let checkout = clone(work.path(), &url, "c");

        commit_on(&checkout, "ckrv/y", "y.txt");
        let push = client_git(&checkout, &["push", "origin", "ckrv/y"]);
        let stderr = String::from_utf8_lossy(&push.stderr);
        assert!(!push.status.success(), "{stderr}");
        assert!(
            stderr.contains("remote: GH006: Protected branch update failed for refs/heads/ckrv/y."),
            "{stderr}"
        );
        assert_eq!(forge.branch("o", "r", "ckrv/y"), None);

        let other = commit_on(&checkout, "feature/z", "z.txt");
        ok(&checkout, &["push", "-q", "origin", "feature/z"]);
        assert_eq!(forge.branch("o", "r", "feature/z"), Some(other));
    }

    #[test]
    fn github_opens_pull_requests_as_documented() {
        let root = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let forge = Forge::start(root.path(), TOKEN);
        let url = forge.create_repo("o", "r", &[("a.txt", "a\n")]);
        let checkout = clone(work.path(), &url, "c");
        let head = commit_on(&checkout, "ckrv/x", "x.txt");
        ok(&checkout, &["push", "-q", "origin", "ckrv/x"]);
        let pulls = format!("{}/api/v3/repos/o/r/pulls", forge.url());
        let bearer = format!("Bearer {TOKEN}");
        // A request as the documentation asks for it, but for the headers in `changes` (`None`
        // leaves one out); answers the status and the JSON.
        let post = |uri: &str, body: &Value, changes: &[(&str, Option<&str>)]| {
            let documented = [
                ("authorization", bearer.as_str()),
                ("user-agent", "ckrv-test"),
                ("accept", GITHUB_MEDIA_TYPE),
                ("x-github-api-version", GITHUB_API_VERSION),
            ];
            let mut request = http().post(uri).json(body);
            for (name, value) in documented {
                let changed = changes.iter().find(|(changed, _)| *changed == name);
                if let Some(value) = changed.map_or(Some(value), |(_, value)| *value) {
                    request = request.header(name, value);
                }
            }
            runtime().block_on(async {
                let response = request.send().await.expect("request");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("JSON answer"))
            })
        };
        let pull = json!({"title": "Do it", "head": "ckrv/x", "base": "main", "body": "why"});

        let (status, created) = post(&pulls, &pull, &[]);
        assert_eq!(status, 201, "{created}");
        let base = forge.url();
        assert_eq!(created["number"], 1);
        assert_eq!(created["state"], "open");
        assert_eq!(created["title"], "Do it");
        assert_eq!(created["body"], "why");
        assert_eq!(created["draft"], false);
        assert_eq!(created["html_url"], format!("{base}/o/r/pull/1"));
        assert_eq!(created["url"], format!("{base}/api/v3/repos/o/r/pulls/1"));
        assert_eq!(created["head"]["ref"], "ckrv/x");
        assert_eq!(created["head"]["sha"], head.as_str());
        assert_eq!(created["base"]["ref"], "main");
        assert_eq!(forge.opened(), vec![created.clone()]);

        let (status, again) = post(&pulls, &pull, &[]);
        assert_eq!(status, 422, "{again}");
        assert_eq!(again["message"], "Validation Failed");
        assert_eq!(
            again["errors"][0]["message"],
            "A pull request already exists for o:ckrv/x."
        );

        let (status, anonymous) = post(&pulls, &pull, &[("authorization", None)]);
        assert_eq!(
            (status, anonymous["message"].as_str()),
            (401, Some("Bad credentials"))
        );
        let (status, wrong) = post(&pulls, &pull, &[("authorization", Some("Bearer wrong"))]);
        assert_eq!(
            (status, wrong["message"].as_str()),
            (401, Some("Bad credentials"))
        );
        let old_style = format!("token {TOKEN}");
        let (status, _) = post(&pulls, &pull, &[("authorization", Some(&old_style))]);
        assert_eq!(status, 422, "`token` is accepted as GitHub does");

        let (status, nameless) = post(&pulls, &pull, &[("user-agent", None)]);
        assert_eq!(status, 403, "{nameless}");
        assert!(
            nameless["message"]
                .as_str()
                .is_some_and(|m| m.contains("User-Agent"))
        );

        let (status, plain) = post(&pulls, &pull, &[("accept", Some("application/json"))]);
        assert_eq!(status, 415, "{plain}");
        let (status, dated) = post(
            &pulls,
            &pull,
            &[("x-github-api-version", Some("2020-01-01"))],
        );
        assert_eq!(
            (status, dated["message"].as_str()),
            (400, Some("Invalid API version"))
        );
        let (status, _) = post(&pulls, &pull, &[("x-github-api-version", None)]);
        assert_eq!(status, 422, "no version is accepted");

        let unknown_head = json!({"title": "t", "head": "ckrv/nope", "base": "main"});
        let (status, unknown) = post(&pulls, &unknown_head, &[]);
        assert_eq!(status, 422, "{unknown}");
        assert_eq!(
            unknown["errors"],
            json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}])
        );
        let untitled = json!({"head": "ckrv/x", "base": "main"});
        let (status, untitled) = post(&pulls, &untitled, &[]);
        assert_eq!(status, 422, "{untitled}");
        assert_eq!(
            untitled["errors"],
            json!([{"resource": "PullRequest", "field": "title", "code": "missing_field"}])
        );
        let no_change = json!({"title": "t", "head": "main", "base": "main"});
        let (status, empty) = post(&pulls, &no_change, &[]);
        assert_eq!(status, 422, "{empty}");
        assert_eq!(
            empty["errors"][0]["message"],
            "No commits between main and main"
        );
        let missing = format!("{}/api/v3/repos/o/missing/pulls", forge.url());
        let (status, elsewhere) = post(&missing, &pull, &[]);
        assert_eq!(
            (status, elsewhere["message"].as_str()),
            (404, Some("Not Found"))
        );

        assert_eq!(forge.opened().len(), 1);
        let requests = forge.api_requests();
        assert_eq!(requests.len(), 13);
        assert_eq!(requests[0].method, Method::POST);
        assert_eq!(requests[0].path(), "/api/v3/repos/o/r/pulls");
        assert_eq!(requests[0].header("authorization"), bearer);
        assert_eq!(requests[0].json::<Value>(), pull);
        assert_eq!(requests[2].header("user-agent"), "ckrv-test");
        assert_eq!(requests[2].header("authorization"), "");
    }

    #[test]
    fn gitlab_opens_merge_requests_as_documented() {
        let root = tempfile::tempdir().expect("tempdir");
        let work = tempfile::tempdir().expect("tempdir");
        let forge = Forge::start(root.path(), TOKEN);
        let url = forge.create_repo("o", "r", &[("a.txt", "a\n")]);
        let checkout = clone(work.path(), &url, "c");
        let head = commit_on(&checkout, "ckrv/x", "x.txt");
        commit_on(&checkout, "ckrv/w", "w.txt");
        ok(&checkout, &["push", "-q", "origin", "ckrv/x", "ckrv/w"]);
        let merge_requests = format!("{}/api/v4/projects/o%2Fr/merge_requests", forge.url());
        let call = |body: Value, token: Option<&str>| {
            runtime().block_on(async {
                let mut request = http().post(&merge_requests).json(&body);
                if let Some(token) = token {
                    request = request.header("private-token", token);
                }
                let response = request.send().await.expect("request");
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("JSON answer"))
            })
        };
        let request = json!({
            "source_branch": "ckrv/x",
            "target_branch": "main",
            "title": "Do it",
            "description": "why",
        });

        let (status, created) = call(request.clone(), Some(TOKEN));
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["iid"], 1);
        assert_eq!(created["state"], "opened");
        assert_eq!(created["draft"], false);
        assert_eq!(created["description"], "why");
        assert_eq!(created["sha"], head.as_str());
        assert_eq!(
            created["web_url"],
            format!("{}/o/r/-/merge_requests/1", forge.url())
        );

        let (status, again) = call(request.clone(), Some(TOKEN));
        assert_eq!(status, 409, "{again}");
        assert_eq!(
            again["message"],
            json!(["Another open merge request already exists for this source branch: !1"])
        );
        let (status, anonymous) = call(request.clone(), None);
        assert_eq!(
            (status, anonymous),
            (401, json!({"message": "401 Unauthorized"}))
        );
        let (status, missing) = call(json!({"source_branch": "ckrv/w"}), Some(TOKEN));
        assert_eq!(
            (status, missing),
            (
                400,
                json!({"error": "title is missing, target_branch is missing"})
            )
        );
        let (status, unknown) = call(
            json!({"source_branch": "ckrv/nope", "target_branch": "main", "title": "t"}),
            Some(TOKEN),
        );
        assert_eq!(status, 422, "{unknown}");

        let (status, draft) = call(
            json!({"source_branch": "ckrv/w", "target_branch": "main", "title": "Draft: later"}),
            Some(TOKEN),
        );
        assert_eq!(status, 201, "{draft}");
        assert_eq!(
            (draft["iid"].as_u64(), draft["draft"].as_bool()),
            (Some(2), Some(true))
        );
        assert_eq!(forge.opened(), vec![created, draft]);
        assert_eq!(forge.api_requests().len(), 6);
    }

    #[test]
    fn cgi_output_becomes_the_response() {
        let response = cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");
        let response = cgi_response(b"Content-Type: x/y\n\nbody\n\nmore");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(percent_decode("o%2Fr").as_deref(), Some("o/r"));
        assert_eq!(percent_decode("o%2"), None);
    }
}
