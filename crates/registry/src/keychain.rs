//! Credentials, compatible with the docker CLI's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `auths` (base64 `user:password`, or `identitytoken`), `credHelpers`
//! per registry and `credsStore` for all, through the `docker-credential-NAME get|store|erase`
//! protocol. ECR is not a special case: it is Basic with user `AWS` from whichever source.
//!
//! The file is rewritten atomically with mode 0600 and keeps every field it does not know.
//! Secrets are redacted in `Debug` and never put in an error message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Map, Value};

use crate::error::{Error, ErrorKind, Result};

/// The key docker uses for Docker Hub in `auths`.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A secret string: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What a registry is offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// No credentials: anonymous access (Docker Hub hands out anonymous pull tokens).
    Anonymous,
    /// User and password (or token, as ECR's `AWS` user has).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: Secret,
    },
    /// An OAuth identity token (refresh token) for the token endpoint.
    IdentityToken(Secret),
}

/// The docker CLI's config file.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    raw: Map<String, Value>,
}

/// The `auths` key of a registry host, as the docker CLI writes it.
pub fn auth_key(registry: &str) -> String {
    if registry == strata_store::reference::DEFAULT_REGISTRY || registry == "index.docker.io" {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        registry.to_string()
    }
}

/// The host part of an `auths` key (`https://host/v1/` → `host`).
fn key_host(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

impl DockerConfig {
    /// Where the docker CLI keeps its config: `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("config.json");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".docker/config.json")
    }

    /// Reads the config at `path`; a missing file is an empty config.
    pub fn load(path: impl AsRef<Path>) -> Result<DockerConfig> {
        let path = path.as_ref().to_path_buf();
        let raw = match std::fs::read(&path) {
            Ok(b) if b.iter().all(|c| c.is_ascii_whitespace()) => Map::new(),
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(invalid(&path, "it is not a JSON object")),
                Err(e) => return Err(invalid(&path, "it is not valid JSON").with_source(e)),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => return Err(Error::new(ErrorKind::Io, format!("cannot read {}", path.display())).with_source(e)),
        };
        Ok(DockerConfig { path, raw })
    }

    /// The credential helper for `registry`: its `credHelpers` entry, else `credsStore`.
    pub fn helper_for(&self, registry: &str) -> Option<String> {
        let host = key_host(&auth_key(registry)).to_string();
        let helpers = self.raw.get("credHelpers").and_then(Value::as_object);
        helpers
            .and_then(|h| h.get(registry).or_else(|| h.get(&host)))
            .or_else(|| self.raw.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    /// The credential for `registry` (a host such as `docker.io` or `localhost:5000`).
    pub fn get(&self, registry: &str) -> Result<Credential> {
        if let Some(helper) = self.helper_for(registry) {
            return helper_get(&helper, &auth_key(registry));
        }
        let Some(auths) = self.raw.get("auths").and_then(Value::as_object) else {
            return Ok(Credential::Anonymous);
        };
        let want = key_host(&auth_key(registry)).to_string();
        let entry = auths
            .get(&auth_key(registry))
            .or_else(|| auths.iter().find(|(k, _)| key_host(k) == want || key_host(k) == registry).map(|(_, v)| v));
        let Some(entry) = entry else { return Ok(Credential::Anonymous) };
        if let Some(t) = entry.get("identitytoken").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            return Ok(Credential::IdentityToken(Secret::new(t)));
        }
        if let Some(a) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
            let decoded = base64_decode(a).and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| {
                invalid(&self.path, &format!("the auth entry of {registry} is not base64 of user:password"))
            })?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| invalid(&self.path, &format!("the auth entry of {registry} is not user:password")))?;
            return Ok(Credential::Basic { username: u.to_string(), password: Secret::new(p) });
        }
        match (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str)) {
            (Some(u), Some(p)) => Ok(Credential::Basic { username: u.to_string(), password: Secret::new(p) }),
            _ => Ok(Credential::Anonymous),
        }
    }

    /// Stores `username`/`password` for `registry`: through its credential helper if it has one,
    /// else in `auths`; the file is written atomically with mode 0600.
    pub fn store(&mut self, registry: &str, username: &str, password: &Secret) -> Result<()> {
        let key = auth_key(registry);
        if let Some(helper) = self.helper_for(registry) {
            let input = json!({"ServerURL": key, "Username": username, "Secret": password.expose()});
            run_helper(&helper, "store", input.to_string().as_bytes())?;
            // Docker leaves an empty entry in auths so that `docker info` lists the registry.
            self.auths_mut().insert(key, json!({}));
        } else {
            let auth = base64_encode(format!("{username}:{}", password.expose()).as_bytes());
            self.auths_mut().insert(key, json!({ "auth": auth }));
        }
        self.save()
    }

    /// Removes the credentials of `registry`; returns whether there were any.
    pub fn erase(&mut self, registry: &str) -> Result<bool> {
        let key = auth_key(registry);
        let mut had = false;
        if let Some(helper) = self.helper_for(registry) {
            had = run_helper(&helper, "erase", key.as_bytes()).is_ok();
        }
        let host = key_host(&key).to_string();
        let auths = self.auths_mut();
        let before = auths.len();
        auths.retain(|k, _| key_host(k) != host);
        had |= auths.len() != before;
        self.save()?;
        Ok(had)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let v = self.raw.entry("auths").or_insert_with(|| Value::Object(Map::new()));
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        v.as_object_mut().expect("auths is an object")
    }

    /// Writes the file atomically, mode 0600, creating its folder (0700) if needed.
    fn save(&self) -> Result<()> {
        let io = |what: &str, e: std::io::Error| {
            Error::new(ErrorKind::Io, format!("cannot {what} {}", self.path.display())).with_source(e)
        };
        if let Some(dir) = self.path.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        let bytes = serde_json::to_vec_pretty(&Value::Object(self.raw.clone())).expect("config serialises");
        strata_store::fsutil::write_atomic(&self.path, &bytes, 0o600).map_err(Error::from)
    }
}

