//! The command line: every command and option, its help, completions and
//! the man page.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use mau_proto::{Fingerprint, PeerAddress};
use tracing_subscriber::filter::LevelFilter;

use crate::output::{self, Failure, EXIT_USAGE};
use crate::runtime::RuntimeChoice;
use crate::server::StartArgs;

const EXAMPLES: &str = "\
Examples:
  mau init --name Alice --email alice@example.org   create an account here
  mau export --output alice.pgp                     your public key, for friends
  mau friend add bob.pgp                            import a friend's key
  mau server start --listen 0.0.0.0:8080 --bootstrap FPR@peer.example.org:8080
  mau status                                        what the running server is doing
  mau share notes.txt --to BOB_FPR                  sign and encrypt for Bob
  mau follow BOB_FPR && mau sync                    fetch what Bob shares with you
  mau files --json                                  machine-readable listings

Environment: MAU_DIR (--dir), MAU_PASSPHRASE, MAU_RUNTIME (--runtime),
MAU_LOG_LEVEL (error, warn, info, debug, trace), NO_COLOR.";

/// The heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// Mau: a peer-to-peer social network where every user is an OpenPGP key.
#[derive(Parser)]
#[command(
    name = "mau",
    version,
    after_help = format!("{EXAMPLES}\n\n{}", output::EXIT_CODES_HELP),
)]
pub struct Cli {
    /// The account directory: keys in DIR/.mau (as Go), mau-rs state in
    /// DIR/.mau-rs [env: MAU_DIR; default: the current directory].
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "MAU_DIR",
        default_value = ".",
        hide_env = true,
        hide_default_value = true
    )]
    pub dir: PathBuf,
    /// The async runtime, smol or tokio: the same node either way [env: MAU_RUNTIME].
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "MAU_RUNTIME",
        value_enum,
        default_value = "smol",
        hide_env = true,
        hide_default_value = true,
        hide_possible_values = true
    )]
    pub runtime: RuntimeChoice,
    /// Machine-readable output (JSON), errors included.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands, in the order a new user needs them.
#[derive(Subcommand)]
pub enum Command {
    /// Create an account (Ed25519 key; the passphrase from MAU_PASSPHRASE or a prompt).
    #[command(after_help = "Example: mau init --name Alice --email alice@example.org")]
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
    /// Show the account: fingerprint, user ids, key version (no passphrase needed).
    Show,
    /// Print (or write) the public key, armored, for friends to import.
    #[command(
        after_help = "Examples:\n  mau export --output alice.pgp\n  mau export --tls-cert cert.pem --tls-key key.pem   for curl --cert/--key"
    )]
    Export {
        /// Write to this file instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Also write the TLS certificate (PEM) here, e.g. for curl --cert.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Also write the TLS private key (PEM, unencrypted, mode 0600) here
        /// (this one needs the passphrase).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// The host:port to advertise in the exported certificate.
        #[arg(long)]
        tls_address: Option<String>,
    },
    /// Manage friends' public keys.
    #[command(subcommand)]
    Friend(FriendCommand),
    /// Run a peer, see whether one runs, stop it.
    #[command(subcommand)]
    Server(ServerCommand),
    /// The running server: addresses, reachability, port mapping, uptime,
    /// peers, buckets, last sync per friend.
    #[command(
        after_help = "Examples:\n  mau status\n  mau status --check --json    ask peers to dial back now"
    )]
    Status(StatusArgs),
    /// Ask the running server about its routing table.
    #[command(subcommand)]
    Peers(PeersCommand),
    /// Find a peer through the running server's DHT, or (--local) list the
    /// peers seen on the LAN over mDNS.
    #[command(
        after_help = "Examples:\n  mau discover --fingerprint FPR\n  mau discover --local --seconds 5"
    )]
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
    },
    /// Sign and encrypt a file to friends and store it as your own content
    /// (DIR/FPR/NAME.pgp; a file of the same name becomes an old version).
    #[command(after_help = "Example: mau share photo.jpg --to BOB_FPR --to CAROL_FPR")]
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
    /// List the old versions of a file (open one with `mau open NAME --version ID`).
    Versions {
        /// The file name.
        name: String,
        /// Whose file (default: yours).
        #[arg(long)]
        fingerprint: Option<Fingerprint>,
    },
    /// Decrypt a file (yours or a friend's, current or old) to stdout or --output.
    #[command(
        after_help = "Examples:\n  mau open notes.txt --output notes.txt\n  mau open notes.txt --version 3f2a   an old version (see `mau versions`)"
    )]
    Open {
        /// The file name.
        name: String,
        /// Whose file (default: yours).
        #[arg(long)]
        fingerprint: Option<Fingerprint>,
        /// An old version: its id from `mau versions`, or a unique prefix of it.
        #[arg(long)]
        version: Option<String>,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Delete one of your files and its old versions (asks first).
    Delete {
        /// The file name.
        name: String,
        /// Do not ask (needed when not on a terminal).
        #[arg(long, short)]
        yes: bool,
    },
    /// Follow a friend: sync fetches their files into DIR/FPR/.
    Follow {
        /// The friend's fingerprint.
        fingerprint: Fingerprint,
    },
    /// Stop following a friend (their files move to DIR/.FPR/, kept; asks first).
    Unfollow {
        /// The friend's fingerprint.
        fingerprint: Fingerprint,
        /// Do not ask (needed when not on a terminal).
        #[arg(long, short)]
        yes: bool,
    },
    /// List followed friends and when they were last synced.
    Follows,
    /// Fetch what followed friends share with you (all of them, or one).
    #[command(
        after_help = "Examples:\n  mau sync                              every followed friend, addresses from the DHT\n  mau sync FPR --address host:8080      one friend, at a known address"
    )]
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
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  mau completions bash > ~/.local/share/bash-completion/completions/mau\n  mau completions zsh > ~/.zfunc/_mau\n  mau completions fish > ~/.config/fish/completions/mau.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `mau man | man -l -`.
    Man,
}

