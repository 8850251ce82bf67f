//! `kmsfs mount --kmip-listen ...`: the options of the KMIP server (src/kmip/, docs/kmip.md).

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::CliError;
use crate::kmip::server::{self, Options, Prepared};

#[derive(Args, Debug, Default)]
pub struct KmipArgs {
    /// Serve the keystore over KMIP 1.0-1.4 (TLS, client certificates required) on ADDR:PORT
    /// (5696 is KMIP's port). Off unless given; needs --kmip-cert, --kmip-key, --kmip-client-ca.
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["kmip_cert", "kmip_key", "kmip_client_ca"])]
    pub kmip_listen: Option<SocketAddr>,
    /// The KMIP server's certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "kmip_listen")]
    pub kmip_cert: Option<PathBuf>,
    /// The KMIP server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "kmip_listen")]
    pub kmip_key: Option<PathBuf>,
    /// The CA (PEM) that signs the certificates of KMIP clients; any other is refused in the
    /// TLS handshake.
    #[arg(long, value_name = "FILE", requires = "kmip_listen")]
    pub kmip_client_ca: Option<PathBuf>,
    /// Which client (its certificate's CN) may read, create and change keys in which groups
    /// (JSON: {"CN": {"read": [GROUPS], "create": [GROUPS], "change": [GROUPS]}}, "*" for
    /// every group). Without it, every client the CA signed may do everything.
    #[arg(long, value_name = "FILE", requires = "kmip_listen")]
    pub kmip_policy: Option<PathBuf>,
}

impl KmipArgs {
    /// Checks the files and binds the address (None without --kmip-listen).
    pub fn prepare(&self) -> Result<Option<Prepared>, CliError> {
        let Some(listen) = self.kmip_listen else {
            return Ok(None);
        };
        let need = |o: &Option<PathBuf>, name: &str| {
            o.clone()
                .ok_or_else(|| CliError(format!("--kmip-listen needs {name}")))
        };
        let options = Options {
            listen,
            cert: need(&self.kmip_cert, "--kmip-cert")?,
            key: need(&self.kmip_key, "--kmip-key")?,
            client_ca: need(&self.kmip_client_ca, "--kmip-client-ca")?,
            policy: self.kmip_policy.clone(),
        };
        Ok(Some(server::prepare(&options)?))
    }
}
