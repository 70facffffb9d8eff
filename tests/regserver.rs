//! Registry test harness: Debian's real `docker-registry` (distribution 2.8) on 127.0.0.1 in three
//! auth modes (open, htpasswd Basic, token with our own issuer), a fault-injecting TCP proxy to put
//! in front of it, a raw HTTP/1.1 GET, and a hermetic `skopeo` wrapper used as the oracle client.
//! Only 127.0.0.1 addresses are ever used.

#![allow(dead_code)]

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::json;

use crate::util::{self, Run};

/// The `service` of token mode (the JWT audience).
pub const TOKEN_SERVICE: &str = "strata-test-registry";
/// The `issuer` of token mode (the JWT `iss`).
pub const TOKEN_ISSUER: &str = "strata-test-issuer";
/// The htpasswd realm of Basic mode.
pub const BASIC_REALM: &str = "strata-test-realm";

/// How the registry authenticates clients.
#[derive(Clone, Debug)]
pub enum Auth {
    Open,
    /// htpasswd Basic auth; users (name, password), hashed with bcrypt.
    Basic(Vec<(String, String)>),
    /// distribution's `auth: token` mode with our own token issuer. `anonymous_pull`: whether
    /// requests without credentials get pull access.
    Token {
        users: Vec<(String, String)>,
        anonymous_pull: bool,
    },
}

/// A running `docker-registry` with its own temp dir; killed on drop.
pub struct Registry {
    /// "127.0.0.1:PORT" of the registry.
    pub addr: String,
    /// Filesystem rootdirectory of the registry.
    pub storage: PathBuf,
    /// Count of token requests served (stays 0 outside token mode).
    pub token_requests: Arc<AtomicUsize>,
    /// Token mode: the realm, `http://127.0.0.1:PORT/token`.
    pub token_url: Option<String>,
    child: Child,
    token_server: Option<Acceptor>,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry in `auth` mode and waits (≤10 s) until `GET /v2/` answers 200 or 401.
    pub fn start(auth: Auth) -> Registry {
        Registry::start_with(auth, false)
    }

    /// Like [`Registry::start`], serving HTTPS with a self-signed certificate for 127.0.0.1.
    pub fn start_tls(auth: Auth) -> Registry {
        Registry::start_with(auth, true)
    }

    fn start_with(auth: Auth, tls: bool) -> Registry {
        assert!(util::have("docker-registry"), "docker-registry is required (scripts/test.sh installs it)");
        let dir = tempfile::Builder::new().prefix("strata-registry").tempdir_in(util::scratch_base()).expect("tempdir");
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).unwrap();
        let token_requests = Arc::new(AtomicUsize::new(0));
        let mut token_server = None;
        let mut token_url = None;
        let auth_yaml = match auth {
            Auth::Open => String::new(),
            Auth::Basic(users) => {
                let path = dir.path().join("htpasswd");
                let mut s = String::new();
                for (user, pass) in &users {
                    let h = bcrypt::hash(pass, 4).expect("bcrypt");
                    s.push_str(&format!("{user}:{h}\n"));
                }
                fs::write(&path, s).unwrap();
                format!("auth:\n  htpasswd:\n    realm: {BASIC_REALM}\n    path: {}\n", yaml_path(&path))
            }
            Auth::Token { users, anonymous_pull } => {
                let key = dir.path().join("token.key");
                let crt = dir.path().join("token.crt");
                util::sh(&format!(
                    "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=strata-test-token -keyout '{}' -out '{}' -days 2 2>&1",
                    key.display(),
                    crt.display()
                ));
                let pem = fs::read_to_string(&crt).unwrap();
                // The PEM body is already the standard base64 of the DER.
                let x5c: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind token issuer");
                let realm = format!("http://{}/token", listener.local_addr().unwrap());
                let issuer =
                    Arc::new(TokenIssuer { users, anonymous_pull, key, x5c, requests: token_requests.clone() });
                token_server = Some(spawn_acceptor(listener, move |s| issuer.serve(s)));
                let yaml = format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                    yaml_path(&crt)
                );
                token_url = Some(realm);
                yaml
            }
        };
        let tls_yaml = if tls {
            let key = dir.path().join("tls.key");
            let crt = dir.path().join("tls.crt");
            util::sh(&format!(
                "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout '{}' -out '{}' -days 2 2>&1",
                key.display(),
                crt.display()
            ));
            format!("  tls:\n    certificate: {}\n    key: {}\n", yaml_path(&crt), yaml_path(&key))
        } else {
            String::new()
        };
        let log_path = dir.path().join("registry.log");
        let config = dir.path().join("config.yml");
        // The port is picked by binding and releasing it; on the rare race, try another.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: info\n  formatter: text\n  fields:\n    service: registry\n\
                     storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                     http:\n  addr: {addr}\n  secret: strata-test-http-secret\n  headers:\n    X-Content-Type-Options: [nosniff]\n\
                     {tls_yaml}{auth_yaml}",
                    yaml_path(&storage)
                ),
            )
            .unwrap();
            let log = fs::File::create(&log_path).expect("registry log");
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&config).stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log);
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let mut child = cmd.spawn().expect("spawn docker-registry");
            match wait_ready(&mut child, &addr, tls) {
                Ok(()) => {
                    return Registry { addr, storage, token_requests, token_url, child, token_server, log_path, dir }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    if attempt < 3 && log.contains("address already in use") {
                        continue;
                    }
                    panic!(
                        "docker-registry did not come up on {addr}: {why}\nconfig:\n{}\nlog:\n{log}",
                        fs::read_to_string(&config).unwrap()
                    );
                }
            }
        }
    }

    /// Where the filesystem driver keeps a blob's bytes.
    pub fn blob_data_path(&self, digest_hex: &str) -> PathBuf {
        self.storage.join("docker/registry/v2/blobs/sha256").join(&digest_hex[..2]).join(digest_hex).join("data")
    }

    /// The registry's stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The registry's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.token_server.take();
    }
}

