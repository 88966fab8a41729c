//! In-process tests of the vault's own rules (the RPC surface is tested in `tests/vault.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::events::EventKind;
use std::os::unix::fs::PermissionsExt;

fn open_in(dir: &Path) -> Arc<Vault> {
    Vault::open(&VaultConfig::default(), dir, Bus::default(), CancellationToken::new()).unwrap()
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

#[test]
fn identity_mode_creates_private_files_and_persists_keys() {
    let dir = tempfile::tempdir().unwrap();
    let v = open_in(dir.path());
    for f in [VAULT_FILE, IDENTITY_FILE] {
        let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let (a, replaced) = v.set("openai", Some("work"), secret("sk-work-aaaaaaaaaaaaaaaa")).unwrap();
    assert!(!replaced);
    assert_eq!(a.last4.as_deref(), Some("aaaa"));
    let (b, _) = v.set("openai", None, secret("sk-default-bbbbbbbbbbbbbb")).unwrap();
    assert_eq!(b.label, DEFAULT_LABEL);
    drop(v);
    let v = open_in(dir.path());
    let ids: Vec<String> = v.list(None).unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(ids, [a.id.clone(), b.id.clone()]);
    assert_eq!(v.remove(&a.id).unwrap().id, a.id);
    assert!(matches!(v.remove(&a.id), Err(VaultError::KeyNotFound { .. })));
    drop(v);
    assert_eq!(open_in(dir.path()).list(None).unwrap().len(), 1);
}

#[test]
fn same_label_replaces_in_place_and_duplicates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = open_in(dir.path());
    let (first, _) = v.set("openai", Some("a"), secret("sk-1111111111111111")).unwrap();
    v.set("openai", Some("b"), secret("sk-2222222222222222")).unwrap();
    let (again, replaced) = v.set("openai", Some("a"), secret("sk-3333333333333333")).unwrap();
    assert!(replaced);
    assert_eq!(again.id, first.id);
    let keys = v.keys_for("openai").unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].id, first.id, "replacement keeps the position");
    assert_eq!(keys[0].secret.expose_secret(), "sk-3333333333333333");
    let dup = v.set("openai", Some("c"), secret("sk-2222222222222222")).unwrap_err();
    assert!(matches!(dup, VaultError::DuplicateSecret { .. }));
    assert!(!dup.to_string().contains("sk-2222"), "{dup}");
}

#[test]
fn bad_input_is_refused_without_echoing_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let v = open_in(dir.path());
    for (provider, label, s) in [
        ("OpenAI", None, "sk-x"),
        ("", None, "sk-x"),
        ("openai", Some(" padded"), "sk-x"),
        ("openai", None, ""),
        ("openai", None, "sk-with space-secret"),
        ("openai", None, "sk-newline-secret\n"),
    ] {
        let e = v.set(provider, label, secret(s)).unwrap_err();
        assert!(matches!(e, VaultError::InvalidInput(_)), "{e}");
        assert!(s.is_empty() || !e.to_string().contains(s.trim()), "{e}");
    }
    assert!(v.list(None).unwrap().is_empty());
}

#[test]
fn keys_for_keeps_order_skips_invalid_and_report_persists() {
    let dir = tempfile::tempdir().unwrap();
    let v = open_in(dir.path());
    let mut events = v.events.subscribe();
    let (k1, _) = v.set("openai", Some("one"), secret("sk-one-1111111111111")).unwrap();
    let (k2, _) = v.set("openai", Some("two"), secret("sk-two-2222222222222")).unwrap();
    v.set("anthropic", None, secret("sk-ant-3333333333333")).unwrap();
    let keys = v.keys_for("openai").unwrap();
    assert_eq!(keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), [k1.id.as_str(), k2.id.as_str()]);
    assert!(keys.iter().all(|k| k.source == KeySource::Byok));
    assert!(!format!("{keys:?}").contains("sk-one"), "Debug must not print secrets");
    assert!(v.keys_for("gemini").unwrap().is_empty());

    v.report(&k1.id, KeyOutcome::Invalid);
    let ev = events.try_recv().unwrap();
    assert_eq!(ev.kind, EventKind::KeyInvalid);
    assert_eq!(ev.field("id"), Some(&crate::events::Field::Str(k1.id.clone())));
    assert_eq!(ev.field("source"), Some(&crate::events::Field::Str("call".into())));
    let ids: Vec<String> = v.keys_for("openai").unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(ids, std::slice::from_ref(&k2.id));
    v.report(&k2.id, KeyOutcome::Ok);
    drop(v);
    // No runtime here, so the status change was written at once; last_used on drop.
    let v = open_in(dir.path());
    let list = v.list(Some("openai")).unwrap();
    assert_eq!(list[0].status, KeyStatus::Invalid);
    assert!(list[0].last_used.is_some());
    assert_eq!(list[1].status, KeyStatus::Valid);
    assert!(list[1].last_used.is_some());
}

#[test]
fn locked_vault_refuses_and_forgets_keys() {
    let dir = tempfile::tempdir().unwrap();
    let v = open_in(dir.path());
    v.set("openai", None, secret("sk-locked-111111111111")).unwrap();
    let mut events = v.events.subscribe();
    let status = v.lock(LockReason::Manual);
    assert!(status.locked);
    assert_eq!(status.keys, None);
    assert_eq!(events.try_recv().unwrap().kind, EventKind::VaultLocked);
    assert_eq!(v.keys_for("openai").unwrap_err(), KeyError::Locked);
    assert!(matches!(v.list(None), Err(VaultError::Locked)));
    assert!(matches!(v.set("openai", Some("x"), secret("sk-y")), Err(VaultError::Locked)));
    assert!(v.inner().open.is_none(), "no key material stays in memory");
}

