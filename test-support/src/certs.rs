//! The throw-away CA and broker certificates of `scripts/certs.sh`: the ones
//! `scripts/test-all.sh` made for this run (`SPA_DAT_TEST_CERTS`), or made now into
//! `target/test-certs` when a test runs by hand.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding `ca.crt`, `other-ca.crt`, `broker.crt` and `broker.key`.
pub fn dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SPA_DAT_TEST_CERTS") {
            return PathBuf::from(dir);
        }
        let root = crate::workspace_root();
        let dir = root.join("target/test-certs");
        let status = Command::new("bash")
            .arg(root.join("scripts/certs.sh"))
            .arg(&dir)
            .status()
            .expect("scripts/certs.sh runs (needs openssl)");
        assert!(status.success(), "scripts/certs.sh failed");
        dir
    })
    .clone()
}

/// The CA that signed the brokers' certificate.
pub fn ca() -> PathBuf {
    dir().join("ca.crt")
}

/// A CA that signed nothing the brokers use.
pub fn other_ca() -> PathBuf {
    dir().join("other-ca.crt")
}
