//! KMIP test fixtures: certificates made with `openssl` (a CA, a server certificate for
//! 127.0.0.1, clients the CA signed, one it did not), a free loopback port, and PyKMIP's
//! client (`examples/kmip_lifecycle.py`) from the virtual environment `.ci/run` makes.
//! A missing `openssl` or virtual environment fails the test, with what to do.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

/// Where `.ci/run` installs pykmip==0.11.0, unless `KMSFS_KMIP_VENV` says otherwise.
pub const DEFAULT_VENV: &str = "/opt/kmsfs-kmip-venv";

pub fn python() -> PathBuf {
    let venv =
        std::env::var_os("KMSFS_KMIP_VENV").map_or_else(|| DEFAULT_VENV.into(), PathBuf::from);
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "{} is missing: the KMIP tests need PyKMIP; run .ci/run, or: python3 -m venv {} && {}/bin/pip install pykmip==0.11.0 (KMSFS_KMIP_VENV names another venv)",
        py.display(),
        venv.display(),
        venv.display()
    );
    py
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kmip_lifecycle.py")
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl (the KMIP tests make certificates with it): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn ca(dir: &Path, name: &str, subject: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let mut args = vec!["req", "-x509"];
    args.extend(EC);
    args.extend([
        "-keyout",
        &key,
        "-out",
        &pem,
        "-days",
        "2",
        "-subj",
        subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
}

fn leaf(dir: &Path, name: &str, subject: &str, ca: &str, ext: &str) {
    let (key, csr, pem, extf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let mut args = vec!["req"];
    args.extend(EC);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &args);
    std::fs::write(dir.join(&extf), ext).unwrap();
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &extf,
        ],
    );
}

/// The files of one test's PKI.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// `ca`, `server` (127.0.0.1), clients `client` (CN=backup01), `reader` (CN=reader),
    /// `stranger` (CN=stranger), all signed by `ca`; `rogue` (CN=backup01) signed by
    /// another CA.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        ca(dir, "ca", "/CN=kmsfs test CA");
        ca(dir, "rogue-ca", "/CN=kmsfs test CA");
        leaf(
            dir,
            "server",
            "/CN=127.0.0.1",
            "ca",
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        );
        let client_ext = "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n";
        leaf(dir, "client", "/O=Example/CN=backup01", "ca", client_ext);
        leaf(dir, "reader", "/CN=reader", "ca", client_ext);
        leaf(dir, "stranger", "/CN=stranger", "ca", client_ext);
        leaf(dir, "rogue", "/CN=backup01", "rogue-ca", client_ext);
        Pki {
            dir: dir.to_path_buf(),
        }
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The `kmsfs mount` options serving KMIP on `port`.
    pub fn mount_args(&self, port: u16) -> Vec<String> {
        vec![
            "--kmip-listen".into(),
            format!("127.0.0.1:{port}"),
            "--kmip-cert".into(),
            self.file("server.pem"),
            "--kmip-key".into(),
            self.file("server.key"),
            "--kmip-client-ca".into(),
            self.file("ca.pem"),
        ]
    }

    fn client_args(&self, port: u16, who: &str) -> Vec<String> {
        vec![
            script().display().to_string(),
            "--port".into(),
            port.to_string(),
            "--cert".into(),
            self.file(&format!("{who}.pem")),
            "--key".into(),
            self.file(&format!("{who}.key")),
            "--ca".into(),
            self.file("ca.pem"),
        ]
    }

    /// One subcommand of the script as client `who`: its exit code and its JSON line.
    pub fn run(&self, port: u16, who: &str, command: &[&str]) -> (i32, serde_json::Value) {
        let out: Output = Command::new(python())
            .args(self.client_args(port, who))
            .args(command)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_else(|| {
            panic!(
                "kmip_lifecycle.py {command:?} printed nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let v = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        (out.status.code().unwrap_or(-1), v)
    }

    /// The lifecycle, step by step: each `next()` returns a step's line, and the script
    /// waits until the next call.
    pub fn lifecycle(&self, port: u16, who: &str) -> Steps {
        let mut child = Command::new(python())
            .args(self.client_args(port, who))
            .args(["--step-by-step", "lifecycle"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Steps {
            child,
            stdin,
            stdout,
            started: false,
        }
    }
}

pub struct Steps {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    started: bool,
}

impl Steps {
    /// The next step's line, which must be `step`.
    pub fn next(&mut self, step: &str) -> serde_json::Value {
        if self.started {
            let stdin = self.stdin.as_mut().unwrap();
            let _ = stdin.write_all(b"\n");
            let _ = stdin.flush();
        }
        self.started = true;
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("step {step}: {line:?} is not a step's line: {e}"));
        assert_eq!(v["step"], step, "{v}");
        v
    }

    /// The script's exit status, after its last step.
    pub fn finish(mut self) -> i32 {
        drop(self.stdin.take());
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free at the moment of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TLS connection to the KMIP server as client `who`, the handshake done.
pub fn connect(pki: &Pki, port: u16, who: &str) -> std::io::Result<TlsStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.file("ca.pem")).unwrap())
        .unwrap();
    let certs = vec![CertificateDer::from_pem_file(pki.file(&format!("{who}.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(pki.file(&format!("{who}.key"))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;
