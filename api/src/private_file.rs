//! Whether a file of secrets is kept from other users, as ssh asks of a private key: the one
//! rule behind `--secrets-key-file`, `--agent-secrets` and `--sso-client-secret-file`.
//!
//! A Kubernetes Secret volume is the exception the rule allows. Its kubelet writes each key as
//! a link into a timestamped directory (beside a `..data` link) owned by root and made
//! readable by the pod's `fsGroup`, so group-readable files are the only way a non-root
//! container reads them; the group is the pod's alone. World-readable files are refused
//! there too.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// The permission bits that let others read `path`, or `None` when it is private.
/// `meta` is `path`'s metadata (following links).
pub fn exposure(path: &Path, meta: &std::fs::Metadata) -> Option<u32> {
    let mode = meta.mode() & 0o777;
    let others = match (in_kubernetes_secret_volume(path, meta), meta.is_dir()) {
        // The kubelet's own directory (a sticky tmpfs): what matters is its files.
        (true, true) => return None,
        (true, false) => 0o007,
        (false, _) => 0o077,
    };
    (mode & others != 0).then_some(mode)
}

/// Whether `path` is a Kubernetes Secret volume's directory, or a key inside one.
fn in_kubernetes_secret_volume(path: &Path, meta: &std::fs::Metadata) -> bool {
    let dir = if meta.is_dir() {
        Some(path)
    } else {
        path.parent()
    };
    dir.is_some_and(|dir| {
        std::fs::symlink_metadata(dir.join("..data")).is_ok_and(|m| m.file_type().is_symlink())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn with_mode(path: &Path, mode: u32) -> std::fs::Metadata {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::metadata(path).unwrap()
    }

    #[test]
    fn only_the_owner_may_read_an_ordinary_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(exposure(&file, &with_mode(&file, 0o600)), None);
        assert_eq!(exposure(&file, &with_mode(&file, 0o640)), Some(0o640));
        assert_eq!(exposure(&file, &with_mode(&file, 0o604)), Some(0o604));
    }

    #[test]
    fn a_kubernetes_secret_volume_may_be_read_by_the_pods_group_only() {
        // The layout the kubelet writes: key -> ..data/key, ..data -> ..2026_12_01_…
        let volume = tempfile::tempdir().unwrap();
        let data = volume.path().join("..2026_12_01_12_00_00.000000001");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("secrets.key"), "x").unwrap();
        std::os::unix::fs::symlink(data.file_name().unwrap(), volume.path().join("..data"))
            .unwrap();
        std::os::unix::fs::symlink("..data/secrets.key", volume.path().join("secrets.key"))
            .unwrap();
        let key = volume.path().join("secrets.key");
        with_mode(&data.join("secrets.key"), 0o440);
        assert_eq!(exposure(&key, &std::fs::metadata(&key).unwrap()), None);
        let dir_meta = with_mode(volume.path(), 0o1777);
        assert_eq!(exposure(volume.path(), &dir_meta), None);
        with_mode(&data.join("secrets.key"), 0o444);
        assert_eq!(
            exposure(&key, &std::fs::metadata(&key).unwrap()),
            Some(0o444),
            "world-readable is refused even there"
        );
        // A `..data` that is not a link is not the kubelet's.
        let fake = tempfile::tempdir().unwrap();
        std::fs::create_dir(fake.path().join("..data")).unwrap();
        let file = fake.path().join("secrets.key");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(exposure(&file, &with_mode(&file, 0o640)), Some(0o640));
    }
}
