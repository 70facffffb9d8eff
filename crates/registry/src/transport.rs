//! The HTTP transport: endpoints, the auth handshake, retries and error mapping.
//!
//! Every request goes through [`Transport::send`]: it picks the endpoint (HTTPS, or HTTP for a
//! loopback or `--insecure-registry` registry that does not speak TLS), attaches what it knows
//! of the registry's auth (a cached Bearer token for the scope, or Basic credentials), and on a
//! 401 reads the `WWW-Authenticate` challenge: Basic sends the keychain's credentials, Bearer
//! exchanges them (or nothing, anonymously) at the realm for a token for exactly the scope asked,
//! cached until it expires. Temporary failures (connection errors, 408, 429, 5xx) are retried
//! with exponential backoff, honouring `Retry-After`.
//!
//! Credentials only ever travel in headers; no message this module builds contains one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::challenge;
use crate::errcode::ErrorCode;
use crate::error::{Error, ErrorKind, Result};
use crate::keychain::{base64_encode, Credential};

/// Where credentials come from: the docker config, a helper, or fixed values.
pub trait Keychain: Send + Sync {
    /// The credential for `registry` (a host such as `docker.io` or `localhost:5000`).
    fn get(&self, registry: &str) -> Result<Credential>;
}

impl Keychain for crate::keychain::DockerConfig {
    fn get(&self, registry: &str) -> Result<Credential> {
        crate::keychain::DockerConfig::get(self, registry)
    }
}

/// Fixed credentials for every registry (`login` checks a password with this before storing it).
pub struct StaticKeychain(pub Credential);

impl Keychain for StaticKeychain {
    fn get(&self, _registry: &str) -> Result<Credential> {
        Ok(self.0.clone())
    }
}

/// Transport settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Registries (host or host:port) that may be reached over plain HTTP or with an unverified
    /// certificate, besides loopback ones.
    pub insecure: Vec<String>,
    /// Attempts per request for temporary failures.
    pub attempts: u32,
    /// First backoff; doubled each retry.
    pub backoff: Duration,
    /// A transfer that receives no byte for this long is retried.
    pub stall_timeout: Duration,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure: Vec::new(),
            attempts: 5,
            backoff: Duration::from_millis(500),
            stall_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// Which repositories and actions a request needs, as token scopes
/// (`repository:library/busybox:pull`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    /// No repository (the API root, as `login` asks for).
    pub fn none() -> Scope {
        Scope(Vec::new())
    }
    /// Pull access to `repository`.
    pub fn pull(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull")])
    }
    /// Pull and push access to `repository`.
    pub fn push(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull,push")])
    }
    /// The catalog.
    pub fn catalog() -> Scope {
        Scope(vec!["registry:catalog:*".to_string()])
    }
    /// Adds pull access to another repository (a cross-repository mount's source).
    pub fn and_pull(mut self, repository: &str) -> Scope {
        self.0.push(format!("repository:{repository}:pull"));
        self
    }
    fn key(&self) -> String {
        self.0.join(" ")
    }
}

/// What is known about one registry.
#[derive(Default)]
struct RegistryState {
    /// `https://host` or `http://host`, once chosen.
    base: Option<String>,
    /// A Basic `Authorization` value, once the registry asked for Basic.
    basic: Option<HeaderValue>,
    /// Bearer tokens by scope key, with their expiry.
    tokens: HashMap<String, (HeaderValue, Instant)>,
    /// Whether the registry has answered anything yet: until it has, a refused connection
    /// fails at once (nothing listens there), as docker does; later it is retried.
    answered: bool,
}

/// The HTTP side of the client.
pub struct Transport {
    http: reqwest::Client,
    /// For insecure registries: accepts any certificate.
    http_insecure: reqwest::Client,
    keychain: Box<dyn Keychain>,
    /// Settings.
    pub options: Options,
    state: Mutex<HashMap<String, RegistryState>>,
}