/// A path as a YAML scalar (a JSON string is a valid double-quoted YAML scalar).
fn yaml_path(p: &Path) -> String {
    serde_json::to_string(p.to_str().expect("utf-8 path")).unwrap()
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().unwrap().port()
}

fn wait_ready(child: &mut Child, addr: &str, tls: bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("it exited with {st}"));
        }
        match http_get(addr, "/v2/", &[]) {
            Ok(r) if r.status == 200 || r.status == 401 => return Ok(()),
            // Go's TLS server answers plain HTTP with 400: it is up.
            Ok(r) if tls && r.status == 400 => return Ok(()),
            Ok(r) => last = format!("GET /v2/ answered {}", r.status),
            Err(e) => last = format!("GET /v2/: {e}"),
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after 10 s ({last})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Accept loop shared by the token issuer and the proxy.

/// A listener thread that hands each connection to its own thread; drop stops accepting.
struct Acceptor {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn spawn_acceptor(listener: TcpListener, handler: impl Fn(TcpStream) + Send + Sync + 'static) -> Acceptor {
    let addr = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let handler = Arc::new(handler);
    let st = stop.clone();
    let thread = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if st.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let h = handler.clone();
            std::thread::spawn(move || h(conn));
        }
    });
    Acceptor { addr, stop, thread: Some(thread) }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept().
        let _ = TcpStream::connect_timeout(&self.addr.parse().unwrap(), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Token issuer.

struct TokenIssuer {
    users: Vec<(String, String)>,
    anonymous_pull: bool,
    key: PathBuf,
    /// Standard base64 of the certificate's DER.
    x5c: String,
    requests: Arc<AtomicUsize>,
}

impl TokenIssuer {
    fn serve(&self, mut s: TcpStream) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let Some(RequestHead { method, target, headers }) = read_request_head(&s) else { return };
        self.requests.fetch_add(1, Ordering::SeqCst);
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if method != "GET" || path != "/token" {
            let _ = write_response(
                &mut s,
                404,
                "Not Found",
                &[],
                br#"{"errors":[{"code":"NOT_FOUND","message":"no such endpoint"}]}"#,
            );
            return;
        }
        let mut service = TOKEN_SERVICE.to_string();
        let mut scopes = Vec::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_decode(v);
            match percent_decode(k).as_str() {
                "service" => service = v,
                "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_string)),
                _ => {} // account, client_id, offline_token: not needed
            }
        }
        // Who is asking.
        let mut subject = None;
        if let Some((_, v)) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
            let user = v
                .strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
                .and_then(|b| STANDARD.decode(b.trim()).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|up| {
                    let (u, p) = up.split_once(':')?;
                    self.users.iter().any(|(uu, pp)| uu == u && pp == p).then(|| u.to_string())
                });
            match user {
                Some(u) => subject = Some(u),
                None => {
                    let _ = write_response(
                        &mut s,
                        401,
                        "Unauthorized",
                        &[("WWW-Authenticate", &format!("Basic realm=\"{TOKEN_ISSUER}\""))],
                        br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required: invalid username or password"}]}"#,
                    );
                    return;
                }
            }
        }
        // What they get.
        let mut access = Vec::new();
        for scope in &scopes {
            let Some((typ, rest)) = scope.split_once(':') else { continue };
            let Some((name, actions)) = rest.rsplit_once(':') else { continue };
            let asked = actions.split(',').filter(|a| !a.is_empty());
            let granted: Vec<&str> = if subject.is_some() {
                asked.collect()
            } else if self.anonymous_pull && typ == "repository" {
                asked.filter(|a| *a == "pull").collect()
            } else {
                Vec::new()
            };
            if !granted.is_empty() {
                access.push(serde_json::json!({"type": typ, "name": name, "actions": granted}));
            }
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject.clone().unwrap_or_default(),
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{:016x}{:016x}", rand_u64(), rand_u64()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        let sig = match rs256_sign(&self.key, signing_input.as_bytes()) {
            Ok(sig) => sig,
            Err(e) => {
                eprintln!("token issuer: signing failed: {e}");
                let _ = write_response(&mut s, 500, "Internal Server Error", &[], e.as_bytes());
                return;
            }
        };
        let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
        let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300, "issued_at": rfc3339(now)});
        let _ = write_response(&mut s, 200, "OK", &[], &serde_json::to_vec(&body).unwrap());
    }
}

/// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) by `openssl dgst`; the raw signature bytes.
fn rs256_sign(key: &Path, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("openssl")
        .arg("dgst")
        .arg("-sha256")
        .arg("-sign")
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn openssl: {e}"))?;
    child.stdin.take().unwrap().write_all(data).map_err(|e| format!("write to openssl: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("wait openssl: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!("openssl dgst -sign failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}

/// A request line and headers.
struct RequestHead {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

/// Reads a request line and headers.
fn read_request_head(s: &TcpStream) -> Option<RequestHead> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Some(RequestHead { method, target, headers })
}

fn write_response(
    s: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let _ = s.shutdown(Shutdown::Write);
    Ok(())
}

/// Percent-decoding of a query component ('+' is a space).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// UTC seconds since the epoch as RFC 3339.
fn rfc3339(secs: u64) -> String {
    // Civil-from-days (Howard Hinnant).
    let z = (secs / 86400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let t = secs % 86400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t % 3600 / 60, t % 60)
}

/// A non-cryptographic random number, different on every call.
pub fn rand_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    // splitmix64 of time, pid and counter.
    let mut z = t ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random alphanumeric string.
pub fn rand_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n).map(|_| CHARS[(rand_u64() % CHARS.len() as u64) as usize] as char).collect()
}

/// `n` pseudo-random (incompressible) bytes.
pub fn rand_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        out.extend_from_slice(&rand_u64().to_le_bytes());
    }
    out.truncate(n);
    out
}

// ---------------------------------------------------------------------------------------------
// Fault-injecting proxy.

/// What the proxy does to the server→client bytes.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    None,
    /// Server→client bytes throttled to this many bytes per second (per connection).
    Throttle(u64),
    /// Cut (shutdown both ways) each server→client stream after this many bytes, only for the
    /// first `times` connections that carry that many bytes; later connections pass through.
    CutAfter {
        bytes: u64,
        times: usize,
    },
    /// The first `times` connections that carry `after` server→client bytes stall there: the
    /// connection stays open but no further byte is forwarded (for up to 60 s).
    Freeze {
        after: u64,
        times: usize,
    },
    /// Requests lose their `Range` header on the way (a registry or CDN that ignores ranges and
    /// answers 200 with the whole blob). Only for body-less requests (GET, HEAD).
    IgnoreRange,
    /// The first `times` connections get an HTTP `code` answer (with `Retry-After: retry_after`
    /// seconds when set) to their first request, then are closed; later connections pass through.
    Status {
        code: u16,
        times: usize,
        retry_after: Option<u32>,
    },
}

/// A TCP proxy on 127.0.0.1 in front of `upstream`, one upstream connection per client
/// connection. Drop stops accepting and closes the connections still open.
pub struct Proxy {
    pub addr: String,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Streams cut so far (`Fault::CutAfter`).
    pub cuts: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<Acceptor>,
}

/// Starts a proxy to `upstream` ("127.0.0.1:PORT") injecting `fault`.
pub fn start_proxy(upstream: &str, fault: Fault) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let cuts = Arc::new(AtomicUsize::new(0));
    let live = Arc::new(Mutex::new(Vec::new()));
    let (up, conns, cs, lv) = (upstream.to_string(), connections.clone(), cuts.clone(), live.clone());
    let acceptor = spawn_acceptor(listener, move |client| {
        conns.fetch_add(1, Ordering::SeqCst);
        proxy_conn(client, &up, fault, &cs, &lv);
    });
    Proxy { addr, connections, cuts, live, acceptor: Some(acceptor) }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.take();
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Forwards request heads from `from` to `to` without their `Range` lines (body-less requests).
fn copy_without_range(from: &mut TcpStream, to: &mut TcpStream) -> io::Result<()> {
    let mut first = [0u8; 1];
    if from.peek(&mut first)? == 1 && first[0] == 0x16 {
        // A TLS hello (an HTTPS probe): not HTTP, pass it through untouched.
        io::copy(from, to)?;
        return Ok(());
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return to.write_all(&pending);
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            let text = String::from_utf8_lossy(&head);
            let kept: String =
                text.split_inclusive("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("range:")).collect();
            to.write_all(kept.as_bytes())?;
        }
    }
}

