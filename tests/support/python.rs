//! The Python spa-dat 0.4.0 for interop tests, from the virtual environment that
//! scripts/test-all.sh creates (`target/py-venv`) or `SPA_DAT_PYTHON`.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;

pub fn python() -> PathBuf {
    let python = std::env::var_os("SPA_DAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python")
        });
    let works = Command::new(&python)
        .args(["-c", "import spa_dat.socket.kafka, spa_dat.socket.mqtt"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        works,
        "{} cannot import the Python spa-dat: interop tests need it. Run ./scripts/test-all.sh \
         (it creates target/py-venv with spa-dat==0.4.0) or set SPA_DAT_PYTHON",
        python.display()
    );
    python
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}
