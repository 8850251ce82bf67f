//! A software TPM 2.0 (`swtpm socket`) on free loopback ports, with its state in a private
//! temporary directory: a new `Swtpm` is a new TPM, with its own seeds. It has been started
//! up (TPM2_Startup(CLEAR)) and has answered a command when `start` returns; Drop kills it.
//! Without swtpm installed (Debian: `apt-get install swtpm`) `start` panics: it never skips.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long swtpm may take to answer its first command.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// Attempts at finding two free ports that swtpm then binds (another test may take them).
const PORT_ATTEMPTS: usize = 10;

pub struct Swtpm {
    child: Child,
    /// The TPM command port; the control port is the next one, as the swtpm TCTI expects.
    pub port: u16,
    /// Always Some but while `restart` moves it to the next swtpm.
    state: Option<TempDir>,
}

impl Swtpm {
    pub fn start() -> Swtpm {
        let state = tempfile::Builder::new()
            .prefix("kmsfs-swtpm")
            .tempdir()
            .expect("tempdir for the swtpm state");
        Swtpm::start_in(state)
    }

    /// Starts a swtpm on the state that `old` left: the same TPM, rebooted (PCRs reset).
    pub fn restart(old: Swtpm) -> Swtpm {
        Swtpm::start_in(old.into_state())
    }

    fn start_in(mut state: TempDir) -> Swtpm {
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port_pair();
            let child = spawn(port, state.path());
            let mut tpm = Swtpm {
                child,
                port,
                state: Some(state),
            };
            match tpm.wait_until_it_answers() {
                Ok(()) => return tpm,
                // It exited: most likely a port was taken in between; try others.
                Err(None) => state = tpm.into_state(),
                Err(Some(why)) => panic!("swtpm on port {port} did not answer: {why}"),
            }
        }
        panic!("swtpm did not start on any of {PORT_ATTEMPTS} pairs of free loopback ports");
    }

    /// The TCTI string for `kmsfs::sealing::tpm::Tpm::open` and tss-esapi.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Err(None): swtpm exited; Err(Some(why)): it runs but does not answer.
    fn wait_until_it_answers(&mut self) -> Result<(), Option<String>> {
        let start = Instant::now();
        let mut last = String::from("nothing tried");
        while start.elapsed() < START_DEADLINE {
            if let Some(status) = self.child.try_wait().expect("wait for swtpm") {
                let mut err = String::new();
                if let Some(e) = self.child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                eprintln!("swtpm exited ({status}): {}", err.trim());
                return Err(None);
            }
            match get_random(self.port) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Some(format!("after {START_DEADLINE:?}: {last}")))
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it and keeps its state.
    fn into_state(mut self) -> TempDir {
        self.stop();
        self.state.take().expect("the swtpm state")
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(port: u16, state: &Path) -> Child {
    let server = format!("type=tcp,port={port},bindaddr=127.0.0.1");
    let ctrl = format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1);
    let dir = format!("dir={}", state.display());
    Command::new("swtpm")
        .args(["socket", "--tpm2", "--server", &server, "--ctrl", &ctrl])
        .args(["--tpmstate", &dir, "--flags", "not-need-init,startup-clear"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            if e.kind() == ErrorKind::NotFound {
                panic!(
                    "swtpm is not installed, and the TPM tests need it: \
                     apt-get install swtpm (it is not skipped)"
                );
            }
            panic!("cannot run swtpm: {e}")
        })
}

/// A port P, free with P + 1, on 127.0.0.1 (both are released again for swtpm to bind).
fn free_port_pair() -> u16 {
    loop {
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
        let port = a.local_addr().expect("local address").port();
        if port == u16::MAX {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return port;
        }
    }
}

/// Sends TPM2_GetRandom(8) to the command port and checks for a successful response.
fn get_random(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested 8.
    let cmd = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8];
    s.write_all(&cmd).map_err(|e| format!("send: {e}"))?;
    let mut header = [0u8; 10];
    s.read_exact(&mut header)
        .map_err(|e| format!("receive: {e}"))?;
    let rc = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    if rc != 0 {
        return Err(format!("TPM2_GetRandom answered {rc:#x}"));
    }
    Ok(())
}
