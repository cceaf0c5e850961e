//! Account and friend commands over `mau-identity`.

use std::io::{IsTerminal, Read};
use std::path::Path;

use mau_identity::{Account, KeyVersion};
use mau_proto::Fingerprint;

use crate::output::{self, out, outln};
use crate::public::{self, PublicInfo};
use crate::table;

/// Keeps the remembered friend list in step after a change (best effort).
fn remember_friends(dir: &Path, a: &Account) {
    if let Ok(friends) = a.friends() {
        public::remember(dir, a, Some(&friends));
    }
}

/// The passphrase: `MAU_PASSPHRASE`, else a prompt on the terminal.
pub fn passphrase(confirm: bool) -> Result<String, String> {
    if let Ok(p) = std::env::var("MAU_PASSPHRASE") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err("no passphrase: set MAU_PASSPHRASE or run on a terminal".into());
    }
    let p = rpassword::prompt_password("Passphrase: ").map_err(|e| e.to_string())?;
    if confirm {
        let again = rpassword::prompt_password("Passphrase again: ").map_err(|e| e.to_string())?;
        if again != p {
            return Err("the passphrases differ".into());
        }
    }
    Ok(p)
}

/// Loads the account in `dir` (and remembers its public part).
pub fn load(dir: &Path) -> Result<Account, String> {
    if !crate::paths::account_file(dir).exists() {
        return Err(format!(
            "no account in {}: create one with `mau init --name NAME`",
            dir.display()
        ));
    }
    let p = passphrase(false)?;
    let a = Account::load(dir, &p).map_err(|e| e.to_string())?;
    public::remember(dir, &a, None);
    Ok(a)
}

/// The account's public information, without the passphrase when it was
/// remembered before.
fn public_info(dir: &Path) -> Result<PublicInfo, String> {
    match public::cached(dir) {
        Some(info) => Ok(info),
        None => {
            let a = load(dir)?;
            Ok(public::remember(dir, &a, None))
        }
    }
}

pub fn init(dir: &Path, name: &str, email: &str, v6: bool) -> Result<(), String> {
    let p = passphrase(true)?;
    let version = if v6 { KeyVersion::V6 } else { KeyVersion::V4 };
    let account = Account::create(dir, name, email, &p, version).map_err(|e| e.to_string())?;
    outln!(
        "created account {} in {}",
        account.fingerprint(),
        dir.display()
    );
    Ok(())
}

pub fn show(dir: &Path, json: bool) -> Result<(), String> {
    let info = public_info(dir)?;
    if json {
        let v = serde_json::json!({
            "fingerprint": info.fingerprint,
            "version": info.version,
            "user_ids": info.user_ids,
        });
        return output::json(&v);
    }
    outln!("fingerprint: {}", info.fingerprint);
    outln!("version:     v{}", info.version);
    for uid in &info.user_ids {
        outln!("user id:     {uid}");
    }
    Ok(())
}

pub fn export(
    dir: &Path,
    output: Option<&Path>,
    tls: Option<(&Path, &Path)>,
    address: Option<&str>,
) -> Result<(), String> {
    let armored = match tls {
        // The TLS key is the account's secret key: the passphrase it is.
        Some((cert_path, key_path)) => {
            let a = load(dir)?;
            let (cert, key) = a.export_tls_pem(address).map_err(|e| e.to_string())?;
            std::fs::write(cert_path, cert).map_err(|e| format!("{}: {e}", cert_path.display()))?;
            mau_identity::write_atomic(key_path, key.as_bytes()).map_err(|e| e.to_string())?;
            eprintln!(
                "wrote {} and {} (keep the key secret)",
                cert_path.display(),
                key_path.display()
            );
            a.export_public().map_err(|e| e.to_string())?
        }
        None => public_info(dir)?.public_key,
    };
    match output {
        Some(path) => std::fs::write(path, armored).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            out!("{armored}");
            Ok(())
        }
    }
}

pub fn friend_add(dir: &Path, file: &Path) -> Result<(), String> {
    let a = load(dir)?;
    let f = if file == Path::new("-") {
        let mut key = Vec::new();
        std::io::stdin()
            .read_to_end(&mut key)
            .map_err(|e| format!("stdin: {e}"))?;
        a.add_friend(&key)
    } else {
        a.import_friend_file(file)
    }
    .map_err(|e| e.to_string())?;
    remember_friends(dir, &a);
    outln!(
        "added friend {} {}",
        f.fingerprint(),
        f.user_ids().join(", ")
    );
    Ok(())
}

pub fn friend_list(dir: &Path, json: bool) -> Result<(), String> {
    let mut fprs: Vec<String> = Account::friend_key_files(dir)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(f, _)| f.to_string())
        .collect();
    fprs.sort();
    fprs.dedup();
    let mut info = public_info(dir)?;
    let unknown = fprs.iter().any(|f| !info.friends.contains_key(f));
    // Friends' key files are encrypted to the account: their user ids are
    // read with the passphrase, when it is at hand without asking.
    if unknown && std::env::var_os("MAU_PASSPHRASE").is_some() {
        let a = load(dir)?;
        let friends = a.friends().map_err(|e| e.to_string())?;
        info = public::remember(dir, &a, Some(&friends));
    }
    let uids = |f: &String| info.friends.get(f);
    if json {
        let v: Vec<_> = fprs
            .iter()
            .map(|f| serde_json::json!({"fingerprint": f, "user_ids": uids(f)}))
            .collect();
        return output::json(&v);
    }
    let rows: Vec<Vec<String>> = fprs
        .iter()
        .map(|f| {
            let u = uids(f).map_or_else(
                || "(unknown until read with the passphrase)".into(),
                |u| u.join(", "),
            );
            vec![f.clone(), u]
        })
        .collect();
    table::print(&["FINGERPRINT", "USER IDS"], &rows);
    Ok(())
}

pub fn friend_remove(dir: &Path, fp: &Fingerprint) -> Result<(), String> {
    let a = load(dir)?;
    a.remove_friend(fp).map_err(|e| e.to_string())?;
    remember_friends(dir, &a);
    outln!("removed friend {fp}");
    Ok(())
}
