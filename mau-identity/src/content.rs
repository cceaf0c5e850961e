//! Content files: signed by their owner and encrypted to the owner and the
//! recipients, as the Go implementation writes them (`openpgp.Encrypt` with
//! a signer: PKESKs, then an encrypted, signed literal data packet).
//!
//! * [`Account::seal`] signs and encrypts;
//! * [`Account::open`] decrypts and requires a good signature of the
//!   expected signer (and that the message is encrypted to this account);
//!   [`Account::check`] does the same without keeping the plaintext (a
//!   download checked as it arrives);
//! * [`recipients`] lists the key handles a file is encrypted to, reading
//!   only its first packets, so a server can decide who may read it without
//!   decrypting;
//! * [`is_recipient`] matches those handles against a friend's key.

use std::io::{self, Read, Write};

use sequoia_openpgp as openpgp;

use buffered_reader::{BufferedReader, Generic};
use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use openpgp::parse::{Cookie, PacketParser, PacketParserResult, Parse};
use openpgp::policy::StandardPolicy;
use openpgp::serialize::stream::{Encryptor, LiteralWriter, Message, Signer};
use openpgp::types::{HashAlgorithm, KeyFlags, SymmetricAlgorithm};
use openpgp::{Cert, KeyHandle, Packet};

use crate::account::Account;

/// Why sealing or opening a content file failed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Reading the input or writing the output failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A recipient (or the account) has no usable encryption key.
    #[error("{0} has no usable encryption key")]
    NoEncryptionKey(String),
    /// The file is not an OpenPGP message encrypted to this account.
    #[error("not encrypted to this account: {0}")]
    NotForUs(String),
    /// The file has no good signature by the expected signer.
    #[error("bad or missing signature of {signer}: {reason}")]
    BadSignature {
        /// The expected signer's fingerprint.
        signer: String,
        /// What sequoia reported.
        reason: String,
    },
    /// The OpenPGP data is malformed or another OpenPGP operation failed.
    #[error("OpenPGP: {0}")]
    Pgp(String),
}

fn pgp(e: impl std::fmt::Display) -> ContentError {
    ContentError::Pgp(e.to_string())
}

/// The digest of our signatures: what Go's `openpgp.Encrypt` uses by
/// default, and about three times faster to compute than sequoia's default
/// SHA-512 on CPUs with SHA extensions (the signature digest covers every
/// byte of a file, on both the sharing and the receiving side).
const SIGNATURE_HASH: HashAlgorithm = HashAlgorithm::SHA256;

/// Plaintext [`Account::check`] holds back from its (discarded) output.
/// Sequoia's default (25 MiB) makes it verify a small message before
/// releasing any of it, at the price of copying every 25 MiB of a large
/// one into fresh buffers; with no output there is nothing to protect.
/// It must not be smaller than a read ([`COPY_CHUNK`]): sequoia 2.4's
/// decryptor then takes the end of the message for near and reads all the
/// rest into one growing buffer (its cursor can pass the hold-back, and it
/// consumes one hold-back per read; measured 10× slower with 64 KiB).
/// 256 KiB measured fastest (20 MiB: 29 ms against 50 ms with 1 MiB).
const CHECK_HOLD_BACK: usize = COPY_CHUNK;
// `check_bytes` clamps its reads to [4096, CHECK_HOLD_BACK].
const _: () = assert!(CHECK_HOLD_BACK >= 4096);

/// The size of the reads through sequoia's streams (`io::copy` uses
/// 8 KiB, and each read walks the whole reader or writer stack).
const COPY_CHUNK: usize = 256 * 1024;

fn policy() -> StandardPolicy<'static> {
    StandardPolicy::new()
}

fn encryption_flags() -> KeyFlags {
    KeyFlags::empty()
        .set_storage_encryption()
        .set_transport_encryption()
}

