//! The key vault through the real daemon: keys in, never out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use age::secrecy::SecretString;
use common::{field, params, rpc_err, Daemon};
use llm_sidecar::rpc::{Client, ClientError, ErrorCode};
use rmpv::Value;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "correct horse battery staple";

/// A fresh secret that cannot appear anywhere by accident.
fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn passphrase_config(extra: &str) -> String {
    format!("[vault]\nmode = \"passphrase\"\nscrypt_log_n = 4\n{extra}")
}

async fn set_key(c: &Client, provider: &str, label: Option<&str>, secret: &str) -> Value {
    let mut p = vec![("provider", Value::from(provider)), ("secret", Value::from(secret))];
    if let Some(l) = label {
        p.push(("label", Value::from(l)));
    }
    let r = c.call("keys.set", params(&p)).await.unwrap();
    field(&r, "key").clone()
}

async fn list(c: &Client) -> Vec<Value> {
    let r = c.call("keys.list", vec![]).await.unwrap();
    field(&r, "keys").as_array().unwrap().clone()
}

fn str_of<'a>(v: &'a Value, name: &str) -> &'a str {
    field(v, name).as_str().unwrap_or_else(|| panic!("`{name}` is not a string in {v}"))
}

async fn state(c: &Client) -> String {
    let s = c.call("vault.status", vec![]).await.unwrap();
    str_of(&s, "state").to_string()
}

async fn unlock(c: &Client, passphrase: &str) -> Result<Value, ClientError> {
    c.call("vault.unlock", params(&[("passphrase", Value::from(passphrase))])).await
}

/// Every encoding of `secret` a careless writer might use.
fn encodings(secret: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let b = secret.as_bytes();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut out = vec![b.to_vec(), hex(b, false).into_bytes(), hex(b, true).into_bytes()];
    out.extend(engines.iter().map(|e| e.encode(b).into_bytes()));
    out
}

fn hex(b: &[u8], upper: bool) -> String {
    b.iter().map(|x| if upper { format!("{x:02X}") } else { format!("{x:02x}") }).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The daemon's log (debug level, the whole run) must not contain any secret in any encoding.
fn assert_log_clean(d: &Daemon, secrets: &[&str]) {
    let log = d.logs();
    assert!(!log.is_empty(), "the daemon logged nothing");
    for s in secrets {
        for enc in encodings(s) {
            assert!(!contains(log.as_bytes(), &enc), "the daemon log contains a secret ({s}):\n{log}");
        }
    }
}

/// Decrypts `vault.age` exactly as `age -d -i identity.txt vault.age` does (age's identity-file
/// parser, then the standard decryptor).
fn age_decrypt(identity_file: &Path, vault_file: &Path) -> String {
    let file = std::io::BufReader::new(std::fs::File::open(identity_file).unwrap());
    let identities = age::IdentityFile::from_buffer(file).unwrap().into_identities().unwrap();
    let decryptor = age::Decryptor::new(std::fs::File::open(vault_file).unwrap()).unwrap();
    let mut reader = decryptor.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity)).unwrap();
    let mut out = String::new();
    reader.read_to_string(&mut out).unwrap();
    out
}

/// Runs `serve` expecting it to refuse to start; returns its stderr.
fn start_must_fail(d: &Daemon) -> String {
    let mut child = d.serve_command().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "exit status {status}; stderr:\n{err}");
    err
}

