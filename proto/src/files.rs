//! Files that hold a lab's data: created readable and writable by their owner only.
//!
//! The daemon's outbox and the hub's database hold every sample and the lab's metadata; a
//! process's usual umask would leave them world-readable. SQLite gives its `-wal` and `-shm`
//! files the permissions of the database file, so creating that one private is enough. Small
//! files of secrets (the daemon's control tokens) are replaced whole with [`replace_private`].

use std::io;
use std::path::Path;

/// Creates `path` empty and private (0600 on unix) if it does not exist; an existing file keeps
/// its owner's and group's permissions but loses any granted to others (a group may be a
/// service's on purpose, the world never is).
pub fn create_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o007 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & !0o007))?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        // Windows: the file inherits its folder's ACL (the service's data folder).
        let _ = path;
        Ok(())
    }
}

/// Replaces `path` with `contents` at once (written to a private file beside it, then renamed
/// over it): a reader sees the old file or the new one, never half of it, and the new file is
/// private (0600 on unix) whatever the old one was.
pub fn replace_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(name);
    let _ = std::fs::remove_file(&temporary);
    create_private(&temporary)?;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&temporary)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_file_is_its_owners_only_and_an_existing_one_loses_what_others_could_do() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.sqlite");
        create_private(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        let old = dir.path().join("old.sqlite");
        std::fs::write(&old, b"data").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o664)).unwrap();
        create_private(&old).unwrap();
        assert_eq!(
            mode(&old),
            0o660,
            "the group keeps its rights, others lose theirs"
        );
        assert_eq!(
            std::fs::read(&old).unwrap(),
            b"data",
            "an existing file is not touched"
        );
    }

    #[test]
    fn a_replaced_file_is_private_and_holds_only_the_new_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, b"old and longer").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        replace_private(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode(&path), 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");
    }
}