fn invalid(path: &Path, why: &str) -> Error {
    Error::new(ErrorKind::InvalidArgument, format!("{} is not a valid docker config: {why}", path.display()))
}

/// `docker-credential-NAME get`: the credential for `server`, or anonymous if it has none.
fn helper_get(helper: &str, server: &str) -> Result<Credential> {
    let out = match run_helper(helper, "get", server.as_bytes()) {
        Ok(out) => out,
        Err(e) if e.to_string().contains("credentials not found") => return Ok(Credential::Anonymous),
        Err(e) => return Err(e),
    };
    let v: Value = serde_json::from_slice(&out).map_err(|e| {
        Error::new(
            ErrorKind::CredentialHelper,
            format!("docker-credential-{helper} get answered something that is not JSON"),
        )
        .with_source(e)
    })?;
    let user = v.get("Username").and_then(Value::as_str).unwrap_or_default();
    let secret = v.get("Secret").and_then(Value::as_str).unwrap_or_default();
    Ok(match (user, secret) {
        (_, "") => Credential::Anonymous,
        // Docker's convention: the user `<token>` marks an identity token.
        ("<token>", s) => Credential::IdentityToken(Secret::new(s)),
        (u, s) => Credential::Basic { username: u.to_string(), password: Secret::new(s) },
    })
}