#[tokio::test]
async fn keys_round_trip_across_restart() {
    let mut d = Daemon::start();
    let c = d.client().await;
    let (s1, s2, s3, s4) = (fresh("sk-work"), fresh("sk-home"), fresh("sk-ant"), fresh("sk-work-new"));
    let k1 = set_key(&c, "openai", Some("work"), &s1).await;
    let k2 = set_key(&c, "openai", Some("home"), &s2).await;
    let k3 = set_key(&c, "anthropic", None, &s3).await;
    assert_eq!(str_of(&k3, "label"), "default");
    assert_eq!(str_of(&k1, "status"), "unknown");
    assert_eq!(str_of(&k1, "last4"), &s1[s1.len() - 4..]);
    assert!(field(&k1, "last_used").is_nil());
    let before = list(&c).await;
    assert_eq!(before, vec![k1.clone(), k2.clone(), k3.clone()]);
    let only_openai = c.call("keys.list", params(&[("provider", "openai".into())])).await.unwrap();
    assert_eq!(field(&only_openai, "keys").as_array().unwrap().len(), 2);
    drop(c);

    assert!(d.terminate(Duration::from_secs(10)).success());
    d.spawn();
    let c = d.client().await;
    assert_eq!(list(&c).await, before, "metadata and order survive a restart");

    // Same provider and label: replaced in place, same id.
    let r = c
        .call(
            "keys.set",
            params(&[("provider", "openai".into()), ("label", "work".into()), ("secret", s4.as_str().into())]),
        )
        .await
        .unwrap();
    assert_eq!(field(&r, "replaced").as_bool(), Some(true));
    assert_eq!(str_of(field(&r, "key"), "id"), str_of(&k1, "id"));
    let removed = c.call("keys.remove", params(&[("id", field(&k2, "id").clone())])).await.unwrap();
    assert_eq!(str_of(field(&removed, "key"), "id"), str_of(&k2, "id"));
    let e = rpc_err(c.call("keys.remove", params(&[("id", field(&k2, "id").clone())])).await);
    assert_eq!(e.code, ErrorCode::KeyMissing);
    assert_eq!(e.data_field("id").and_then(Value::as_str), Some(str_of(&k2, "id")));
    drop(c);

    d.kill9();
    d.spawn();
    let c = d.client().await;
    let after: Vec<String> = list(&c).await.iter().map(|k| str_of(k, "id").to_string()).collect();
    assert_eq!(after, [str_of(&k1, "id"), str_of(&k3, "id")]);
    let plain = age_decrypt(&d.data_dir.join("identity.txt"), &d.data_dir.join("vault.age"));
    assert!(plain.contains(&s4) && !plain.contains(&s1) && !plain.contains(&s2), "{plain}");
    assert_log_clean(&d, &[&s1, &s2, &s3, &s4]);
}

