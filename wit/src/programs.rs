//! How this project's programs find one another. `ckrv` (for local runs) and `ckrv-api` (for
//! its local workers) both start `ckrv-orchestrator`; a user who followed the README installed
//! all three into one directory, which need not be on the `PATH` a worker is given, so the
//! program beside the caller wins over the `PATH`.

use std::path::{Path, PathBuf};

/// The worker's program name.
pub const ORCHESTRATOR: &str = "ckrv-orchestrator";

/// Why a program could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    #[error("{name} is neither beside {beside} nor in any directory of PATH")]
    NotFound { name: String, beside: String },
    #[error("{path} is not an executable file")]
    NotExecutable { path: String },
}

/// `name` beside the running program, else in the first directory of `PATH` that has it.
/// The path is absolute when the running program's is.
pub fn locate(name: &str) -> Result<PathBuf, LocateError> {
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(Path::parent);
    if let Some(path) = beside
        .map(|dir| dir.join(name))
        .filter(|p| is_executable(p))
    {
        return Ok(path);
    }
    on_path(name).ok_or_else(|| LocateError::NotFound {
        name: name.to_string(),
        beside: exe.map_or_else(|| "this program".into(), |e| e.display().to_string()),
    })
}

/// A program the operator named: a path (anything with a `/`) must be an executable file; a
/// bare name is looked for as [`locate`] does. The result is absolute, so it means the same
/// whatever directory it is started from.
pub fn resolve(given: &Path) -> Result<PathBuf, LocateError> {
    if given.components().count() == 1 && !given.is_absolute() {
        return locate(&given.to_string_lossy());
    }
    if !is_executable(given) {
        return Err(LocateError::NotExecutable {
            path: given.display().to_string(),
        });
    }
    Ok(std::path::absolute(given).unwrap_or_else(|_| given.to_path_buf()))
}

/// The first directory of `PATH` holding an executable `name`.
fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn program(dir: &Path, name: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_named_path_must_be_an_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = program(dir.path(), "worker", 0o755);
        assert_eq!(resolve(&good), Ok(good.clone()));
        let plain = program(dir.path(), "notes", 0o644);
        assert_eq!(
            resolve(&plain),
            Err(LocateError::NotExecutable {
                path: plain.display().to_string()
            })
        );
        assert!(matches!(
            resolve(&dir.path().join("missing")),
            Err(LocateError::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve(dir.path()),
            Err(LocateError::NotExecutable { .. })
        ));
    }

    #[test]
    fn a_bare_name_nowhere_to_be_found_says_where_it_looked() {
        let error = locate("ckrv-no-such-program-anywhere").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("ckrv-no-such-program-anywhere"), "{text}");
        assert!(text.contains("PATH"), "{text}");
        let exe = std::env::current_exe().unwrap();
        assert!(text.contains(&exe.display().to_string()), "{text}");
    }

    #[test]
    fn the_program_beside_this_one_is_found_first() {
        // The test binary's own directory holds other test binaries and build outputs; a
        // program put there is found without PATH.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap();
        let name = format!("ckrv-locate-test-{}", std::process::id());
        let path = program(dir, &name, 0o755);
        let found = locate(&name);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(found, Ok(path));
    }
}