/// `mau friend ...`.
#[derive(Subcommand)]
pub enum FriendCommand {
    /// Import a friend's public key file (`-`: read it from stdin).
    #[command(
        after_help = "Examples:\n  mau friend add bob.pgp\n  curl -s https://example.org/bob.asc | mau friend add -"
    )]
    Add {
        /// An armored or binary OpenPGP public key, or `-` for stdin.
        file: PathBuf,
    },
    /// List friends (no passphrase needed).
    List,
    /// Remove a friend (asks first).
    Remove {
        /// The friend's fingerprint.
        fingerprint: Fingerprint,
        /// Do not ask (needed when not on a terminal).
        #[arg(long, short)]
        yes: bool,
    },
}

/// Options of `mau status`.
#[derive(Args, Clone, Copy, Debug)]
pub struct StatusArgs {
    /// Ask peers of distinct networks to dial the server back now (up to
    /// ~25 s) instead of reporting the last check's verdict.
    #[arg(long)]
    pub check: bool,
}

/// `mau server ...`.
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Start serving: HTTPS with mutual TLS, the Kademlia RPCs, a control
    /// socket. One server per directory.
    #[command(
        after_help = "Examples:\n  mau server start                                   127.0.0.1:8080, this machine only\n  mau server start --listen 0.0.0.0:8080 --advertise my.host:8080\n  mau server start --listen [::]:8080 --port-map      map the port on the router (PCP, NAT-PMP, UPnP)"
    )]
    Start(StartArgs),
    /// Whether a server runs here, and what it is doing (as `mau status`).
    Status(StatusArgs),
    /// Stop the server running here (through its control socket) and wait
    /// until it has saved its table.
    Stop,
}

/// `mau peers ...`.
#[derive(Subcommand)]
pub enum PeersCommand {
    /// Every peer in the routing table.
    List,
    /// The k-buckets: how full, how fresh.
    Buckets,
}

impl Command {
    /// What is logged unless `MAU_LOG_LEVEL` says otherwise: a server
    /// reports what it does; the other commands only warnings.
    pub fn default_log_level(&self) -> LevelFilter {
        match self {
            Command::Server(ServerCommand::Start(_)) => LevelFilter::INFO,
            _ => LevelFilter::WARN,
        }
    }
}

/// Asks `question` on the terminal; `yes` answers it. Off a terminal
/// without `--yes` it refuses: a script must say what it means.
pub fn confirm(yes: bool, question: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            EXIT_USAGE,
            format!("{question} Not on a terminal, so not asking: pass --yes to go ahead"),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    match answer.trim() {
        "y" | "Y" | "yes" | "YES" | "Yes" => Ok(()),
        _ => Err("cancelled: nothing changed".into()),
    }
}

/// `mau completions SHELL`.
pub fn completions(shell: clap_complete::Shell) {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "mau", &mut out);
    output::out!("{}", String::from_utf8_lossy(&out));
}

/// `mau man`.
pub fn man() -> Result<(), String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| e.to_string())?;
    output::out!("{}", String::from_utf8_lossy(&out));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