#[tokio::test]
async fn vault_file_is_standard_age_and_holds_no_readable_secret() {
    let d = Daemon::start();
    let c = d.client().await;
    let secrets = [fresh("sk-proj"), fresh("sk-ant-api03"), fresh("AIzaSy")];
    for (provider, s) in ["openai", "anthropic", "gemini"].iter().zip(&secrets) {
        set_key(&c, provider, None, s).await;
    }
    let vault_file = d.data_dir.join("vault.age");
    let identity_file = d.data_dir.join("identity.txt");
    for f in [&vault_file, &identity_file] {
        assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o600, "{}", f.display());
    }
    let raw = std::fs::read(&vault_file).unwrap();
    assert!(raw.starts_with(b"age-encryption.org/v1\n-> X25519 "), "not a standard age file");
    for s in &secrets {
        for enc in encodings(s) {
            assert!(!contains(&raw, &enc), "vault.age contains a secret in some encoding");
        }
    }
    let identity_text = std::fs::read_to_string(&identity_file).unwrap();
    assert!(identity_text.contains("# public key: age1"), "{identity_text}");
    // What `age -d -i identity.txt vault.age` prints: the JSON document with every key.
    let plain = age_decrypt(&identity_file, &vault_file);
    let doc: serde_json::Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(doc["format"], "llm-sidecar-vault");
    let stored: Vec<&str> = doc["keys"].as_array().unwrap().iter().map(|k| k["secret"].as_str().unwrap()).collect();
    assert_eq!(stored, secrets.iter().map(String::as_str).collect::<Vec<_>>());
    // No RPC result ever carries the secret.
    let listed = c.call("keys.list", vec![]).await.unwrap().to_string();
    for s in &secrets {
        assert!(!listed.contains(s.as_str()));
    }
    assert_log_clean(&d, &secrets.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn passphrase_vault_locks_unlocks_and_refuses_wrong_passphrase() {
    let mut d = Daemon::start_with(&passphrase_config("auto_lock_secs = 0\n"), &[]);
    let c = d.client().await;
    let watcher = d.client().await;
    let mut events = watcher.take_notifications().unwrap();
    watcher
        .call(
            "events.subscribe",
            params(&[("kinds", Value::Array(vec!["vault.locked".into(), "vault.unlocked".into()]))]),
        )
        .await
        .unwrap();
    let secret = fresh("sk-pass");
    let wrong = "wrong horse battery staple";

    assert_eq!(state(&c).await, "uninitialized");
    let e = rpc_err(c.call("keys.list", vec![]).await);
    assert_eq!(e.code, ErrorCode::VaultLocked);
    assert_eq!(e.data_field("state").and_then(Value::as_str), Some("uninitialized"));
    assert_eq!(rpc_err(c.call("vault.unlock", vec![]).await).code, ErrorCode::InvalidParams);
    assert_eq!(rpc_err(unlock(&c, "short").await).code, ErrorCode::InvalidParams);
    assert!(!d.data_dir.join("identity.txt").exists(), "a refused passphrase changes nothing");

    // The first unlock sets the passphrase.
    let s = unlock(&c, PASSPHRASE).await.unwrap();
    assert_eq!(str_of(&s, "state"), "unlocked");
    assert_eq!(next_event(&mut events).await, "vault.unlocked");
    let key = set_key(&c, "openai", None, &secret).await;

    let s = c.call("vault.lock", vec![]).await.unwrap();
    assert_eq!(field(&s, "locked").as_bool(), Some(true));
    assert!(field(&s, "keys").is_nil());
    assert_eq!(next_event(&mut events).await, "vault.locked");
    for (method, p) in [
        ("keys.list", vec![]),
        ("keys.set", params(&[("provider", "openai".into()), ("label", "b".into()), ("secret", "sk-x".into())])),
        ("keys.remove", params(&[("id", field(&key, "id").clone())])),
        ("keys.test", params(&[("id", field(&key, "id").clone())])),
    ] {
        assert_eq!(rpc_err(c.call(method, p).await).code, ErrorCode::VaultLocked, "{method}");
    }

    let e = rpc_err(unlock(&c, wrong).await);
    assert_eq!(e.code, ErrorCode::Unauthorized);
    assert!(!e.message.contains(wrong));
    assert_eq!(state(&c).await, "locked");
    assert_eq!(str_of(&unlock(&c, PASSPHRASE).await.unwrap(), "state"), "unlocked");
    assert_eq!(list(&c).await, vec![key.clone()]);

    // identity.txt is the age identity encrypted with the passphrase: `age -d -i identity.txt
    // vault.age` asks for the passphrase, then decrypts the vault.
    let identity_file = d.data_dir.join("identity.txt");
    let protected = std::fs::read(&identity_file).unwrap();
    assert!(protected.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    assert!(!contains(&protected, b"AGE-SECRET-KEY-1"));
    let id_text = {
        let dec = age::Decryptor::new(age::armor::ArmoredReader::new(&protected[..])).unwrap();
        let pass = age::scrypt::Identity::new(SecretString::from(PASSPHRASE));
        let mut r = dec.decrypt(std::iter::once(&pass as &dyn age::Identity)).unwrap();
        let mut t = String::new();
        r.read_to_string(&mut t).unwrap();
        t
    };
    let plain_identity = d.dir.path().join("decrypted-identity.txt");
    std::fs::write(&plain_identity, id_text).unwrap();
    assert!(age_decrypt(&plain_identity, &d.data_dir.join("vault.age")).contains(&secret));
    drop(c);

    // After a restart the vault is locked again (not uninitialized) and the passphrase opens it.
    assert!(d.terminate(Duration::from_secs(10)).success());
    d.spawn();
    let c = d.client().await;
    assert_eq!(state(&c).await, "locked");
    assert_eq!(rpc_err(c.call("keys.list", vec![]).await).code, ErrorCode::VaultLocked);
    assert_eq!(rpc_err(unlock(&c, wrong).await).code, ErrorCode::Unauthorized);
    unlock(&c, PASSPHRASE).await.unwrap();
    assert_eq!(list(&c).await, vec![key]);
    assert_log_clean(&d, &[&secret, PASSPHRASE, wrong]);
}

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<Value>)>) -> String {
    let (method, params) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    assert_eq!(method, "event");
    str_of(&params[0], "kind").to_string()
}

