//! `mau`: the Mau command line.

mod account;
mod cli;
mod content;
mod devnet;
mod lan;
mod lock;
mod logging;
mod output;
mod paths;
mod public;
mod runtime;
mod server;
mod table;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, FriendCommand, PeersCommand, ServerCommand};
use output::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.command.default_log_level());
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json {
                // A consumer of --json reads stdout: the error is there too.
                let mut error = serde_json::json!({
                    "error": { "message": f.message, "exit_code": f.code }
                });
                if let Some(d) = &f.details {
                    error["details"] = d.clone();
                }
                let _ = output::json(&error);
            }
            eprintln!("mau: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Moves state an older mau-rs left in `DIR/.mau/` (where the Go peer reads
/// every file as a friend's key) to `DIR/.mau-rs/`. A failure is only a
/// warning: the command itself may still work.
fn migrate_state(dir: &std::path::Path) {
    match mau_identity::StateDir::new(dir).migrate() {
        Ok(moved) => {
            for (from, to) in moved {
                tracing::info!(from = %from.display(), to = %to.display(), "moved mau-rs state out of the keyring directory");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not move mau-rs state out of DIR/.mau"),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let dir = cli.dir;
    let rt = cli.runtime;
    let json = cli.json;
    if !matches!(cli.command, Command::Devnet { .. }) {
        migrate_state(&dir);
    }
    match cli.command {
        Command::Init { name, email, v6 } => Ok(account::init(&dir, &name, &email, v6)?),
        Command::Show => Ok(account::show(&dir, json)?),
        Command::Export {
            output,
            tls_cert,
            tls_key,
            tls_address,
        } => Ok(account::export(
            &dir,
            output.as_deref(),
            tls_cert.as_deref().zip(tls_key.as_deref()),
            tls_address.as_deref(),
        )?),
        Command::Friend(FriendCommand::Add { file }) => Ok(account::friend_add(&dir, &file)?),
        Command::Friend(FriendCommand::List) => Ok(account::friend_list(&dir, json)?),
        Command::Friend(FriendCommand::Remove { fingerprint, yes }) => {
            cli::confirm(yes, &format!("Remove friend {fingerprint}?"))?;
            Ok(account::friend_remove(&dir, &fingerprint)?)
        }
        Command::Server(ServerCommand::Start(args)) => {
            Ok(runtime::on_runtime!(rt, server::start, &dir, args)?)
        }
        Command::Server(ServerCommand::Status(args)) | Command::Status(args) => {
            runtime::on_runtime!(rt, server::status, &dir, json, args.check)
        }
        Command::Server(ServerCommand::Stop) => runtime::on_runtime!(rt, server::stop, &dir),
        Command::Peers(PeersCommand::List) => {
            runtime::on_runtime!(rt, server::peers, &dir, json, false)
        }
        Command::Peers(PeersCommand::Buckets) => {
            runtime::on_runtime!(rt, server::peers, &dir, json, true)
        }
        Command::Discover {
            fingerprint,
            local,
            seconds,
        } => match fingerprint {
            Some(fp) if !local => runtime::on_runtime!(rt, server::discover, &dir, fp, json),
            _ => Ok(lan::discover_local(&dir, seconds, json)?),
        },
        Command::Share { file, to, name } => Ok(content::share(&dir, &file, name.as_deref(), &to)?),
        Command::Files { fingerprint } => Ok(content::files(&dir, fingerprint, json)?),
        Command::Versions { name, fingerprint } => {
            Ok(content::versions(&dir, &name, fingerprint, json)?)
        }
        Command::Open {
            name,
            fingerprint,
            version,
            output,
        } => Ok(content::open(
            &dir,
            &name,
            fingerprint,
            version.as_deref(),
            output.as_deref(),
        )?),
        Command::Delete { name, yes } => {
            cli::confirm(
                yes,
                &format!("Delete {name} and all its old versions? This cannot be undone."),
            )?;
            Ok(content::delete(&dir, &name)?)
        }
        Command::Follow { fingerprint } => Ok(content::follow(&dir, &fingerprint, true)?),
        Command::Unfollow { fingerprint, yes } => {
            cli::confirm(
                yes,
                &format!("Stop following {fingerprint}? (their files are kept)"),
            )?;
            Ok(content::follow(&dir, &fingerprint, false)?)
        }
        Command::Follows => Ok(content::follows(&dir, json)?),
        Command::Sync {
            fingerprint,
            address,
            full,
            concurrency,
            idle_timeout,
        } => runtime::on_runtime!(
            rt,
            content::sync,
            &dir,
            content::SyncArgs {
                fingerprint,
                address,
                full,
                concurrency,
                idle_timeout,
                json,
            },
        ),
        Command::Devnet {
            nodes,
            seed,
            soak_seconds,
            churn,
            lookup_rate,
            sample_seconds,
            ..
        } if soak_seconds > 0 => {
            let soak = devnet::SoakArgs {
                seconds: soak_seconds,
                churn,
                lookup_rate,
                sample_seconds,
            };
            Ok(runtime::on_runtime!(
                rt,
                devnet::soak,
                nodes,
                seed,
                json,
                soak
            )?)
        }
        Command::Devnet {
            nodes,
            lookups,
            seed,
            ..
        } => Ok(runtime::on_runtime!(
            rt,
            devnet::run,
            nodes,
            lookups,
            seed,
            json
        )?),
        Command::Completions { shell } => {
            cli::completions(shell);
            Ok(())
        }
        Command::Man => Ok(cli::man()?),
    }
}