/// Runs `docker-credential-HELPER ACTION` with `input` on stdin; its stdout on success.
fn run_helper(helper: &str, action: &str, input: &[u8]) -> Result<Vec<u8>> {
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::new(
                ErrorKind::CredentialHelper,
                format!("cannot run the credential helper {prog} (install it, or remove it from the docker config)"),
            )
            .with_source(e)
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::new(ErrorKind::CredentialHelper, format!("{prog} {action} failed")).with_source(e))?;
    if !out.status.success() {
        // Helpers print "credentials not found in native keychain" and the like; never the
        // secret, which went in on stdin.
        let msg = String::from_utf8_lossy(if out.stdout.is_empty() { &out.stderr } else { &out.stdout });
        let msg: String = msg.trim().chars().take(200).collect();
        return Err(Error::new(ErrorKind::CredentialHelper, format!("{prog} {action}: {msg}")));
    }
    Ok(out.stdout)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional); `None` if malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "AWS:eyJwYXlsb2FkIjoi", "user:p@ss:w0rd"] {
            assert_eq!(base64_decode(&base64_encode(s.as_bytes())).unwrap(), s.as_bytes());
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert!(base64_decode("!!!").is_none());
    }

    #[test]
    fn auths_store_get_erase_keep_unknown_fields_and_0600() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/config.json");
        let mut c = DockerConfig::load(&path).unwrap();
        assert_eq!(c.get("docker.io").unwrap(), Credential::Anonymous);
        let ecr_token = "x".repeat(2048);
        c.store("123.dkr.ecr.eu-west-1.amazonaws.com", "AWS", &Secret::new(ecr_token.clone())).unwrap();
        c.store("docker.io", "me", &Secret::new("hub-pass")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(raw["auths"][DOCKER_HUB_AUTH_KEY]["auth"].is_string(), "docker's key for Docker Hub: {raw}");
        // Another tool's fields survive.
        let mut v = raw.clone();
        v["psFormat"] = json!("table {{.ID}}");
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let mut c = DockerConfig::load(&path).unwrap();
        assert_eq!(
            c.get("123.dkr.ecr.eu-west-1.amazonaws.com").unwrap(),
            Credential::Basic { username: "AWS".into(), password: Secret::new(ecr_token) }
        );
        assert!(c.erase("docker.io").unwrap());
        assert!(!c.erase("docker.io").unwrap());
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["psFormat"], "table {{.ID}}");
        assert_eq!(DockerConfig::load(&path).unwrap().get("docker.io").unwrap(), Credential::Anonymous);
        // Secrets never show in Debug.
        let dbg =
            format!("{:?}", DockerConfig::load(&path).unwrap().get("123.dkr.ecr.eu-west-1.amazonaws.com").unwrap());
        assert!(!dbg.contains("xxxx"), "{dbg}");
    }

    #[test]
    fn legacy_keys_identity_tokens_and_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://localhost:5000/v1/":{"auth":"dTpw"},"quay.io":{"identitytoken":"tok"}}}"#,
        )
        .unwrap();
        let c = DockerConfig::load(&path).unwrap();
        assert_eq!(
            c.get("localhost:5000").unwrap(),
            Credential::Basic { username: "u".into(), password: Secret::new("p") }
        );
        assert_eq!(c.get("quay.io").unwrap(), Credential::IdentityToken(Secret::new("tok")));
        std::fs::write(&path, "{not json").unwrap();
        let e = DockerConfig::load(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        std::fs::write(&path, r#"{"auths":{"h":{"auth":"***"}}}"#).unwrap();
        assert!(DockerConfig::load(&path).unwrap().get("h").is_err());
    }

    #[test]
    fn credential_helpers_speak_the_protocol() {
        let d = tempfile::tempdir().unwrap();
        // A real helper program: a shell script keeping one credential in a file, as
        // docker-credential-pass or -secretservice would in their stores.
        let bin = d.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let store = d.path().join("helper-store");
        let script = format!(
            "#!/bin/sh\nS='{}'\ncase \"$1\" in\n  store) cat > \"$S\";;\n  get) read url; if [ -s \"$S\" ]; then cat \"$S\"; else echo 'credentials not found in native keychain'; exit 1; fi;;\n  erase) read url; rm -f \"$S\";;\nesac\n",
            store.display()
        );
        let helper = bin.join("docker-credential-strata-test");
        std::fs::write(&helper, script).unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = d.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"localhost:5000":"strata-test"}}"#).unwrap();
        // The helper is found on PATH, as docker finds it. No other test of this crate runs
        // programs, so prepending a folder here affects nothing else.
        let old = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.clone()];
        paths.extend(std::env::split_paths(&old));
        std::env::set_var("PATH", std::env::join_paths(paths).unwrap());
        let mut c = DockerConfig::load(&path).unwrap();
        assert_eq!(c.get("localhost:5000").unwrap(), Credential::Anonymous, "not found → anonymous");
        c.store("localhost:5000", "bob", &Secret::new("s3cret")).unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(!saved.contains("s3cret"), "the helper keeps the secret, not the file: {saved}");
        assert_eq!(
            c.get("localhost:5000").unwrap(),
            Credential::Basic { username: "bob".into(), password: Secret::new("s3cret") }
        );
        assert!(c.erase("localhost:5000").unwrap());
        assert_eq!(c.get("localhost:5000").unwrap(), Credential::Anonymous);
        // A helper that does not exist is a clear error.
        std::fs::write(&path, r#"{"credsStore":"nope-missing"}"#).unwrap();
        let e = DockerConfig::load(&path).unwrap().get("docker.io").unwrap_err();
        assert!(e.to_string().contains("docker-credential-nope-missing"), "{e}");
    }
}