/// Polls `vault.status` (which must not count as activity) until the vault reports locked.
async fn wait_locked(c: &Client, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if state(c).await == "locked" {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "the vault did not auto-lock within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn idle_vault_auto_locks_and_status_polls_do_not_rearm_it() {
    let d = Daemon::start_with(&passphrase_config("auto_lock_secs = 2\n"), &[]);
    let c = d.client().await;
    let watcher = d.client().await;
    let mut events = watcher.take_notifications().unwrap();
    watcher.call("events.subscribe", params(&[("kinds", Value::Array(vec!["vault.locked".into()]))])).await.unwrap();

    let t0 = Instant::now();
    let s = unlock(&c, PASSPHRASE).await.unwrap();
    assert_eq!(field(&s, "auto_lock_secs").as_u64(), Some(2));
    assert!(field(&s, "lock_in_secs").as_u64().is_some());
    // Polling status every 50 ms: had it counted as activity, the vault would never lock.
    let locked_at = wait_locked(&c, Duration::from_secs(15)).await;
    assert!(locked_at - t0 >= Duration::from_secs(2), "locked after {:?}, before the idle time", locked_at - t0);
    let (method, p) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(method, "event");
    assert_eq!(str_of(&p[0], "kind"), "vault.locked");
    assert_eq!(str_of(&p[0], "reason"), "idle");

    // Key use does re-arm it: the lock comes at least 2 s after the last keys.list.
    unlock(&c, PASSPHRASE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let last_use = Instant::now();
    list(&c).await;
    let locked_at = wait_locked(&c, Duration::from_secs(15)).await;
    assert!(locked_at - last_use >= Duration::from_secs(2), "keys.list did not re-arm the auto-lock");
    assert_log_clean(&d, &[PASSPHRASE]);
}

#[tokio::test]
async fn damaged_or_foreign_vault_stops_the_daemon_and_is_left_untouched() {
    let mut d = Daemon::start();
    let secret = fresh("sk-keep");
    set_key(&d.client().await, "openai", None, &secret).await;
    assert!(d.terminate(Duration::from_secs(10)).success());
    let vault_file = d.data_dir.join("vault.age");
    let good = std::fs::read(&vault_file).unwrap();

    std::fs::write(&vault_file, b"{\"keys\": []}\n").unwrap();
    let err = start_must_fail(&d);
    assert!(err.contains("vault.age") && err.contains("not an age file") && err.contains("left untouched"), "{err}");
    assert_eq!(std::fs::read(&vault_file).unwrap(), b"{\"keys\": []}\n");

    let other = age::x25519::Identity::generate();
    let foreign =
        age::encrypt(&other.to_public(), b"{\"format\":\"llm-sidecar-vault\",\"version\":1,\"keys\":[]}").unwrap();
    std::fs::write(&vault_file, &foreign).unwrap();
    let err = start_must_fail(&d);
    assert!(err.contains("different key"), "{err}");
    assert_eq!(std::fs::read(&vault_file).unwrap(), foreign);

    let mut truncated = good.clone();
    truncated.truncate(good.len() - 10);
    std::fs::write(&vault_file, &truncated).unwrap();
    let err = start_must_fail(&d);
    assert!(err.contains("damaged"), "{err}");
    assert_eq!(std::fs::read(&vault_file).unwrap(), truncated);

    // The restored file works again.
    std::fs::write(&vault_file, &good).unwrap();
    d.spawn();
    assert_eq!(list(&d.client().await).await.len(), 1);
    d.kill9();

    // Passphrase mode checks what it can without the passphrase: the file must be age.
    std::fs::write(&d.config, passphrase_config("")).unwrap();
    std::fs::write(&vault_file, b"garbage").unwrap();
    let err = start_must_fail(&d);
    assert!(err.contains("not an age file"), "{err}");
    assert_log_clean(&d, &[&secret]);
}

#[tokio::test]
async fn leftover_temp_file_from_a_crash_does_not_break_start() {
    let mut d = Daemon::start();
    let secret = fresh("sk-old");
    set_key(&d.client().await, "openai", None, &secret).await;
    d.kill9();
    // What a crash between the temp write and the rename leaves behind.
    let leftover = d.data_dir.join(".vault.age.tmp-5f0c2a9e");
    std::fs::write(&leftover, b"age-encryption.org/v1\n-> half written").unwrap();
    d.spawn();
    let c = d.client().await;
    let keys = list(&c).await;
    assert_eq!(keys.len(), 1, "the old vault is intact");
    assert!(!leftover.exists(), "the leftover temp file is removed at start");
    assert!(d.logs().contains("interrupted write"));
    assert_log_clean(&d, &[&secret]);
}

#[tokio::test]
async fn bad_params_are_refused_without_echoing_secrets() {
    let d = Daemon::start();
    let c = d.client().await;
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (vec![("provider", "openai".into()), ("secret", Value::from(987_654_321_012u64))], "987654321012"),
        (vec![("provider", "openai".into()), ("secret", "sk-line-break-secret\n".into())], "sk-line-break-secret"),
        (vec![("provider", "openai".into()), ("secret", "sk has spaces".into())], "sk has spaces"),
        (
            vec![("provider", "Not A Provider".into()), ("secret", "sk-valid-but-unused-1".into())],
            "sk-valid-but-unused-1",
        ),
        (
            vec![("provider", "openai".into()), ("secret", Value::Binary(b"sk-binary-secret".to_vec()))],
            "sk-binary-secret",
        ),
    ];
    for (p, secret) in cases {
        let e = rpc_err(c.call("keys.set", params(&p)).await);
        assert_eq!(e.code, ErrorCode::InvalidParams, "{e}");
        assert!(!e.to_string().contains(secret), "error echoes the secret: {e}");
    }
    let s = fresh("sk-dup");
    let k = set_key(&c, "openai", Some("a"), &s).await;
    let e = rpc_err(
        c.call(
            "keys.set",
            params(&[("provider", "openai".into()), ("label", "b".into()), ("secret", s.as_str().into())]),
        )
        .await,
    );
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert_eq!(e.data_field("id"), Some(field(&k, "id")));
    let e = rpc_err(c.call("keys.test", params(&[("id", "key_nope".into())])).await);
    assert_eq!(e.code, ErrorCode::KeyMissing);
    let e = rpc_err(c.call("vault.unlock", params(&[("passphrase", "not needed".into())])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams, "identity mode takes no passphrase");
    let methods = c.call("daemon.methods", vec![]).await.unwrap().to_string();
    for m in ["keys.set", "keys.list", "keys.remove", "keys.test", "vault.status", "vault.unlock", "vault.lock"] {
        assert!(methods.contains(m), "{m} missing from daemon.methods");
    }
    assert_log_clean(&d, &["987654321012", "sk-line-break-secret", "sk has spaces", "sk-valid-but-unused-1", &s]);
}

/// A provider stand-in speaking the real wire formats of the three auth styles.
async fn mock_providers(good: &'static str) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let has = |h: &HeaderMap, name: &str, value: &str| h.get(name).and_then(|v| v.to_str().ok()) == Some(value);
    let app = axum::Router::new()
        .route(
            "/openai/v1/models",
            get(move |h: HeaderMap| async move {
                if has(&h, "authorization", &format!("Bearer {good}")) {
                    (StatusCode::OK, r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1721172741,"owned_by":"system"}]}"#)
                } else {
                    (StatusCode::UNAUTHORIZED, r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#)
                }
            }),
        )
        .route(
            "/anthropic/v1/models",
            get(move |h: HeaderMap| async move {
                if !has(&h, "anthropic-version", "2023-06-01") {
                    (StatusCode::BAD_REQUEST, r#"{"type":"error","error":{"type":"invalid_request_error","message":"anthropic-version: header is required"}}"#)
                } else if has(&h, "x-api-key", good) {
                    (StatusCode::OK, r#"{"data":[{"type":"model","id":"claude-3-5-haiku-20241022","display_name":"Claude Haiku 3.5","created_at":"2024-10-22T00:00:00Z"}],"has_more":false,"first_id":"claude-3-5-haiku-20241022","last_id":"claude-3-5-haiku-20241022"}"#)
                } else {
                    (StatusCode::UNAUTHORIZED, r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#)
                }
            }),
        )
        .route(
            "/gemini/v1beta/models",
            get(move |h: HeaderMap| async move {
                if has(&h, "x-goog-api-key", good) {
                    (StatusCode::OK, r#"{"models":[{"name":"models/gemini-2.0-flash","displayName":"Gemini 2.0 Flash"}]}"#)
                } else {
                    (StatusCode::BAD_REQUEST, r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#)
                }
            }),
        )
        .route("/broken/models", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_test_marks_keys_valid_or_invalid_with_the_provider() {
    let good: &'static str = Box::leak(fresh("sk-good").into_boxed_str());
    let bad = fresh("sk-bad");
    let base = mock_providers(good).await;
    let config = format!(
        "[vault.probe_base_urls]\nopenai = \"{base}/openai/v1\"\nanthropic = \"{base}/anthropic\"\ngemini = \"{base}/gemini\"\nflaky = \"{base}/broken\"\n"
    );
    let d = Daemon::start_with(&config, &[]);
    let c = d.client().await;
    let mut events = c.take_notifications().unwrap();
    c.call("events.subscribe", params(&[("kinds", Value::Array(vec!["key.invalid".into()]))])).await.unwrap();

    for provider in ["openai", "anthropic", "gemini"] {
        let ok = set_key(&c, provider, Some("good"), good).await;
        let r = c.call("keys.test", params(&[("id", field(&ok, "id").clone())])).await.unwrap();
        assert_eq!(field(&r, "valid").as_bool(), Some(true), "{provider}: {r}");
        assert_eq!(field(&r, "http_status").as_u64(), Some(200));
        assert_eq!(str_of(field(&r, "key"), "status"), "valid");

        let ko = set_key(&c, provider, Some("bad"), &bad).await;
        let r = c.call("keys.test", params(&[("id", field(&ko, "id").clone())])).await.unwrap();
        assert_eq!(field(&r, "valid").as_bool(), Some(false), "{provider}: {r}");
        assert_eq!(str_of(field(&r, "key"), "status"), "invalid");
        let (method, p) = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
        assert_eq!(method, "event");
        assert_eq!(str_of(&p[0], "kind"), "key.invalid");
        assert_eq!(field(&p[0], "id"), field(&ko, "id"));
        assert_eq!(str_of(&p[0], "source"), "test");
        // The bad key is removed so the next provider's duplicate-secret check does not trip.
        c.call("keys.remove", params(&[("id", field(&ko, "id").clone())])).await.unwrap();
        c.call("keys.remove", params(&[("id", field(&ok, "id").clone())])).await.unwrap();
    }

    // A provider failure leaves the status alone and says so.
    let k = set_key(&c, "flaky", None, &fresh("sk-flaky")).await;
    let e = rpc_err(c.call("keys.test", params(&[("id", field(&k, "id").clone())])).await);
    assert_eq!(e.code, ErrorCode::ProviderError);
    assert_eq!(e.data_field("status").and_then(Value::as_u64), Some(500));
    assert_eq!(e.data_field("provider").and_then(Value::as_str), Some("flaky"));
    assert_eq!(str_of(&list(&c).await[0], "status"), "unknown");
    // A provider with no known check and no configured URL is a params error, not a network call.
    let r = c
        .call(
            "keys.set",
            params(&[("provider", "somewhere".into()), ("secret", fresh("sk-nowhere").into()), ("force", true.into())]),
        )
        .await
        .unwrap();
    let k = field(&r, "key").clone();
    let e = rpc_err(c.call("keys.test", params(&[("id", field(&k, "id").clone())])).await);
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.contains("vault.probe_base_urls.somewhere"), "{e}");
    assert_log_clean(&d, &[good, &bad]);
}

#[tokio::test]
async fn cli_adds_from_a_pipe_lists_and_removes() {
    let d = Daemon::start();
    let secret = fresh("sk-cli-piped");
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = common::command(d.dir.path());
        cmd.arg("--socket").arg(&d.socket).arg("--config").arg(&d.config).args(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, out, err) = cli(&["keys", "add", "openai", "--label", "laptop"], Some(&format!("{secret}\n")));
    assert!(status.success(), "{out}{err}");
    assert!(out.starts_with("added key key_"), "{out}");
    assert!(!out.contains(&secret) && !err.contains(&secret));
    let (status, out, _) = cli(&["keys", "list"], None);
    assert!(status.success());
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
    assert!(out.contains("laptop") && out.contains(&secret[secret.len() - 4..]) && !out.contains(&secret), "{out}");
    let id = out.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    let (status, out, _) = cli(&["vault", "status"], None);
    assert!(status.success() && out.contains("unlocked (identity mode; 1 key)"), "{out}");
    let (status, _, _) = cli(&["vault", "lock"], None);
    assert!(status.success());
    let (status, _, err) = cli(&["keys", "list"], None);
    assert!(!status.success() && err.contains("vault_locked"), "{err}");
    let (status, out, _) = cli(&["vault", "unlock"], None);
    assert!(status.success() && out.contains("unlocked"), "{out}");
    let (status, out, _) = cli(&["keys", "rm", &id], None);
    assert!(status.success() && out.contains(&id), "{out}");
    let (status, _, err) = cli(&["keys", "add", "openai"], Some(""));
    assert!(!status.success() && err.contains("nothing was entered"), "{err}");
    assert_log_clean(&d, &[&secret]);
}

#[tokio::test]
async fn cli_sets_the_passphrase_from_a_pipe() {
    let d = Daemon::start_with(&passphrase_config(""), &[]);
    let run = |args: &[&str], stdin: &str| {
        let mut cmd = common::command(d.dir.path());
        cmd.arg("--socket").arg(&d.socket).arg("--config").arg(&d.config).args(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    let (status, out) = run(&["vault", "unlock"], &format!("{PASSPHRASE}\n"));
    assert!(status.success() && out.contains("vault unlocked"), "{out}");
    let (status, _) = run(&["vault", "lock"], "");
    assert!(status.success());
    let (status, out) = run(&["vault", "unlock"], "not the passphrase\n");
    assert!(!status.success() && out.contains("unauthorized"), "{out}");
    let (status, out) = run(&["vault", "unlock"], &format!("{PASSPHRASE}\n"));
    assert!(status.success(), "{out}");
    assert_eq!(state(&d.client().await).await, "unlocked");
    assert_log_clean(&d, &[PASSPHRASE, "not the passphrase"]);
}

#[tokio::test]
async fn switching_to_passphrase_mode_keeps_the_keys() {
    let mut d = Daemon::start();
    let secret = fresh("sk-migrate");
    let key = set_key(&d.client().await, "openai", None, &secret).await;
    assert!(d.terminate(Duration::from_secs(10)).success());
    let identity_file = d.data_dir.join("identity.txt");
    let plain_identity = std::fs::read(&identity_file).unwrap();

    std::fs::write(&d.config, passphrase_config("")).unwrap();
    d.spawn();
    let c = d.client().await;
    assert_eq!(state(&c).await, "uninitialized");
    assert_eq!(std::fs::read(&identity_file).unwrap(), plain_identity, "nothing changes before the unlock");
    unlock(&c, PASSPHRASE).await.unwrap();
    assert_eq!(list(&c).await, vec![key.clone()]);
    assert!(std::fs::read(&identity_file).unwrap().starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    drop(c);

    assert!(d.terminate(Duration::from_secs(10)).success());
    d.spawn();
    let c = d.client().await;
    assert_eq!(state(&c).await, "locked");
    unlock(&c, PASSPHRASE).await.unwrap();
    assert_eq!(list(&c).await, vec![key]);
    drop(c);

    // Back to identity mode without decrypting identity.txt: a clear refusal at start.
    assert!(d.terminate(Duration::from_secs(10)).success());
    std::fs::write(&d.config, "").unwrap();
    let err = start_must_fail(&d);
    assert!(err.contains("protected by a passphrase") && err.contains("vault.mode"), "{err}");
    assert_log_clean(&d, &[&secret, PASSPHRASE]);
}
