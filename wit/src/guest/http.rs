//! A blocking HTTP/1 client over `wasi:http/outgoing-handler`, enough for JSON APIs.

use super::wasi::http::outgoing_handler;
use super::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use super::wasi::io::streams::StreamError;

/// A response with its body read to the end.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The `Location` header, for a redirect the caller may follow.
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// Why a request did not produce a response.
#[derive(Debug)]
pub enum Error {
    /// The URL could not be understood.
    BadUrl(String),
    /// The host refused or the transport failed (includes hosts the allowlist denies).
    Transport(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadUrl(m) => write!(f, "invalid URL: {m}"),
            Self::Transport(m) => f.write_str(m),
        }
    }
}

/// Sends one request that must succeed: a 2xx answer, else an error naming the request and
/// what the server said.
pub fn send_ok(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), String> {
    let response = send(method, url, headers, Some(body))
        .map_err(|e| format!("{method} {url} failed: {e}"))?;
    if (200..300).contains(&response.status) {
        Ok(())
    } else {
        Err(format!(
            "{method} {url} returned {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        ))
    }
}

/// Sends one request and reads the whole response.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, Error> {
    let parts = UrlParts::parse(url)?;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| Error::BadUrl(format!("header {name}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| Error::BadUrl(format!("{what} of {url}"));
    request
        .set_method(&method)
        .map_err(|()| invalid("method"))?;
    request
        .set_scheme(Some(&parts.scheme))
        .map_err(|()| invalid("scheme"))?;
    request
        .set_authority(Some(&parts.authority))
        .map_err(|()| invalid("authority"))?;
    request
        .set_path_with_query(Some(&parts.path))
        .map_err(|()| invalid("path"))?;

    let outgoing_body = request
        .body()
        .map_err(|()| transport("request body already taken"))?;
    if let Some(bytes) = body {
        let stream = outgoing_body
            .write()
            .map_err(|()| transport("request body stream"))?;
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
        drop(stream);
    }
    let future = outgoing_handler::handle(request, None).map_err(error_code)?;
    OutgoingBody::finish(outgoing_body, None).map_err(error_code)?;

    let response = loop {
        match future.get() {
            Some(result) => {
                break result
                    .map_err(|()| transport("response already taken"))?
                    .map_err(error_code)?;
            }
            None => future.subscribe().block(),
        }
    };
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let incoming = response
        .consume()
        .map_err(|()| transport("response body already taken"))?;
    let stream = incoming
        .stream()
        .map_err(|()| transport("response body stream"))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(stream_error(e)),
        }
    }
    drop(stream);
    let _trailers = IncomingBody::finish(incoming);
    Ok(Response {
        status,
        location,
        body,
    })
}

fn transport(msg: &str) -> Error {
    Error::Transport(msg.to_string())
}

fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Closed => transport("connection closed"),
        StreamError::LastOperationFailed(err) => Error::Transport(err.to_debug_string()),
    }
}

fn error_code(e: ErrorCode) -> Error {
    Error::Transport(match e {
        ErrorCode::DnsError(_) | ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::HttpRequestDenied => "request denied: host not in the allowlist".into(),
        other => format!("{other:?}"),
    })
}

struct UrlParts {
    scheme: Scheme,
    authority: String,
    path: String,
}

impl UrlParts {
    fn parse(url: &str) -> Result<Self, Error> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(Error::BadUrl(format!(
                "{url} (expected http:// or https://)"
            )));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(Error::BadUrl(format!("{url} (no host)")));
        }
        Ok(Self {
            scheme,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}
