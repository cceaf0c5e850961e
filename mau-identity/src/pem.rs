//! PEM export of the TLS certificate and key, for tools nobody here wrote
//! (curl, openssl) to talk to a Mau peer as this account.

use base64::Engine;
use zeroize::Zeroizing;

use crate::{cert, Account, IdentityError, TlsIdentity};

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl Account {
    /// The account's TLS certificate (advertising `address`, if given) and
    /// its private key (unencrypted PKCS#8), both PEM. Keep the key secret:
    /// it is the account's signing key.
    pub fn export_tls_pem(
        &self,
        address: Option<&str>,
    ) -> Result<(String, Zeroizing<String>), IdentityError> {
        let identity = TlsIdentity::from_account(self, address)?;
        let cert = pem("CERTIFICATE", identity.certificate().as_ref());
        let key_der = Zeroizing::new(cert::ed25519_pkcs8(self.ed25519_seed()));
        let key = Zeroizing::new(pem("PRIVATE KEY", &key_der));
        Ok((cert, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_are_64_wide() {
        let p = pem("X", &[0u8; 100]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines[0], "-----BEGIN X-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(*lines.last().unwrap(), "-----END X-----");
    }
}