fn proxy_conn(client: TcpStream, upstream: &str, fault: Fault, cuts: &AtomicUsize, live: &Mutex<Vec<TcpStream>>) {
    if let Fault::Status { code, times, retry_after } = fault {
        // A TLS hello (a client probing for HTTPS) is refused by closing, as a plain-HTTP server
        // would fail it; it does not use up an injected answer.
        let mut first = [0u8; 1];
        if client.peek(&mut first).is_ok_and(|n| n == 1) && first[0] == 0x16 {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        if cuts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < times).then_some(c + 1)).is_ok() {
            // Read the request head, answer with the status, close.
            let mut c = client;
            let mut head = Vec::new();
            let mut b = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&b[..n]),
                }
            }
            let ra = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
            let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"injected by the test proxy"}]}"#;
            let _ = write!(
                c,
                "HTTP/1.1 {code} Injected\r\n{ra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = c.shutdown(Shutdown::Both);
            return;
        }
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut l = live.lock().unwrap();
        l.push(client.try_clone().unwrap());
        l.push(server.try_clone().unwrap());
    }
    // client → server: as is.
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let strip_range = matches!(fault, Fault::IgnoreRange);
    let up = std::thread::spawn(move || {
        if strip_range {
            let _ = copy_without_range(&mut c_read, &mut s_write);
        } else {
            let _ = io::copy(&mut c_read, &mut s_write);
        }
        let _ = s_write.shutdown(Shutdown::Write);
    });
    // server → client: with the fault.
    let (mut s_read, mut c_write) = (server.try_clone().unwrap(), client.try_clone().unwrap());
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent: u64 = 0;
    let mut cut_decided = false;
    let start = Instant::now();
    loop {
        let max = match fault {
            Fault::Throttle(rate) => ((rate / 10) as usize).clamp(1, buf.len()),
            _ => buf.len(),
        };
        let n = match s_read.read(&mut buf[..max]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Fault::Freeze { after, times } = fault {
            if !cut_decided && sent + n as u64 >= after {
                cut_decided = true;
                if cuts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < times).then_some(c + 1)).is_ok() {
                    let keep = (after - sent) as usize;
                    let _ = c_write.write_all(&buf[..keep]);
                    // Hold the connection silent until the client gives up on it (or 60 s).
                    let _ = client.set_read_timeout(Some(Duration::from_millis(100)));
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut probe = [0u8; 1];
                    while Instant::now() < deadline {
                        match client.peek(&mut probe) {
                            Ok(0) => break,
                            Err(e) if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut => {
                                break
                            }
                            _ => std::thread::sleep(Duration::from_millis(100)),
                        }
                    }
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    let _ = up.join();
                    return;
                }
            }
        }
        if let Fault::CutAfter { bytes, times } = fault {
            if !cut_decided && sent + n as u64 >= bytes {
                cut_decided = true;
                let claimed = cuts.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < times).then_some(c + 1));
                if claimed.is_ok() {
                    let keep = (bytes - sent) as usize;
                    let _ = c_write.write_all(&buf[..keep]);
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    let _ = up.join();
                    return;
                }
            }
        }
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if let Fault::Throttle(rate) = fault {
            let due = Duration::from_secs_f64(sent as f64 / rate.max(1) as f64);
            let elapsed = start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    let _ = c_write.shutdown(Shutdown::Write);
    let _ = up.join();
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1.

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// `GET path` on a fresh connection with `Connection: close`; every byte the server sent until it
/// closed (or reset) the connection. Errors only when nothing could be sent or read at all.
pub fn http_get_raw(addr: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: strata-tests\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break, // reset after some bytes: return what came
        }
    }
    Ok(out)
}

/// `GET path`, parsed; an error if the response is incomplete.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<HttpResponse> {
    let raw = http_get_raw(addr, path, headers)?;
    parse_response(&raw).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("incomplete HTTP response ({} bytes)", raw.len()))
    })
}

/// Parses a whole response (Content-Length, chunked, or until close); None if it is cut short.
pub fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut r = HttpResponse { status, headers, body: Vec::new() };
    if r.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut p = rest;
        loop {
            let le = p.windows(2).position(|w| w == b"\r\n")?;
            let size_s = std::str::from_utf8(&p[..le]).ok()?;
            let size = usize::from_str_radix(size_s.split(';').next()?.trim(), 16).ok()?;
            p = &p[le + 2..];
            if size == 0 {
                break;
            }
            if p.len() < size + 2 {
                return None;
            }
            r.body.extend_from_slice(&p[..size]);
            p = &p[size + 2..];
        }
    } else if let Some(n) = r.header("content-length") {
        let n: usize = n.parse().ok()?;
        if rest.len() < n {
            return None;
        }
        r.body = rest[..n].to_vec();
    } else {
        r.body = rest.to_vec();
    }
    Some(r)
}

// ---------------------------------------------------------------------------------------------
// skopeo, hermetic.

/// `skopeo` with its own policy (accept anything), auth file, registries.conf, registries.d and
/// HOME, so the host's configuration and credentials are never used.
pub struct Skopeo {
    pub dir: tempfile::TempDir,
}