/// The host that serves `registry`'s API.
pub fn api_host(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        r => r,
    }
}

/// Whether `registry` (host[:port]) is on this machine.
pub fn is_loopback(registry: &str) -> bool {
    if let Ok(ip) = registry.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry
            .rsplit_once(':')
            .map_or(registry, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { registry })
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn header_value(s: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// Installs the TLS crypto provider (ring) once per process.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Transport {
    /// A transport with credentials from `keychain`.
    pub fn new(keychain: Box<dyn Keychain>, options: Options) -> Result<Transport> {
        install_crypto();
        let ua = concat!("strata/", env!("CARGO_PKG_VERSION"));
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .user_agent(ua)
                .connect_timeout(options.connect_timeout)
                .tls_danger_accept_invalid_certs(insecure)
                .pool_max_idle_per_host(8)
                .build()
                .map_err(|e| Error::new(ErrorKind::Io, "cannot set up the HTTP client").with_source(e))
        };
        Ok(Transport {
            http: build(false)?,
            http_insecure: build(true)?,
            keychain,
            options,
            state: Mutex::new(HashMap::new()),
        })
    }

    fn is_insecure(&self, registry: &str) -> bool {
        is_loopback(registry) || self.options.insecure.iter().any(|r| r == registry || r == api_host(registry))
    }

    fn client(&self, registry: &str) -> &reqwest::Client {
        if self.is_insecure(registry) {
            &self.http_insecure
        } else {
            &self.http
        }
    }

    fn with_state<T>(&self, registry: &str, f: impl FnOnce(&mut RegistryState) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(st.entry(registry.to_string()).or_default())
    }

    /// The base URL of `registry`: HTTPS, except that an insecure or loopback registry that does
    /// not answer TLS is spoken to over HTTP (docker's behaviour for insecure registries).
    pub async fn base(&self, registry: &str) -> Result<String> {
        if let Some(b) = self.with_state(registry, |s| s.base.clone()) {
            return Ok(b);
        }
        let host = api_host(registry);
        let https = format!("https://{host}");
        let base = if self.is_insecure(registry) {
            // A bounded probe: a server that neither speaks TLS nor closes must not hang us.
            let probe = self.http_insecure.get(format!("{https}/v2/")).timeout(Duration::from_secs(5));
            match probe.send().await {
                Ok(_) => https,
                Err(_) => format!("http://{host}"),
            }
        } else {
            https
        };
        self.with_state(registry, |s| s.base = Some(base.clone()));
        Ok(base)
    }

    fn cached_auth(&self, registry: &str, scope: &Scope) -> Option<HeaderValue> {
        self.with_state(registry, |s| {
            let now = Instant::now();
            s.tokens.retain(|_, (_, exp)| *exp > now);
            s.tokens.get(&scope.key()).map(|(v, _)| v.clone()).or_else(|| s.basic.clone())
        })
    }

    /// Sends the request `build` makes (given the client and the base URL), with auth, retries
    /// and backoff. Returns the response whatever its status once retries are spent or the
    /// status is final; [`check`] turns an error status into an [`Error`].
    pub async fn send(
        &self,
        registry: &str,
        scope: &Scope,
        build: impl Fn(&reqwest::Client, &str) -> RequestBuilder,
    ) -> Result<Response> {
        let base = self.base(registry).await?;
        let client = self.client(registry);
        let mut auth = self.cached_auth(registry, scope);
        let mut authenticated = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut rb = build(client, &base);
            if let Some(a) = &auth {
                rb = rb.header(AUTHORIZATION, a.clone());
            }
            let resp = match rb.send().await {
                Ok(r) => {
                    self.with_state(registry, |s| s.answered = true);
                    r
                }
                Err(e) => {
                    let never = !self.with_state(registry, |s| s.answered);
                    if attempt < self.options.attempts && !e.is_builder() && !(never && e.is_connect()) {
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                        continue;
                    }
                    return Err(unreachable(registry, e));
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated {
                authenticated = true;
                if let Some(a) = self.authenticate(registry, scope, resp.headers()).await? {
                    auth = Some(a);
                    attempt -= 1;
                    continue;
                }
                return Ok(resp);
            }
            if is_temporary(status) && attempt < self.options.attempts {
                let wait = self.backoff(attempt, resp.headers().get(RETRY_AFTER));
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The wait before retry number `attempt`: `Retry-After` when the registry sent one
    /// (capped at a minute), else exponential backoff.
    pub fn backoff(&self, attempt: u32, retry_after: Option<&HeaderValue>) -> Duration {
        if let Some(secs) = retry_after.and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()) {
            return Duration::from_secs(secs.min(60));
        }
        self.options.backoff * 2u32.saturating_pow(attempt.saturating_sub(1).min(6))
    }

    /// Answers a 401's challenge: returns the `Authorization` value to retry with, or `None`
    /// when there is nothing better to send.
    async fn authenticate(&self, registry: &str, scope: &Scope, headers: &HeaderMap) -> Result<Option<HeaderValue>> {
        let challenges: Vec<challenge::Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(challenge::parse)
            .collect();
        let cred = self.keychain.get(registry)?;
        if let Some(bearer) = challenges.iter().find(|c| c.scheme.eq_ignore_ascii_case("bearer")) {
            let realm = bearer.param("realm").ok_or_else(|| {
                Error::new(ErrorKind::Protocol, format!("registry {registry} sent a Bearer challenge without a realm"))
            })?;
            let (token, ttl) = self.fetch_token(registry, realm, bearer.param("service"), scope, &cred).await?;
            let v = header_value(&format!("Bearer {token}"));
            // Expire a little early so a token never dies in flight.
            let exp = Instant::now() + ttl.saturating_sub(Duration::from_secs(10)).max(Duration::from_secs(1));
            self.with_state(registry, |s| s.tokens.insert(scope.key(), (v.clone(), exp)));
            return Ok(Some(v));
        }
        if challenges.iter().any(|c| c.scheme.eq_ignore_ascii_case("basic")) {
            let Credential::Basic { username, password } = &cred else { return Ok(None) };
            let v = header_value(&format!(
                "Basic {}",
                base64_encode(format!("{username}:{}", password.expose()).as_bytes())
            ));
            self.with_state(registry, |s| s.basic = Some(v.clone()));
            return Ok(Some(v));
        }
        Ok(None)
    }

    /// The Bearer token exchange at `realm` (the flow of Docker Hub's `auth.docker.io`).
    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &Scope,
        cred: &Credential,
    ) -> Result<(String, Duration)> {
        let client = self.client(registry);
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let rb = match cred {
                Credential::IdentityToken(t) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", t.expose().to_string()),
                        ("client_id", "strata".to_string()),
                    ];
                    if let Some(s) = service {
                        form.push(("service", s.to_string()));
                    }
                    form.push(("scope", scope.0.join(" ")));
                    let body: String =
                        form.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&");
                    client
                        .request(Method::POST, realm)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body)
                }
                _ => {
                    let mut q: Vec<(&str, &str)> = Vec::new();
                    if let Some(s) = service {
                        q.push(("service", s));
                    }
                    for s in &scope.0 {
                        q.push(("scope", s));
                    }
                    let url = format!(
                        "{realm}{}{}",
                        if realm.contains('?') { "&" } else { "?" },
                        q.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect::<Vec<_>>().join("&")
                    );
                    let rb = client.get(url);
                    match cred {
                        Credential::Basic { username, password } => rb.basic_auth(username, Some(password.expose())),
                        _ => rb,
                    }
                }
            };
            match rb.send().await {
                Ok(r) if is_temporary(r.status()) && attempt < self.options.attempts => {
                    tokio::time::sleep(self.backoff(attempt, r.headers().get(RETRY_AFTER))).await;
                }
                Ok(r) => break r,
                Err(e) if attempt < self.options.attempts => {
                    let _ = e;
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                }
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::Unreachable,
                        format!("cannot reach the token service of {registry}: {}", redact_url(&e)),
                    ))
                }
            }
        };
        let status = resp.status();
        let body = read_capped(resp, 1 << 20).await?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(unauthorized(registry, cred, Some(&body)));
        }
        if !status.is_success() {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("the token service of {registry} answered {status}{}", describe_errors(&body)),
            ));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            Error::new(ErrorKind::Protocol, format!("the token service of {registry} sent a malformed answer"))
                .with_source(e)
        })?;
        let token =
            t.token.filter(|t| !t.is_empty()).or(t.access_token).ok_or_else(|| {
                Error::new(ErrorKind::Protocol, format!("the token service of {registry} sent no token"))
            })?;
        // The spec's default lifetime is 60 s.
        Ok((token, Duration::from_secs(t.expires_in.unwrap_or(60).max(1))))
    }

    /// Whether the keychain holds credentials for `registry`.
    pub fn has_credentials(&self, registry: &str) -> bool {
        !matches!(self.keychain.get(registry), Ok(Credential::Anonymous) | Err(_))
    }

    /// Drops what is cached for `registry` (after a login).
    pub fn forget(&self, registry: &str) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).remove(registry);
    }

    /// The error for an unsuccessful response, from its status and the spec's error body.
    pub async fn error_for(&self, registry: &str, resp: Response, what: &str) -> Error {
        let status = resp.status();
        let body = read_capped(resp, 64 << 10).await.unwrap_or_default();
        let codes = ErrorCode::from_body(&body);
        let first = codes.first().map(|(c, _)| c.clone());
        let detail = describe_errors(&body);
        match (status, first) {
            (StatusCode::UNAUTHORIZED, _) | (_, Some(ErrorCode::Unauthorized)) => {
                let cred = self.keychain.get(registry).unwrap_or(Credential::Anonymous);
                unauthorized(registry, &cred, Some(&body)).context(what)
            }
            (StatusCode::FORBIDDEN, _) | (_, Some(ErrorCode::Denied)) => {
                Error::new(ErrorKind::Denied, format!("{what}: access denied{detail}"))
            }
            (StatusCode::TOO_MANY_REQUESTS, _) | (_, Some(ErrorCode::TooManyRequests)) => Error::new(
                ErrorKind::TooManyRequests,
                format!("{what}: the registry is rate limiting requests (429){detail}; wait and retry, or log in for a higher limit"),
            ),
            (StatusCode::NOT_FOUND, _)
            | (_, Some(ErrorCode::ManifestUnknown | ErrorCode::NameUnknown | ErrorCode::BlobUnknown)) => {
                Error::new(ErrorKind::NotFound, format!("{what}: not found{detail}"))
            }
            _ => Error::new(ErrorKind::Protocol, format!("{what}: the registry answered {status}{detail}")),
        }
    }
}