impl Account {
    /// Signs `input` with the account's primary key and encrypts it to the
    /// account itself and to every cert in `recipients`, writing the
    /// OpenPGP message to `output`. Streams: memory use does not grow with
    /// the input.
    pub fn seal(
        &self,
        mut input: impl Read,
        output: impl Write + Send + Sync,
        recipients: &[&Cert],
    ) -> Result<(), ContentError> {
        let p = policy();
        let own = self.secret_cert();
        let mut keys = Vec::new();
        for cert in std::iter::once(own).chain(recipients.iter().copied()) {
            let found: Vec<_> = cert
                .keys()
                .with_policy(&p, None)
                .supported()
                .alive()
                .revoked(false)
                .key_flags(encryption_flags())
                .collect();
            if found.is_empty() {
                return Err(ContentError::NoEncryptionKey(cert.fingerprint().to_hex()));
            }
            keys.extend(found);
        }
        let signer = own
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .and_then(|k| k.into_keypair())
            .map_err(pgp)?;
        let message = Message::new(output);
        let message = Encryptor::for_recipients(message, keys)
            .build()
            .map_err(pgp)?;
        let message = Signer::new(message, signer)
            .and_then(|s| s.hash_algo(SIGNATURE_HASH))
            .and_then(|s| s.build())
            .map_err(pgp)?;
        let mut w = LiteralWriter::new(message).build().map_err(pgp)?;
        copy(&mut input, &mut w, COPY_CHUNK)?;
        w.finalize().map_err(pgp)?;
        Ok(())
    }

    /// Decrypts `input` (a message encrypted to this account) into `output`,
    /// and fails unless it carries a good signature by `signer` (use
    /// [`Account::check`] to only verify).
    ///
    /// Plaintext reaches `output` before the signature is checked (it is at
    /// the end of the message); treat it as untrusted until this returns
    /// `Ok`.
    pub fn open(
        &self,
        input: impl Read + Send + Sync,
        output: impl Write,
        signer: &Cert,
    ) -> Result<(), ContentError> {
        self.decrypt_verified(reader(input), output, signer, None)
    }

    /// Checks that `input` is a message encrypted to this account and
    /// signed by `signer`, discarding the plaintext: [`Account::open`]
    /// into [`io::sink`], with less copying.
    pub fn check(&self, input: impl Read + Send + Sync, signer: &Cert) -> Result<(), ContentError> {
        self.decrypt_verified(reader(input), io::sink(), signer, Some(CHECK_HOLD_BACK))
    }

    /// [`Account::check`] for a message in memory (a small download):
    /// read in place, with buffers sized to it rather than to a large
    /// stream (allocating and zeroing 256 KiB buffers per file was the
    /// largest single cost of checking a small file after the
    /// public-key operations).
    pub fn check_bytes(&self, input: &[u8], signer: &Cert) -> Result<(), ContentError> {
        // Reads and the hold-back the same size (see CHECK_HOLD_BACK),
        // and never below sequoia's minimum.
        let chunk = input.len().clamp(4096, CHECK_HOLD_BACK);
        // Read in place: sequoia's reader over an `io::Read` allocates
        // (and zeroes) a fresh buffer at each refill.
        let input = buffered_reader::Memory::with_cookie(input, Cookie::default());
        self.decrypt_verified(input, io::sink(), signer, Some(chunk))
    }

    /// [`Account::open`] with sequoia's hold-back buffer (`hold_back`, its
    /// default if `None`).
    fn decrypt_verified<'a>(
        &self,
        input: impl BufferedReader<Cookie> + 'a,
        mut output: impl Write,
        signer: &Cert,
        hold_back: Option<usize>,
    ) -> Result<(), ContentError> {
        let p = policy();
        let helper = OpenHelper {
            account: self.secret_cert(),
            signer,
            policy: &p,
            decrypted: false,
            signature: None,
        };
        let mut d = DecryptorBuilder::from_buffered_reader(input)
            .map(|b| match hold_back {
                Some(n) => b.buffer_size(n),
                None => b,
            })
            .and_then(|b| b.with_policy(&p, None, helper))
            .map_err(|e| classify(e.to_string(), e.downcast_ref::<ContentError>(), signer))?;
        let copied = copy(&mut d, &mut output, hold_back.unwrap_or(COPY_CHUNK));
        let helper = d.into_helper();
        if let Some(reason) = helper.signature {
            return Err(ContentError::BadSignature {
                signer: signer.fingerprint().to_hex(),
                reason,
            });
        }
        copied?;
        if !helper.decrypted {
            return Err(ContentError::NotForUs(
                "the message is not encrypted".into(),
            ));
        }
        Ok(())
    }
}

