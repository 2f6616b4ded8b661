//! The control API's tokens file and the access rule, through real files.

use cyclerd::control::access::Access;
use cyclerd::control::tokens::{Refusal, Role, TokenStore};
use tonic::Code;
use tonic::metadata::MetadataMap;

fn presenting(token: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", cyclerd::proto::bearer(token).unwrap());
    metadata
}

fn secret_of(token: &str) -> &str {
    token.rsplit('_').next().unwrap()
}

#[test]
fn an_issued_token_is_printed_once_and_the_file_keeps_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("control-tokens.toml"));
    let (record, text) = store.issue("alice", Role::Operator).unwrap();
    assert!(text.starts_with(&format!("cyd_{}_", record.id)), "{text}");
    let file = std::fs::read_to_string(store.path()).unwrap();
    assert!(
        !file.contains(secret_of(&text)),
        "the secret is kept nowhere"
    );
    assert!(
        file.contains(&record.sha256) && file.contains("alice"),
        "{file}"
    );
    let caller = store.authenticate(&text).unwrap();
    assert_eq!(
        (caller.name.as_str(), caller.role),
        ("alice", Role::Operator)
    );
    assert_eq!(store.list().unwrap(), vec![record]);
}

#[cfg(unix)]
#[test]
fn the_tokens_file_is_readable_by_its_owner_only_even_after_it_was_opened_up() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("sub").join("control-tokens.toml"));
    let mode = || {
        std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    store.issue("alice", Role::Reader).unwrap();
    assert_eq!(mode(), 0o600);
    std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    store.revoke("alice").unwrap();
    assert_eq!(mode(), 0o600, "a rewrite makes it private again");
}

#[test]
fn a_revoked_token_is_refused_by_name_and_its_name_can_be_given_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("t.toml"));
    let (first, old) = store.issue("bob", Role::Reader).unwrap();
    let taken = store.issue("bob", Role::Operator).unwrap_err().to_string();
    assert!(taken.contains("already named \"bob\""), "{taken}");
    assert_eq!(store.revoke("bob").unwrap().id, first.id);
    assert_eq!(
        store.authenticate(&old),
        Err(Refusal::Revoked { name: "bob".into() })
    );
    let (_, new) = store.issue("bob", Role::Operator).unwrap();
    assert_eq!(store.authenticate(&new).unwrap().role, Role::Operator);
    assert_eq!(store.valid_count().unwrap(), 1);
    let gone = store.revoke("carol").unwrap_err().to_string();
    assert!(gone.contains("no valid token is named \"carol\""), "{gone}");
}

#[test]
fn a_wrong_secret_a_hub_token_or_plain_text_is_no_token_of_this_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("t.toml"));
    let (record, text) = store.issue("alice", Role::Operator).unwrap();
    let wrong = format!("cyd_{}_{}", record.id, "0".repeat(64));
    let hub = text.replacen("cyd_", "cyh_", 1);
    for bad in [wrong.as_str(), hub.as_str(), "", "password"] {
        assert_eq!(store.authenticate(bad), Err(Refusal::Unknown), "{bad:?}");
    }
}

#[test]
fn a_damaged_tokens_file_is_an_error_naming_it_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    for damage in [
        "[[token]]\nid = 3\n",
        "not toml at all [",
        "[[token]]\nid = \"x\"\n",
    ] {
        std::fs::write(&path, damage).unwrap();
        let store = TokenStore::new(&path);
        let e = format!("{:#}", store.list().unwrap_err());
        assert!(e.contains("t.toml"), "{e}");
        assert!(matches!(
            store.authenticate(&cyclerd::proto::token::generate("cyd").2),
            Err(Refusal::Unreadable(_))
        ));
        assert!(
            store.issue("alice", Role::Reader).is_err(),
            "a damaged file is not overwritten"
        );
    }
}

#[test]
fn a_reader_token_passes_reads_only_an_operator_token_everything_and_no_token_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("t.toml"));
    let (_, reader) = store.issue("rita", Role::Reader).unwrap();
    let (_, operator) = store.issue("otto", Role::Operator).unwrap();
    let access = Access::with_tokens(store);
    assert!(
        access
            .check(&presenting(&reader), Role::Reader, "GetStatus")
            .is_ok()
    );
    let denied = access
        .check(&presenting(&reader), Role::Operator, "StartTest")
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("StartTest") && denied.message().contains("rita"));
    for need in [Role::Reader, Role::Operator] {
        let caller = access.check(&presenting(&operator), need, "call").unwrap();
        assert_eq!(caller.unwrap().name, "otto");
    }
    let missing = access
        .check(&MetadataMap::new(), Role::Reader, "GetStatus")
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(
        missing.message().contains("cyclerd token issue"),
        "{}",
        missing.message()
    );
    for refused in [denied, missing] {
        for token in [&reader, &operator] {
            assert!(!refused.message().contains(secret_of(token)));
        }
    }
    let open = Access::open();
    assert_eq!(
        open.check(&MetadataMap::new(), Role::Operator, "StartTest")
            .unwrap(),
        None
    );
}
