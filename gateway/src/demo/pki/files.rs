//! Writing the dev PKI to disk: certificates world-readable, private keys 0600 from creation.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::{DevPki, PkiError};

impl DevPki {
    /// Writes the CA certificates and the leaf certificates and keys as PEM files into `dir`
    /// (created if missing). Keys are created with mode 0600; CA keys are never written.
    ///
    /// # Errors
    /// When the directory or a file cannot be written.
    pub fn write_to(&self, dir: &Path) -> Result<DevPkiPaths, PkiError> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.to_owned(), source })?;
        let paths = DevPkiPaths::in_dir(dir);
        write_public(&paths.ca_cert, self.ca.cert_pem())?;
        write_public(&paths.internal_ca_cert, self.internal_ca.cert_pem())?;
        for (cert, key, issued) in [
            (&paths.gateway_cert, &paths.gateway_key, &self.gateway),
            (&paths.client_cert, &paths.client_key, &self.client),
            (&paths.upstream_cert, &paths.upstream_key, &self.upstream),
            (&paths.gateway_client_cert, &paths.gateway_client_key, &self.gateway_client),
        ] {
            write_public(cert, issued.cert_pem())?;
            write_secret(key, issued.key_pem())?;
        }
        Ok(paths)
    }
}

/// Where [`DevPki::write_to`] put each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiPaths {
    /// `ca.crt`: the public dev CA.
    pub ca_cert: PathBuf,
    /// `internal-ca.crt`: the internal CA.
    pub internal_ca_cert: PathBuf,
    /// `gateway.crt`.
    pub gateway_cert: PathBuf,
    /// `gateway.key` (0600).
    pub gateway_key: PathBuf,
    /// `client.crt`.
    pub client_cert: PathBuf,
    /// `client.key` (0600).
    pub client_key: PathBuf,
    /// `upstream.crt`.
    pub upstream_cert: PathBuf,
    /// `upstream.key` (0600).
    pub upstream_key: PathBuf,
    /// `gateway-client.crt`.
    pub gateway_client_cert: PathBuf,
    /// `gateway-client.key` (0600).
    pub gateway_client_key: PathBuf,
}

impl DevPkiPaths {
    /// The file names [`DevPki::write_to`] uses, inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        let p = |name: &str| dir.join(name);
        DevPkiPaths {
            ca_cert: p("ca.crt"),
            internal_ca_cert: p("internal-ca.crt"),
            gateway_cert: p("gateway.crt"),
            gateway_key: p("gateway.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
            upstream_cert: p("upstream.crt"),
            upstream_key: p("upstream.key"),
            gateway_client_cert: p("gateway-client.crt"),
            gateway_client_key: p("gateway-client.key"),
        }
    }
}

fn write_public(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_file(path, pem, 0o644)
}

fn write_secret(path: &Path, pem: &str) -> Result<(), PkiError> {
    write_file(path, pem, 0o600)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write { path: path.to_owned(), source };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        // The mode applies at creation; an existing file keeps its mode, so narrow it before any
        // key byte is written (a reused demo dir must not leave a key world-readable).
        opts.mode(mode);
        let file = opts.open(path).map_err(err)?;
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(err)?;
        write_all(file, contents).map_err(err)
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        write_all(opts.open(path).map_err(err)?, contents).map_err(err)
    }
}

fn write_all(mut file: fs::File, contents: &str) -> io::Result<()> {
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
