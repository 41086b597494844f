//! Test certificates made with the `openssl` CLI (`scripts/test.sh` installs it when missing):
//! private CAs and certificates for 127.0.0.1 / localhost signed by them.
use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`; panics with an install hint if openssl is missing.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl not found ({e}): install it (`apt-get install openssl`)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `dir/NAME.crt` and `dir/NAME.key`.
pub fn make_ca(dir: &Path, name: &str) {
    let (key, crt, subj) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN=tollgate-test-{name}"),
    );
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &crt,
            "-days", "2", "-subj", &subj,
        ],
    );
}

/// A certificate for 127.0.0.1 and localhost (server and client use): `dir/NAME.crt` and
/// `dir/NAME.key`, signed by the CA `dir/CA.crt`.
pub fn issue(dir: &Path, ca: &str, name: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write the extensions file");
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// `ca`, and `server` and `client` signed by it.
pub fn make_certs(dir: &Path) {
    make_ca(dir, "ca");
    issue(dir, "ca", "server");
    issue(dir, "ca", "client");
}