impl Skopeo {
    pub fn new() -> Skopeo {
        let dir = tempfile::Builder::new().prefix("strata-skopeo").tempdir_in(util::scratch_base()).expect("tempdir");
        let p = dir.path();
        fs::write(p.join("policy.json"), r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        fs::write(p.join("auth.json"), "{}").unwrap();
        fs::write(p.join("registries.conf"), "").unwrap();
        for d in ["registries.d", "home", "config", "run"] {
            fs::create_dir_all(p.join(d)).unwrap();
        }
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(p.join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        }
        Skopeo { dir }
    }

    /// `skopeo --policy … --registries.d … ARGS…`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let p = self.dir.path();
        let mut c = Command::new("skopeo");
        c.arg("--policy").arg(p.join("policy.json")).arg("--registries.d").arg(p.join("registries.d")).args(args);
        c.env("HOME", p.join("home"))
            .env("XDG_CONFIG_HOME", p.join("config"))
            .env("XDG_RUNTIME_DIR", p.join("run"))
            .env("REGISTRY_AUTH_FILE", p.join("auth.json"))
            .env("CONTAINERS_REGISTRIES_CONF", p.join("registries.conf"))
            .env_remove("DOCKER_CONFIG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from_output(self.cmd(args).output().expect("run skopeo"))
    }
}

/// An OCI layout holding one small image, with what tests need to know about it.
pub struct TestImage {
    /// The layout directory.
    pub layout: PathBuf,
    /// The `org.opencontainers.image.ref.name` of the image in the layout.
    pub refname: String,
    /// Manifest digest hex.
    pub manifest: String,
    /// The (gzip) layer blob: digest hex and bytes.
    pub layer_digest: String,
    pub layer: Vec<u8>,
}

impl TestImage {
    /// `oci:LAYOUT:REF` for skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.layout.display(), self.refname)
    }
}

/// Writes an image with one layer holding `payload_len` random bytes (so the layer blob is about
/// that big) as an OCI layout at `dir`.
pub fn test_image(dir: &Path, payload_len: usize) -> TestImage {
    let layer = util::Layer::new()
        .dir("etc/", 0o755)
        .file("etc/motd", b"strata registry test\n", 0o644)
        .file("payload.bin", &rand_bytes(payload_len), 0o644)
        .finish();
    let refname = "latest".to_string();
    let manifest = util::write_oci_layout(dir, &refname, &[layer], None);
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("blobs/sha256").join(&manifest)).unwrap()).unwrap();
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let layer = fs::read(dir.join("blobs/sha256").join(&layer_digest)).unwrap();
    TestImage { layout: dir.to_path_buf(), refname, manifest, layer_digest, layer }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the registry tests (registry.rs, registry_push.rs, registry_copy.rs).

/// Whether docker-registry, skopeo and openssl are here (in CI they must be); says so if not.
pub fn need_tools() -> bool {
    let ok = util::have("docker-registry") && util::have("skopeo") && util::have("openssl");
    assert!(
        ok || std::env::var("CI").is_err(),
        "docker-registry, skopeo and openssl are required in CI (scripts/test.sh installs them)"
    );
    if !ok {
        println!("skipped: docker-registry, skopeo or openssl is not installed");
    }
    ok
}

/// A fresh scratch directory, removed on drop.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("strata-regtest").tempdir_in(util::scratch_base()).expect("tempdir")
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Asserts that `what` succeeded, showing its output and the registry log's tail if not; returns stdout.
#[track_caller]
pub fn ok<'a>(r: &'a Run, reg: &Registry, what: &str) -> &'a str {
    assert_eq!(
        r.code,
        0,
        "{what} failed\nstdout:\n{}\nstderr:\n{}\nregistry log (tail):\n{}",
        r.stdout,
        r.stderr,
        tail(&reg.log(), 40)
    );
    &r.stdout
}

/// skopeo pushes `src` (such as `oci:DIR:REF`) to `docker://ADDR/DEST` with `extra` flags (`--all`, `--dest-creds`).
#[track_caller]
pub fn push(sk: &Skopeo, reg: &Registry, src: &str, dest: &str, extra: &[&str]) {
    let dest = format!("docker://{}/{dest}", reg.addr);
    let mut a = vec!["copy", "-q", "--dest-tls-verify=false"];
    a.extend_from_slice(extra);
    a.extend([src, dest.as_str()]);
    let r = sk.run(&a);
    assert_eq!(r.code, 0, "push to {dest} failed\n{}{}\nregistry log:\n{}", r.stdout, r.stderr, reg.log());
}