/// `input` as the reader type sequoia's parsers take.
fn reader<R: Read + Send + Sync>(input: R) -> Generic<R, Cookie> {
    Generic::with_cookie(input, None, Cookie::default())
}

/// `io::copy` in chunks of `chunk` bytes.
fn copy(mut input: impl Read, mut output: impl Write, chunk: usize) -> io::Result<()> {
    let mut buf = vec![0u8; chunk];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        output.write_all(&buf[..n])?;
    }
}

fn classify(text: String, inner: Option<&ContentError>, signer: &Cert) -> ContentError {
    match inner {
        Some(ContentError::NotForUs(r)) => ContentError::NotForUs(r.clone()),
        Some(ContentError::BadSignature { signer, reason }) => ContentError::BadSignature {
            signer: signer.clone(),
            reason: reason.clone(),
        },
        Some(other) => ContentError::Pgp(other.to_string()),
        None if text.to_ascii_lowercase().contains("signature") => ContentError::BadSignature {
            signer: signer.fingerprint().to_hex(),
            reason: text,
        },
        None => ContentError::Pgp(text),
    }
}

struct OpenHelper<'a> {
    account: &'a Cert,
    signer: &'a Cert,
    policy: &'a StandardPolicy<'a>,
    decrypted: bool,
    signature: Option<String>,
}

impl VerificationHelper for OpenHelper<'_> {
    fn get_certs(&mut self, _ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(vec![self.signer.clone()])
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        let mut reason = String::from("the message is not signed");
        for layer in structure {
            if let MessageLayer::SignatureGroup { results } = layer {
                for r in results {
                    match r {
                        Ok(good) if good.ka.cert().fingerprint() == self.signer.fingerprint() => {
                            return Ok(());
                        }
                        Ok(_) => reason = "signed by another key".into(),
                        Err(e) => reason = e.to_string(),
                    }
                }
            }
        }
        self.signature = Some(reason.clone());
        Err(ContentError::BadSignature {
            signer: self.signer.fingerprint().to_hex(),
            reason,
        }
        .into())
    }
}

impl DecryptionHelper for OpenHelper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        let keys: Vec<_> = self
            .account
            .keys()
            .with_policy(self.policy, None)
            .key_flags(encryption_flags())
            .secret()
            .collect();
        for pkesk in pkesks {
            for key in &keys {
                if let Some(r) = pkesk.recipient() {
                    if !r.aliases(key.key().key_handle()) {
                        continue;
                    }
                }
                let Ok(mut pair) = key.key().clone().into_keypair() else {
                    continue;
                };
                if pkesk
                    .decrypt(&mut pair, sym_algo)
                    .map(|(algo, sk)| decrypt(algo, &sk))
                    .unwrap_or(false)
                {
                    self.decrypted = true;
                    return Ok(None);
                }
            }
        }
        Err(
            ContentError::NotForUs("no session key decrypts with this account's keys".into())
                .into(),
        )
    }
}

/// The recipients a message is encrypted to (the key handles of its PKESK
/// packets; anonymous recipients are skipped). Reads only the packets before
/// the encrypted data, not the whole file.
pub fn recipients(input: impl Read + Send + Sync) -> Result<Vec<KeyHandle>, ContentError> {
    let mut out = Vec::new();
    let mut ppr = PacketParser::from_reader(input).map_err(pgp)?;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(p) => {
                if let Some(h) = p.recipient() {
                    out.push(h);
                }
            }
            Packet::SKESK(_) | Packet::Marker(_) => {}
            _ => break,
        }
        ppr = pp.next().map_err(pgp)?.1;
    }
    Ok(out)
}