/// Whether a status is worth retrying.
pub fn is_temporary(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `reqwest`'s error text without the URL's query (which may carry a token service's scope
/// but never a secret; still, keep messages short).
fn redact_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        let mut short = u.clone();
        short.set_query(None);
        s = s.replace(u.as_str(), short.as_str());
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

fn unreachable(registry: &str, e: reqwest::Error) -> Error {
    let what = if e.is_timeout() { "timed out" } else { "failed" };
    // The innermost causes say what happened ("Connection refused", a TLS or DNS error).
    let mut chain: Vec<String> = Vec::new();
    let mut src: Option<&dyn std::error::Error> = Some(&e);
    while let Some(s) = src {
        chain.push(s.to_string());
        src = s.source();
    }
    let cause = chain.iter().rev().take(2).rev().cloned().collect::<Vec<_>>().join(": ");
    Error::new(ErrorKind::Unreachable, format!("cannot reach registry {registry} (connection {what}): {cause}"))
}

/// The error for a refused authentication, with what to do about it.
fn unauthorized(registry: &str, cred: &Credential, body: Option<&[u8]>) -> Error {
    let detail = body.map(describe_errors).unwrap_or_default();
    let msg = match cred {
        Credential::Anonymous => format!(
            "unauthorized: {registry} requires authentication (or the repository does not exist){detail}; run `strata login {registry}`"
        ),
        _ if is_ecr(registry) => {
            let region = registry.split('.').nth(3).unwrap_or("REGION");
            format!(
                "unauthorized: {registry} refused the stored credentials{detail}; ECR passwords expire after 12 hours, renew them with: aws ecr get-login-password --region {region} | strata login --username AWS --password-stdin {registry}"
            )
        }
        _ => format!(
            "unauthorized: {registry} refused the stored credentials{detail}; check them with `strata login {registry}`"
        ),
    };
    Error::new(ErrorKind::Unauthorized, msg)
}

/// Whether `registry` is an AWS ECR registry (`ACCOUNT.dkr.ecr.REGION.amazonaws.com`).
pub fn is_ecr(registry: &str) -> bool {
    let host = registry.split(':').next().unwrap_or(registry);
    host.contains(".dkr.ecr.") && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
}

/// `: CODE: message` for the spec's error body, or nothing.
fn describe_errors(body: &[u8]) -> String {
    let codes = ErrorCode::from_body(body);
    if codes.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = codes
        .iter()
        .take(3)
        .map(|(c, m)| if m.is_empty() { c.as_str().to_string() } else { format!("{}: {}", c.as_str(), m) })
        .collect();
    format!(" ({})", parts.join("; "))
}

/// Reads a response body up to `cap` bytes (error and token bodies are never trusted to be small).
pub async fn read_capped(mut resp: Response, cap: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Error::new(ErrorKind::Unreachable, format!("reading a response failed: {}", redact_url(&e))))?
    {
        if out.len() + chunk.len() > cap {
            return Err(Error::new(ErrorKind::Protocol, format!("a response body is larger than {cap} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for r in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1", "a.localhost:1"] {
            assert!(is_loopback(r), "{r}");
        }
        for r in ["docker.io", "10.0.0.1:5000", "example.com:5000", "localhost.example.com"] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn https_unless_loopback_or_listed() {
        let o = Options { insecure: vec!["myreg.example:5000".into()], ..Options::default() };
        let t = Transport::new(Box::new(StaticKeychain(Credential::Anonymous)), o).unwrap();
        assert!(t.is_insecure("myreg.example:5000"));
        assert!(t.is_insecure("127.0.0.1:5000"));
        assert!(t.is_insecure("localhost:5000"));
        assert!(!t.is_insecure("myreg.example:5001"));
        assert!(!t.is_insecure("docker.io"));
        assert!(!t.is_insecure("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
    }

    #[test]
    fn ecr_hosts() {
        assert!(is_ecr("123456789012.dkr.ecr.eu-west-1.amazonaws.com"));
        assert!(!is_ecr("docker.io"));
        let e = unauthorized(
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            &Credential::Basic { username: "AWS".into(), password: crate::keychain::Secret::new("s3cr3t") },
            None,
        );
        assert!(e.to_string().contains("--region eu-west-1"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"));
    }

    #[test]
    fn backoff_honours_retry_after() {
        let t = Transport::new(Box::new(StaticKeychain(Credential::Anonymous)), Options::default()).unwrap();
        assert_eq!(t.backoff(1, Some(&HeaderValue::from_static("3"))), Duration::from_secs(3));
        assert_eq!(t.backoff(1, Some(&HeaderValue::from_static("9999"))), Duration::from_secs(60));
        assert_eq!(t.backoff(1, None), Duration::from_millis(500));
        assert_eq!(t.backoff(3, None), Duration::from_millis(2000));
    }

    #[test]
    fn scopes() {
        assert_eq!(Scope::push("a/b").and_pull("c/d").key(), "repository:a/b:pull,push repository:c/d:pull");
        assert_eq!(urlencode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