/// `skopeo inspect --raw IMAGE` (`--tls-verify=false` for a registry, `--creds` if given), as bytes.
#[track_caller]
pub fn raw_manifest(sk: &Skopeo, image: &str, creds: Option<&str>) -> Vec<u8> {
    let mut args = vec!["inspect", "--raw"];
    if image.starts_with("docker://") {
        args.push("--tls-verify=false");
    }
    if let Some(c) = creds {
        args.extend(["--creds", c]);
    }
    args.push(image);
    let o = sk.cmd(&args).output().expect("run skopeo");
    assert!(o.status.success(), "skopeo inspect --raw {image}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// One access-log line of the registry: `127.0.0.1 - - [date] "METHOD TARGET PROTO" STATUS SIZE "REF" "UA"`.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub target: String,
    /// `HTTP/1.1`, …
    pub proto: String,
    pub status: u16,
    /// Bytes of the response body (0 if the line has none).
    pub size: u64,
    pub agent: String,
}

impl Req {
    /// Whether strata sent it.
    pub fn by_strata(&self) -> bool {
        self.agent.starts_with("strata/")
    }
    /// Whether it moves blob bytes or opens/commits an upload (POST, PATCH, PUT on uploads).
    pub fn is_upload(&self) -> bool {
        self.target.contains("/blobs/uploads/") && self.method != "GET" && self.method != "HEAD"
    }
}

/// The registry's access log so far, one [`Req`] a request, in order.
pub fn requests(reg: &Registry) -> Vec<Req> {
    reg.log()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("] \"")?;
            let (line, rest) = rest.split_once("\" ")?;
            let mut p = line.split(' ');
            let (method, target, proto) = (p.next()?, p.next()?, p.next()?);
            if !proto.starts_with("HTTP/") {
                return None;
            }
            let mut fields = rest.split(' ');
            let status = fields.next()?.parse().ok()?;
            let size = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let agent = rest.rsplit_once(" \"").map(|(_, a)| a.trim_end_matches('"')).unwrap_or("");
            Some(Req {
                method: method.into(),
                target: target.into(),
                proto: proto.into(),
                status,
                size,
                agent: agent.into(),
            })
        })
        .collect()
}

/// Requests one a line (method, target, status, agent), for failure messages.
pub fn show(reqs: &[Req]) -> String {
    reqs.iter().map(|r| format!("{} {} {} {}\n", r.method, r.target, r.status, r.agent)).collect()
}

/// This host's architecture, in OCI's words.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        other => panic!("unexpected host architecture {other}"),
    }
}

/// An address ("127.0.0.1:PORT") that nobody listens on.
pub fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// The hex part of a `sha256:…` digest.
pub fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {d}"))
}

/// The uncompressed bytes of a gzip stream (a layer blob).
pub fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut tar).unwrap();
    tar
}

/// A layer tar: `etc/motd` ("layer NAME"), `data/NAME` ("this is NAME"), `data/NAME.bin` (`payload` random bytes).
pub fn layer(name: &str, payload: usize) -> Vec<u8> {
    util::Layer::new()
        .dir("etc/", 0o755)
        .file("etc/motd", format!("layer {name}\n").as_bytes(), 0o644)
        .dir("data/", 0o755)
        .file(&format!("data/{name}"), format!("this is {name}\n").as_bytes(), 0o644)
        .file(&format!("data/{name}.bin"), &rand_bytes(payload), 0o644)
        .finish()
}

/// A multi-platform OCI layout made by [`write_multiarch_layout`]; digests are `sha256:…`.
pub struct MultiArch {
    /// The image index: its digest, and its bytes.
    pub index: String,
    pub index_bytes: Vec<u8>,
    /// One image per architecture, in the order asked for.
    pub images: Vec<ArchImage>,
}

/// One single-layer linux image of a [`MultiArch`].
pub struct ArchImage {
    pub arch: String,
    pub manifest: String,
    pub config: String,
    /// The (gzip) layer blob.
    pub layer: String,
    /// The layer's diff ID.
    pub diff_id: String,
}

impl MultiArch {
    /// The image for `arch`.
    pub fn image(&self, arch: &str) -> &ArchImage {
        self.images.iter().find(|i| i.arch == arch).unwrap_or_else(|| panic!("no {arch} image"))
    }
}

/// Writes at `dir` an OCI layout naming (as `refname`) an index of one image per arch, its `arch.txt` saying which.
pub fn write_multiarch_layout(dir: &Path, refname: &str, archs: &[&str]) -> MultiArch {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let h = util::sha256_hex(bytes);
        fs::write(blobs.join(&h), bytes).unwrap();
        (h, bytes.len())
    };
    let mut images = Vec::new();
    let mut descs = Vec::new();
    for arch in archs {
        let tar = util::Layer::new()
            .file("arch.txt", format!("{arch}\n").as_bytes(), 0o644)
            .file("filler.bin", &rand_bytes(8 << 10), 0o644)
            .finish();
        let diff_id = util::sha256_hex(&tar);
        let (lh, ln) = put(&util::gzip(&tar));
        let config = json!({
            "created": "2024-01-01T00:00:00Z", "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": format!("layer for {arch}")}],
        });
        let (ch, cn) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{ch}"), "size": cn},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{lh}"), "size": ln}],
        });
        let (mh, mn) = put(&serde_json::to_vec(&manifest).unwrap());
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{mh}"), "size": mn,
            "platform": {"architecture": arch, "os": "linux"},
        }));
        images.push(ArchImage {
            arch: arch.to_string(),
            manifest: format!("sha256:{mh}"),
            config: format!("sha256:{ch}"),
            layer: format!("sha256:{lh}"),
            diff_id: format!("sha256:{diff_id}"),
        });
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs});
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let (ih, in_) = put(&index_bytes);
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{ih}"), "size": in_,
        "annotations": {"org.opencontainers.image.ref.name": refname},
    }]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    MultiArch { index: format!("sha256:{ih}"), index_bytes, images }
}