/// Whether any key of `cert` (primary or subkey) is among `recipients`.
pub fn is_recipient(recipients: &[KeyHandle], cert: &Cert) -> bool {
    cert.keys().any(|k| {
        let h = k.key().key_handle();
        recipients.iter().any(|r| r.aliases(&h))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyVersion;
    use openpgp::serialize::stream::Recipient;
    use openpgp::types::Features;

    fn account(name: &str) -> Account {
        Account::generate_in_memory(name, "", KeyVersion::V4).expect("account")
    }

    /// Several pieces of plaintext, not a multiple of a piece.
    fn plaintext() -> Vec<u8> {
        (0..(3 * COPY_CHUNK + 12_345) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// `from` seals for `to` with SEIPDv1 (as Go's `openpgp.Encrypt`).
    fn seal_v1(from: &Account, to: &Account, data: &[u8]) -> Vec<u8> {
        let p = policy();
        let cert = to.public_cert();
        let key = cert
            .keys()
            .with_policy(&p, None)
            .key_flags(encryption_flags())
            .next()
            .expect("encryption key");
        let recipient = Recipient::new(
            Features::empty().set_seipdv1(),
            key.key().key_handle(),
            key.key(),
        );
        let signer = from
            .secret_cert()
            .primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .and_then(|k| k.into_keypair())
            .expect("signer");
        let mut out = Vec::new();
        let m = Encryptor::for_recipients(Message::new(&mut out), vec![recipient])
            .build()
            .expect("encryptor");
        let m = Signer::new(m, signer)
            .and_then(|s| s.build())
            .expect("signer");
        let mut w = LiteralWriter::new(m).build().expect("literal");
        w.write_all(data).expect("write");
        w.finalize().expect("finalize");
        out
    }

    /// Both checks give the same verdict (the kind of a refusal may
    /// differ: checked where it matters).
    fn same(b: &Account, input: &[u8], signer: &Cert) -> Result<(), ContentError> {
        let one = b.check(input, signer);
        let two = b.check_bytes(input, signer);
        assert_eq!(
            one.is_ok(),
            two.is_ok(),
            "check: {one:?}, check_bytes: {two:?}"
        );
        two
    }

    #[test]
    fn check_bytes_agrees_with_check() {
        let (a, b, c) = (account("A"), account("B"), account("C"));
        let data = plaintext();
        let mut sealed = Vec::new();
        a.seal(&data[..], &mut sealed, &[&b.public_cert()])
            .expect("seal");
        let signer = a.public_cert();
        same(&b, &sealed, &signer).expect("good file");
        // Signed by someone else, or not for us.
        assert!(matches!(
            same(&b, &sealed, &c.public_cert()),
            Err(ContentError::BadSignature { .. })
        ));
        assert!(matches!(
            same(&c, &sealed, &signer),
            Err(ContentError::NotForUs(_))
        ));
        // Any byte changed past the header, a cut, or bytes after the end.
        for at in [sealed.len() / 2, sealed.len() - 3, sealed.len() - 40] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x40;
            assert!(same(&b, &bad, &signer).is_err(), "byte {at} changed");
        }
        for keep in [sealed.len() - 1, sealed.len() / 2, 600] {
            assert!(same(&b, &sealed[..keep], &signer).is_err(), "cut at {keep}");
        }
        let mut longer = sealed.clone();
        longer.extend_from_slice(&sealed[..200]);
        assert!(same(&b, &longer, &signer).is_err(), "bytes after the end");
    }

    #[test]
    fn check_bytes_takes_small_files() {
        let (a, b, c) = (account("A"), account("B"), account("C"));
        let signer = a.public_cert();
        for size in [0, 1, 1000, 5000, 70_000] {
            let mut sealed = Vec::new();
            a.seal(&vec![b'x'; size][..], &mut sealed, &[&b.public_cert()])
                .expect("seal");
            same(&b, &sealed, &signer).expect("good file");
            assert!(matches!(
                b.check_bytes(&sealed, &c.public_cert()),
                Err(ContentError::BadSignature { .. })
            ));
            assert!(matches!(
                c.check_bytes(&sealed, &signer),
                Err(ContentError::NotForUs(_))
            ));
            let mut bad = sealed.clone();
            let at = sealed.len() - 5;
            bad[at] ^= 2;
            assert!(
                same(&b, &bad, &signer).is_err(),
                "{size} bytes, one changed"
            );
        }
    }

    #[test]
    fn check_bytes_takes_go_style_seipd_v1() {
        let (a, b) = (account("A"), account("B"));
        let data = plaintext();
        let sealed = seal_v1(&a, &b, &data);
        let signer = a.public_cert();
        same(&b, &sealed, &signer).expect("good SEIPDv1 file");
        let mut bad = sealed.clone();
        let at = sealed.len() / 2;
        bad[at] ^= 1;
        assert!(same(&b, &bad, &signer).is_err(), "changed SEIPDv1 file");
    }
}
