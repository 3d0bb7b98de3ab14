//! The `shardline` binary: command line and configuration wiring only.
//!
//! `shardline serve` starts a single-node broker on embedded defaults
//! (127.0.0.1:9092, data in ./data, one shard per core, topics
//! auto-created); a TOML file (`--config`) and flags override them. SIGTERM
//! or SIGINT shut it down cleanly.

use std::path::PathBuf;
use std::process::ExitCode;

mod group_admin;

use clap::{Parser, Subcommand};
use shardline_net::{Broker, BrokerConfig, ControllerNode};

#[derive(Parser)]
#[command(name = "shardline", version, about = "A Kafka-compatible broker, thread-per-core on io_uring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve {
        /// TOML configuration file (keys as in README.md).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listener address (host:port).
        #[arg(long)]
        listen: Option<String>,
        /// Address clients are told to connect to (host:port).
        #[arg(long)]
        advertised_listener: Option<String>,
        /// Data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Executor threads (0 = one per core).
        #[arg(long)]
        shards: Option<usize>,
        /// Any other key: `--set key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Consumer groups and their lag, read from a running broker.
    Groups {
        /// Broker to ask (host:port).
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_server: String,
        #[command(subcommand)]
        action: GroupsAction,
    },
}

#[derive(Subcommand)]
enum GroupsAction {
    /// Every group with its state and type.
    List,
    /// One group: per partition, committed offset, log end offset, lag and
    /// the member consuming it.
    Describe {
        /// Group id.
        group: String,
    },
}

fn groups_command(bootstrap: &str, action: GroupsAction) -> ExitCode {
    let result = match action {
        GroupsAction::List => group_admin::list_groups(bootstrap).map(|groups| {
            println!("{:<40} {:<20} {:<10} PROTOCOL-TYPE", "GROUP", "STATE", "TYPE");
            for (id, state, kind, protocol) in groups {
                println!("{id:<40} {state:<20} {kind:<10} {protocol}");
            }
        }),
        GroupsAction::Describe { group } => group_admin::describe_group(bootstrap, &group)
            .map(|(state, rows)| print!("{}", group_admin::format_describe(&group, &state, &rows))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shardline groups: {error}");
            ExitCode::from(1)
        }
    }
}

fn load_config(
    file: Option<PathBuf>,
    listen: Option<String>,
    advertised: Option<String>,
    data_dir: Option<PathBuf>,
    shards: Option<usize>,
    overrides: Vec<String>,
) -> Result<BrokerConfig, String> {
    let mut config = match file {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            BrokerConfig::from_toml(&text).map_err(|e| e.to_string())?
        }
        None => BrokerConfig::default(),
    };
    let mut set = |key: &str, value: String| config.set(key, &value).map_err(|e| e.to_string());
    if let Some(listen) = listen {
        set("listen", listen)?;
    }
    if let Some(advertised) = advertised {
        set("advertised_listener", advertised)?;
    }
    if let Some(dir) = data_dir {
        set("data_dir", dir.display().to_string())?;
    }
    if let Some(shards) = shards {
        set("shards", shards.to_string())?;
    }
    for pair in overrides {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("--set expects key=value, got {pair:?}"))?;
        set(key.trim(), value.trim().to_string())?;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Blocks SIGTERM and SIGINT in every thread (inherited by the shards) and
/// returns a waiter for them.
fn block_shutdown_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a zeroed, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: `set` is an initialised signal set; sigwait writes `signal`.
    unsafe { libc::sigwait(set, &mut signal) };
    signal
}

/// Starts a node with `start`, prints `ready` once it serves, runs until
/// SIGTERM or SIGINT, then stops it with `stop`.
fn serve<N>(
    start: impl FnOnce() -> Result<N, Box<dyn std::error::Error>>,
    ready: impl FnOnce(&N) -> String,
    stop: impl FnOnce(N),
    signals: &libc::sigset_t,
) -> ExitCode {
    let node = match start() {
        Ok(node) => node,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("shardline: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    println!("{}", ready(&node));
    let signal = wait_for_signal(signals);
    tracing::info!(signal, "signal received");
    stop(node);
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Groups { bootstrap_server, action } => groups_command(&bootstrap_server, action),
        Command::Serve { config, listen, advertised_listener, data_dir, shards, overrides } => {
            let config = match load_config(config, listen, advertised_listener, data_dir, shards, overrides) {
                Ok(config) => config,
                Err(message) => {
                    tracing::error!("{message}");
                    eprintln!("shardline: {message}");
                    return ExitCode::from(2);
                }
            };
            tracing::info!(?config, "configuration");
            let signals = block_shutdown_signals();
            if config.roles().is_ok_and(|roles| !roles.broker) {
                // `process_roles=controller`: a quorum voter without a client listener.
                return serve(
                    || ControllerNode::start(config),
                    |node| format!("shardline controller listening on {}", node.controller_address),
                    ControllerNode::shutdown,
                    &signals,
                );
            }
            serve(
                || Broker::start(config),
                |broker| format!("shardline listening on {}", broker.local_addr),
                Broker::shutdown,
                &signals,
            )
        }
    }
}
