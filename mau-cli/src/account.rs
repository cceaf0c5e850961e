//! Account and friend commands over `mau-identity`.

use std::io::IsTerminal;
use std::path::Path;

use mau_identity::{Account, KeyVersion};
use mau_proto::Fingerprint;

use crate::table;

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

/// Loads the account in `dir`.
pub fn load(dir: &Path) -> Result<Account, String> {
    let p = passphrase(false)?;
    Account::load(dir, &p).map_err(|e| e.to_string())
}

pub fn init(dir: &Path, name: &str, email: &str, v6: bool) -> Result<(), String> {
    let p = passphrase(true)?;
    let version = if v6 { KeyVersion::V6 } else { KeyVersion::V4 };
    let account = Account::create(dir, name, email, &p, version).map_err(|e| e.to_string())?;
    println!(
        "created account {} in {}",
        account.fingerprint(),
        dir.display()
    );
    Ok(())
}

pub fn show(dir: &Path) -> Result<(), String> {
    let a = load(dir)?;
    println!("fingerprint: {}", a.fingerprint());
    println!("version:     v{}", a.fingerprint().version());
    for uid in a.user_ids() {
        println!("user id:     {uid}");
    }
    Ok(())
}

pub fn export(
    dir: &Path,
    output: Option<&Path>,
    tls: Option<(&Path, &Path)>,
    address: Option<&str>,
) -> Result<(), String> {
    let a = load(dir)?;
    if let Some((cert_path, key_path)) = tls {
        let (cert, key) = a.export_tls_pem(address).map_err(|e| e.to_string())?;
        std::fs::write(cert_path, cert).map_err(|e| format!("{}: {e}", cert_path.display()))?;
        mau_identity::write_atomic(key_path, key.as_bytes()).map_err(|e| e.to_string())?;
        eprintln!(
            "wrote {} and {} (keep the key secret)",
            cert_path.display(),
            key_path.display()
        );
    }
    let armored = a.export_public().map_err(|e| e.to_string())?;
    match output {
        Some(path) => std::fs::write(path, armored).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            print!("{armored}");
            Ok(())
        }
    }
}

pub fn friend_add(dir: &Path, file: &Path) -> Result<(), String> {
    let a = load(dir)?;
    let f = a.import_friend_file(file).map_err(|e| e.to_string())?;
    println!(
        "added friend {} {}",
        f.fingerprint(),
        f.user_ids().join(", ")
    );
    Ok(())
}

pub fn friend_list(dir: &Path) -> Result<(), String> {
    let a = load(dir)?;
    let friends = a.friends().map_err(|e| e.to_string())?;
    let rows: Vec<Vec<String>> = friends
        .iter()
        .map(|f| vec![f.fingerprint().to_string(), f.user_ids().join(", ")])
        .collect();
    table::print(&["FINGERPRINT", "USER IDS"], &rows);
    Ok(())
}

pub fn friend_remove(dir: &Path, fp: &Fingerprint) -> Result<(), String> {
    let a = load(dir)?;
    a.remove_friend(fp).map_err(|e| e.to_string())?;
    println!("removed friend {fp}");
    Ok(())
}
