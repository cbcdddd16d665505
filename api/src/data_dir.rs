//! The data directory holds the database, the secrets key, artifacts and worker logs: only the
//! service's own user may enter it, and its database files are readable by that user only.

use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// The database's file name inside the data directory.
pub const DATABASE: &str = "ckrv.db";

/// Creates the directory (0700) or closes an existing one to others and, when the database is
/// SQLite's file there, makes sure the database files are 0600 before SQLite opens them (its
/// WAL files take the database's mode). On PostgreSQL no database file is made.
pub fn prepare(dir: &Path, sqlite: bool) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    close(dir, 0o700)?;
    if !sqlite {
        return Ok(());
    }
    let database = dir.join(DATABASE);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&database)?;
    for name in [DATABASE, "ckrv.db-wal", "ckrv.db-shm"] {
        let path = dir.join(name);
        if path.exists() {
            close(&path, 0o600)?;
        }
    }
    Ok(())
}

/// Removes every permission others have on `path`, saying so when there were some.
fn close(path: &Path, mode: u32) -> std::io::Result<()> {
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        tracing::warn!(
            path = %path.display(),
            from = format!("{current:o}"),
            to = format!("{mode:o}"),
            "closed the data directory to other users"
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_new_or_open_data_directory_ends_private() {
        let root = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = root.path().join("data");
        prepare(&dir, true).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(DATABASE)), 0o600);

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join(DATABASE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::write(dir.join("ckrv.db-wal"), b"").unwrap();
        std::fs::set_permissions(
            dir.join("ckrv.db-wal"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        prepare(&dir, true).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(DATABASE)), 0o600);
        assert_eq!(mode(&dir.join("ckrv.db-wal")), 0o600);
    }

    #[test]
    fn on_postgresql_no_sqlite_file_is_made() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir, false).unwrap();
        assert!(dir.is_dir());
        assert!(!dir.join(DATABASE).exists());
    }
}
