//! `mau`: the Mau command line.

mod account;
mod content;
mod devnet;
mod lan;
mod logging;
mod runtime;
mod server;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mau_proto::{Fingerprint, PeerAddress};
use tracing_subscriber::filter::LevelFilter;

/// Mau: a peer-to-peer social network where every user is an OpenPGP key.
#[derive(Parser)]
#[command(name = "mau", version, about)]
struct Cli {
    /// The account directory (keys in DIR/.mau). Default: $MAU_DIR, else the current directory.
    #[arg(long, global = true, env = "MAU_DIR", default_value = ".")]
    dir: PathBuf,
    /// The async runtime to run on (the same node either way).
    #[arg(
        long,
        global = true,
        env = "MAU_RUNTIME",
        value_enum,
        default_value = "smol"
    )]
    runtime: runtime::RuntimeChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign and encrypt a file to friends and store it as your own content
    /// (DIR/FPR/NAME.pgp; a file of the same name becomes an old version).
    Share {
        /// The file to share.
        file: PathBuf,
        /// Friends who may read it (repeatable); none: only you.
        #[arg(long = "to", value_name = "FPR")]
        to: Vec<Fingerprint>,
        /// Store it under this name (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// List your files (or a followed friend's, --fingerprint).
    Files {
        /// Whose files (default: yours).
        #[arg(long)]
        fingerprint: Option<Fingerprint>,
    },
    /// Decrypt a file (yours or a friend's) to stdout or --output.
    Open {
        /// The file name.
        name: String,
        /// Whose file (default: yours).
        #[arg(long)]
        fingerprint: Option<Fingerprint>,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Delete one of your files and its old versions.
    Delete {
        /// The file name.
        name: String,
    },
    /// Follow a friend: sync fetches their files into DIR/FPR/.
    Follow {
        /// The friend's fingerprint.
        fingerprint: Fingerprint,
    },
    /// Stop following a friend (their files move to DIR/.FPR/, kept).
    Unfollow {
        /// The friend's fingerprint.
        fingerprint: Fingerprint,
    },
    /// List followed friends and when they were last synced.
    Follows,
    /// Fetch what followed friends share with you (all of them, or one).
    Sync {
        /// Only this friend.
        fingerprint: Option<Fingerprint>,
        /// Where to reach the friend (repeatable), besides the running server's DHT.
        #[arg(long, value_name = "HOST:PORT")]
        address: Vec<PeerAddress>,
        /// List everything, not only what changed since the last sync (and
        /// retire local copies the friend no longer shares).
        #[arg(long)]
        full: bool,
        /// Downloads at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Give up on a friend that sends nothing for this many seconds.
        #[arg(long, default_value_t = 30)]
        idle_timeout: u64,
    },
    /// Create an account (Ed25519 key; the passphrase from MAU_PASSPHRASE or a prompt).
    Init {
        /// Your name.
        #[arg(long)]
        name: String,
        /// Your email.
        #[arg(long, default_value = "")]
        email: String,
        /// Make an OpenPGP v6 key (default v4, what the Go implementation uses).
        #[arg(long)]
        v6: bool,
    },
    /// Show the account: fingerprint, user ids, key version.
    Show,
    /// Print (or write) the public key, armored, for friends to import.
    Export {
        /// Write to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Also write the TLS certificate (PEM) here, e.g. for curl --cert.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Also write the TLS private key (PEM, unencrypted, mode 0600) here.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The host:port to advertise in the exported certificate.
        #[arg(long)]
        tls_address: Option<String>,
    },
    /// Manage friends' public keys.
    #[command(subcommand)]
    Friend(FriendCommand),
    /// Run a peer.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Ask the running server about its routing table.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Find a peer through the running server's DHT, or (--local) list the
    /// peers seen on the LAN over mDNS.
    Discover {
        /// The fingerprint to look up.
        #[arg(long, required_unless_present = "local", conflicts_with = "local")]
        fingerprint: Option<Fingerprint>,
        /// List the peers seen on the LAN: the running server's (if it runs
        /// mDNS), else browse `_mau._tcp.local.` for --seconds (multicast).
        #[arg(long)]
        local: bool,
        /// How long to browse when no server with mDNS runs.
        #[arg(long, default_value_t = 3, requires = "local")]
        seconds: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A local network of real nodes on 127.0.0.1 (no discovery, no
    /// multicast): joins, runs lookups, prints what happened. Safe anywhere.
    Devnet {
        /// How many nodes.
        #[arg(long, default_value_t = 20)]
        nodes: u32,
        /// Lookups to run (random node looks up another random node).
        #[arg(long, default_value_t = 100)]
        lookups: u32,
        /// Seed for identities and choices.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Soak instead: keep the nodes running this many seconds, stop and
        /// restart nodes (--churn) while lookups run at --lookup-rate, sample
        /// open fds, RSS and table sizes; fail on < 99% success, a panic, or
        /// fd/RSS growth. --lookups is not used then.
        #[arg(long, default_value_t = 0)]
        soak_seconds: u64,
        /// Soak: the fraction of nodes stopped and restarted (once each) over the run.
        #[arg(long, default_value_t = 0.2, requires = "soak_seconds")]
        churn: f64,
        /// Soak: lookups started per second.
        #[arg(long, default_value_t = 10.0, requires = "soak_seconds")]
        lookup_rate: f64,
        /// Soak: seconds between samples of fds, RSS and table sizes.
        #[arg(long, default_value_t = 10, requires = "soak_seconds")]
        sample_seconds: u64,
    },
}

#[derive(Subcommand)]
enum FriendCommand {
    /// Import a friend's public key file.
    Add {
        /// An armored or binary OpenPGP public key.
        file: PathBuf,
    },
    /// List friends.
    List,
    /// Remove a friend.
    Remove {
        /// The friend's fingerprint.
        fingerprint: Fingerprint,
    },
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Start serving: HTTPS with mutual TLS, the Kademlia RPCs, a control socket.
    Start(server::StartArgs),
}

#[derive(Subcommand)]
enum PeersCommand {
    /// Every peer in the routing table.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The k-buckets: how full, how fresh.
    Buckets {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Server(_) => LevelFilter::INFO,
        _ => LevelFilter::WARN,
    };
    logging::init(default_level);
    let dir = cli.dir;
    let rt = cli.runtime;
    let result = match cli.command {
        Command::Share { file, to, name } => content::share(&dir, &file, name.as_deref(), &to),
        Command::Files { fingerprint } => content::files(&dir, fingerprint),
        Command::Open {
            name,
            fingerprint,
            output,
        } => content::open(&dir, &name, fingerprint, output.as_deref()),
        Command::Delete { name } => content::delete(&dir, &name),
        Command::Follow { fingerprint } => content::follow(&dir, &fingerprint, true),
        Command::Unfollow { fingerprint } => content::follow(&dir, &fingerprint, false),
        Command::Follows => content::follows(&dir),
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
            },
        ),
        Command::Init { name, email, v6 } => account::init(&dir, &name, &email, v6),
        Command::Show => account::show(&dir),
        Command::Export {
            output,
            tls_cert,
            tls_key,
            tls_address,
        } => account::export(
            &dir,
            output.as_deref(),
            tls_cert.as_deref().zip(tls_key.as_deref()),
            tls_address.as_deref(),
        ),
        Command::Friend(FriendCommand::Add { file }) => account::friend_add(&dir, &file),
        Command::Friend(FriendCommand::List) => account::friend_list(&dir),
        Command::Friend(FriendCommand::Remove { fingerprint }) => {
            account::friend_remove(&dir, &fingerprint)
        }
        Command::Server(ServerCommand::Start(args)) => {
            runtime::on_runtime!(rt, server::start, &dir, args)
        }
        Command::Peers(PeersCommand::List { json }) => {
            runtime::on_runtime!(rt, server::peers, &dir, json, false)
        }
        Command::Peers(PeersCommand::Buckets { json }) => {
            runtime::on_runtime!(rt, server::peers, &dir, json, true)
        }
        Command::Discover {
            fingerprint,
            local,
            seconds,
            json,
        } => match fingerprint {
            Some(fp) if !local => runtime::on_runtime!(rt, server::discover, &dir, fp, json),
            _ => lan::discover_local(&dir, seconds, json),
        },
        Command::Devnet {
            nodes,
            seed,
            json,
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
            runtime::on_runtime!(rt, devnet::soak, nodes, seed, json, soak)
        }
        Command::Devnet {
            nodes,
            lookups,
            seed,
            json,
            ..
        } => runtime::on_runtime!(rt, devnet::run, nodes, lookups, seed, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mau: {e}");
            ExitCode::FAILURE
        }
    }
}
