//! Files that hold a lab's data: created readable and writable by their owner only.
//!
//! The daemon's outbox and the hub's database hold every sample and the lab's metadata; a
//! process's usual umask would leave them world-readable. SQLite gives its `-wal` and `-shm`
//! files the permissions of the database file, so creating that one private is enough.

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
}