// ---------------------------------------------------------------------------------------------
// Self-tests.

#[track_caller]
fn fails_with_log(r: &Run, reg: &Registry, what: &str) {
    assert_ne!(r.code, 0, "{what} should have failed\nstdout:\n{}\nregistry log:\n{}", r.stdout, reg.log());
}

#[test]
fn regserver_open_mode_push_and_inspect() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = test_image(&tmp.path().join("layout"), 4096);
    let sk = Skopeo::new();
    let dest = format!("docker://{}/test/img:1", reg.addr);
    let r = sk.run(&["copy", "-q", "--dest-tls-verify=false", &img.oci_ref(), &dest]);
    ok(&r, &reg, "push");
    let r = sk.run(&["inspect", "--tls-verify=false", &dest]);
    ok(&r, &reg, "inspect");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["Layers"][0], format!("sha256:{}", img.layer_digest), "{v}");
    // The blob is where the filesystem driver keeps it.
    assert_eq!(fs::read(reg.blob_data_path(&img.layer_digest)).unwrap(), img.layer);
    assert_eq!(reg.token_requests.load(Ordering::SeqCst), 0);
}

#[test]
fn regserver_basic_mode_needs_the_right_credentials() {
    if !need_tools() {
        return;
    }
    // A long password, as registries hand out for token-like credentials (bcrypt sees 72 bytes).
    let long = rand_alnum(2048);
    let reg = Registry::start(Auth::Basic(vec![("alice".into(), "wonderland".into()), ("AWS".into(), long.clone())]));
    let tmp = scratch();
    let img = test_image(&tmp.path().join("layout"), 4096);
    let sk = Skopeo::new();
    let dest = format!("docker://{}/test/img:1", reg.addr);
    let src = img.oci_ref();
    let copy = |creds: Option<&str>| {
        let mut a = vec!["copy", "-q", "--dest-tls-verify=false"];
        if let Some(c) = creds {
            a.extend(["--dest-creds", c]);
        }
        a.extend([src.as_str(), dest.as_str()]);
        sk.run(&a)
    };
    fails_with_log(&copy(None), &reg, "push without credentials");
    fails_with_log(&copy(Some("alice:looking-glass")), &reg, "push with a wrong password");
    fails_with_log(&copy(Some(&format!("AWS:{}", rand_alnum(2048)))), &reg, "push with a wrong long password");
    ok(&copy(Some(&format!("AWS:{long}"))), &reg, "push as AWS");
    ok(&copy(Some("alice:wonderland")), &reg, "push as alice");
    fails_with_log(&sk.run(&["inspect", "--tls-verify=false", &dest]), &reg, "anonymous inspect");
    ok(&sk.run(&["inspect", "--tls-verify=false", "--creds", "alice:wonderland", &dest]), &reg, "inspect");
    // The challenge is Basic with our realm.
    let r = http_get(&reg.addr, "/v2/", &[]).unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap_or("").contains(BASIC_REALM), "{r:?}");
}