#[test]
fn a_failed_write_leaves_memory_and_disk_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let v = open_in(dir.path());
    let (kept, _) = v.set("openai", Some("kept"), secret("sk-kept-111111111111")).unwrap();
    let before = std::fs::read(dir.path().join(VAULT_FILE)).unwrap();
    // A directory where the vault file should be makes the rename fail (works even as root).
    let vault_file = dir.path().join(VAULT_FILE);
    std::fs::rename(&vault_file, dir.path().join("saved.age")).unwrap();
    std::fs::create_dir(&vault_file).unwrap();
    std::fs::write(vault_file.join("occupied"), b"x").unwrap();
    let e = v.set("openai", Some("new"), secret("sk-new-2222222222222")).unwrap_err();
    assert!(matches!(e, VaultError::Save { .. }), "{e}");
    let e = v.remove(&kept.id).unwrap_err();
    assert!(matches!(e, VaultError::Save { .. }), "{e}");
    let e = v.set("openai", Some("kept"), secret("sk-kept-replacement-3")).unwrap_err();
    assert!(matches!(e, VaultError::Save { .. }), "{e}");
    let keys = v.keys_for("openai").unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].secret.expose_secret(), "sk-kept-111111111111");
    assert_eq!(std::fs::read(dir.path().join("saved.age")).unwrap(), before);
}

#[test]
fn start_refuses_damaged_foreign_or_orphaned_vaults_and_leaves_them() {
    let dir = tempfile::tempdir().unwrap();
    drop(open_in(dir.path()));
    let vault_file = dir.path().join(VAULT_FILE);
    let reopen = || Vault::open(&VaultConfig::default(), dir.path(), Bus::default(), CancellationToken::new());

    std::fs::write(&vault_file, b"not an age file").unwrap();
    let e = reopen().unwrap_err().to_string();
    assert!(e.contains("not an age file") && e.contains("left untouched"), "{e}");
    assert_eq!(std::fs::read(&vault_file).unwrap(), b"not an age file");

    let foreign = store::seal(&[], &x25519::Identity::generate().to_public()).unwrap();
    std::fs::write(&vault_file, &foreign).unwrap();
    let e = reopen().unwrap_err().to_string();
    assert!(e.contains("different key"), "{e}");
    assert_eq!(std::fs::read(&vault_file).unwrap(), foreign);

    std::fs::remove_file(dir.path().join(IDENTITY_FILE)).unwrap();
    let e = reopen().unwrap_err().to_string();
    assert!(e.contains("restore identity.txt"), "{e}");
    assert!(!dir.path().join(IDENTITY_FILE).exists(), "no new identity is made for an existing vault");
}

#[test]
fn last4_only_for_long_keys() {
    assert_eq!(last4(&secret("sk-abcdefghijklmnop")).as_deref(), Some("mnop"));
    assert_eq!(last4(&secret("short-key")), None);
}

/// What is on disk right now (decrypted with the identity file).
fn on_disk(dir: &Path) -> Vec<KeyMeta> {
    let id = identity::parse_plain(&std::fs::read(dir.join(IDENTITY_FILE)).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join(VAULT_FILE)).unwrap();
    store::open(&bytes, &id).unwrap().into_iter().map(|e| e.meta).collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_usage_is_written_in_the_background_and_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let delay = Duration::from_millis(300);
    let v = Vault::open_with(&VaultConfig::default(), dir.path(), Bus::default(), shutdown.clone(), delay).unwrap();
    let (k, _) = v.set("openai", None, secret("sk-usage-11111111111")).unwrap();

    // A status change is written at once.
    v.report(&k.id, KeyOutcome::Ok);
    eventually("the status is on disk", || on_disk(dir.path())[0].status == KeyStatus::Valid).await;

    // A last_used-only change waits for the flush delay, then is written.
    let first = on_disk(dir.path())[0].last_used;
    std::thread::sleep(Duration::from_millis(5));
    let reported = Instant::now();
    v.report(&k.id, KeyOutcome::Ok);
    let in_memory = v.list(None).unwrap()[0].last_used;
    assert_ne!(in_memory, first);
    eventually("last_used is on disk", || on_disk(dir.path())[0].last_used == in_memory).await;
    assert!(reported.elapsed() >= delay, "written before the flush delay");

    drop(v);

    // With a long delay, shutdown is what writes the pending change.
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let long = Duration::from_secs(600);
    let v = Vault::open_with(&VaultConfig::default(), dir.path(), Bus::default(), shutdown.clone(), long).unwrap();
    let (k, _) = v.set("openai", None, secret("sk-usage-22222222222")).unwrap();
    v.report(&k.id, KeyOutcome::Ok);
    eventually("the status is on disk", || on_disk(dir.path())[0].status == KeyStatus::Valid).await;
    std::thread::sleep(Duration::from_millis(5));
    v.report(&k.id, KeyOutcome::Ok);
    let in_memory = v.list(None).unwrap()[0].last_used;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_ne!(on_disk(dir.path())[0].last_used, in_memory, "not written before the delay");
    shutdown.cancel();
    eventually("the pending change is written at shutdown", || on_disk(dir.path())[0].last_used == in_memory).await;
}