#[test]
fn regserver_token_mode_with_anonymous_pull() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Token { users: vec![("alice".into(), "wonderland".into())], anonymous_pull: true });
    // The challenge names our issuer.
    let r = http_get(&reg.addr, "/v2/", &[]).unwrap();
    assert_eq!(r.status, 401);
    let challenge = r.header("www-authenticate").unwrap_or("").to_string();
    assert!(challenge.starts_with("Bearer ") && challenge.contains(reg.token_url.as_deref().unwrap()), "{challenge}");
    assert!(challenge.contains(&format!("service=\"{TOKEN_SERVICE}\"")), "{challenge}");

    let tmp = scratch();
    let img = test_image(&tmp.path().join("layout"), 4096);
    let sk = Skopeo::new();
    let dest = format!("docker://{}/test/img:1", reg.addr);
    let src = img.oci_ref();
    let r = sk.run(&["copy", "-q", "--dest-tls-verify=false", "--dest-creds", "alice:wonderland", &src, &dest]);
    ok(&r, &reg, "push with credentials");
    let r = sk.run(&["inspect", "--tls-verify=false", &dest]);
    ok(&r, &reg, "anonymous inspect");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["Layers"][0], format!("sha256:{}", img.layer_digest), "{v}");
    let anon_push = format!("docker://{}/test/img:2", reg.addr);
    fails_with_log(&sk.run(&["copy", "-q", "--dest-tls-verify=false", &src, &anon_push]), &reg, "anonymous push");
    let r = sk.run(&["copy", "-q", "--dest-tls-verify=false", "--dest-creds", "alice:nope", &src, &anon_push]);
    fails_with_log(&r, &reg, "push with a wrong password");
    assert!(reg.token_requests.load(Ordering::SeqCst) > 0);

    // The issuer itself: wrong credentials are a 401 with a registry-style error body.
    let bad = format!("Basic {}", STANDARD.encode("alice:nope"));
    let path = format!("/token?service={TOKEN_SERVICE}&scope=repository%3Atest%2Fimg%3Apull");
    let tok_addr =
        reg.token_url.as_deref().unwrap().trim_start_matches("http://").trim_end_matches("/token").to_string();
    let r = http_get(&tok_addr, &path, &[("Authorization", &bad)]).unwrap();
    assert_eq!(r.status, 401);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");
    // A token obtained by hand works against the registry: anonymous pull of the manifest.
    let r = http_get(&tok_addr, &path, &[]).unwrap();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let jwt = v["token"].as_str().unwrap();
    assert_eq!(v["access_token"], jwt);
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert_eq!(claims["access"], serde_json::json!([{"type":"repository","name":"test/img","actions":["pull"]}]));
    let bearer = format!("Bearer {jwt}");
    let accept = "application/vnd.oci.image.manifest.v1+json";
    let r = http_get(&reg.addr, "/v2/test/img/manifests/1", &[("Authorization", &bearer), ("Accept", accept)]).unwrap();
    assert_eq!(r.status, 200, "{}\n{}", String::from_utf8_lossy(&r.body), reg.log());
    assert_eq!(util::sha256_hex(&r.body), img.manifest);
    // The registry checks the signature: the same token with a flipped signature byte is refused.
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[7] ^= 1;
    let forged = format!("Bearer {signed}.{}", URL_SAFE_NO_PAD.encode(sig));
    let r = http_get(&reg.addr, "/v2/test/img/manifests/1", &[("Authorization", &forged), ("Accept", accept)]).unwrap();
    assert_eq!(r.status, 401, "a forged token must be refused");
}

#[test]
fn regserver_token_mode_without_anonymous_pull() {
    if !need_tools() {
        return;
    }
    let reg =
        Registry::start(Auth::Token { users: vec![("alice".into(), "wonderland".into())], anonymous_pull: false });
    let tmp = scratch();
    let img = test_image(&tmp.path().join("layout"), 4096);
    let sk = Skopeo::new();
    let dest = format!("docker://{}/private/img:1", reg.addr);
    let r =
        sk.run(&["copy", "-q", "--dest-tls-verify=false", "--dest-creds", "alice:wonderland", &img.oci_ref(), &dest]);
    ok(&r, &reg, "push with credentials");
    fails_with_log(&sk.run(&["inspect", "--tls-verify=false", &dest]), &reg, "anonymous inspect");
    ok(&sk.run(&["inspect", "--tls-verify=false", "--creds", "alice:wonderland", &dest]), &reg, "inspect");
}

#[test]
fn regserver_proxy_passes_through_and_cuts() {
    if !need_tools() {
        return;
    }
    let reg = Registry::start(Auth::Open);
    let tmp = scratch();
    let img = test_image(&tmp.path().join("layout"), 256 * 1024);
    assert!(img.layer.len() > 200 * 1024);
    let sk = Skopeo::new();
    let r = sk.run(&[
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &img.oci_ref(),
        &format!("docker://{}/test/img:1", reg.addr),
    ]);
    ok(&r, &reg, "push");

    // Fault::None: transparent to skopeo.
    let p = start_proxy(&reg.addr, Fault::None);
    let r = sk.run(&["inspect", "--tls-verify=false", &format!("docker://{}/test/img:1", p.addr)]);
    ok(&r, &reg, "inspect through the proxy");
    assert!(p.connections.load(Ordering::SeqCst) > 0);

    let blob = format!("/v2/test/img/blobs/sha256:{}", img.layer_digest);
    // Fault::Throttle: slower, same bytes.
    let p = start_proxy(&reg.addr, Fault::Throttle(8 * 1024 * 1024));
    let r = http_get(&p.addr, &blob, &[]).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == img.layer, "throttled blob differs");

    // Fault::CutAfter: the first connection is cut short, the second passes.
    let p = start_proxy(&reg.addr, Fault::CutAfter { bytes: 4096, times: 1 });
    let first = http_get_raw(&p.addr, &blob, &[]).unwrap();
    assert_eq!(first.len(), 4096, "the first connection carries exactly the bytes before the cut");
    assert!(first.len() < img.layer.len());
    assert!(parse_response(&first).is_none(), "a cut response is incomplete");
    let second = http_get(&p.addr, &blob, &[]).unwrap();
    assert_eq!(second.status, 200);
    assert!(second.body == img.layer, "second blob GET differs ({} bytes)", second.body.len());
    assert_eq!(p.cuts.load(Ordering::SeqCst), 1);
    assert_eq!(p.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn regserver_helpers() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(percent_decode("repository%3Atest%2Fimg%3Apull%2Cpush"), "repository:test/img:pull,push");
    assert_eq!(percent_decode("a+b%2"), "a b%2");
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_eq!(parse_response(raw).unwrap().body, b"abcde");
    assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_none());
}
