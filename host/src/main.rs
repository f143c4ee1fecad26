//! The `switchyard` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Run microservices as WebAssembly components behind one HTTP gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load every services/<name>/<version>.wasm and serve them over HTTP.
    ///
    /// `/<name>/...` reaches service <name>; `GET /admin/services` lists what
    /// is loaded. The highest valid version of each service becomes active,
    /// unless an activation or rollback made earlier says otherwise; files
    /// added to or removed from the services folder are picked up while serving.
    Serve(Box<ServeArgs>),
    /// Work on a store directly (the host must not be running on it).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Write a new service's folder: its WIT world, an app that answers
    /// `GET /`, a manifest with its name and version 0.1.0.
    New {
        /// The service's name (lower-case letters, digits and '-'): its
        /// folder, and its path on the host, `/<name>/...`.
        name: String,
        /// rust, python or javascript.
        #[arg(long)]
        lang: switchyard_authoring::Language,
        /// An interface it calls, by full name or short (`catalog`); repeat
        /// for several.
        #[arg(long = "import")]
        imports: Vec<String>,
        /// The folder to write it in (as <dir>/<name>).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Commands against a running host's admin API.
    #[command(flatten)]
    Operate(Operate),
    /// Build a service's folder into a component, with the toolchain pinned
    /// for its language (installed on first use): <dir>/<name>-<version>.wasm,
    /// or <services>/<name>/<version>.wasm with --services.
    Build {
        /// The service's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// A host's services folder to build straight into.
        #[arg(long, env = "SWITCHYARD_SERVICES")]
        services: Option<PathBuf>,
        /// Where the Python and JavaScript toolchains are kept; default:
        /// ~/.cache/switchyard/toolchains.
        #[arg(long, env = "SWITCHYARD_TOOLCHAINS")]
        toolchains: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy every service's data and every deployment record from one store
    /// into another, empty one: to move a host's embedded store into the
    /// PostgreSQL database of a cluster.
    Copy {
        /// The store to copy: sqlite:DATA_DIR or postgres://…
        #[arg(long, value_parser = switchyard_store::Location::parse)]
        from: switchyard_store::Location,
        /// The store to fill, which must be empty: postgres://… or sqlite:DIR
        #[arg(long, value_parser = switchyard_store::Location::parse)]
        to: switchyard_store::Location,
    },
}

/// An operator's commands, each one admin API call to a running host.
#[derive(Subcommand)]
enum Operate {
    /// List the services of a running host: active version, traffic,
    /// versions, instances, requests and errors.
    Services {
        #[command(flatten)]
        host: HostArgs,
    },
    /// One service of a running host: its versions, their states and weights.
    Service {
        name: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Upload FILE to a running host as version --version of service NAME
    /// (validated as a dropped file is; refused with the host's reason).
    Deploy {
        name: String,
        file: PathBuf,
        /// Its version, X.Y.Z.
        #[arg(long)]
        version: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Send all of NAME's traffic to VERSION.
    Activate {
        name: String,
        version: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Send NAME's traffic back to the version that served before.
    Rollback {
        name: String,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Split NAME's traffic by weight: `switchyard split goods 1.0.0=90 1.1.0=10`.
    Split {
        name: String,
        #[arg(required = true, value_parser = switchyard::operator::parse_weight)]
        weights: Vec<(String, u32)>,
        #[command(flatten)]
        host: HostArgs,
    },
    /// What happened to NAME: activations, swaps, splits, failovers, refusals.
    History {
        name: String,
        #[command(flatten)]
        host: HostArgs,
    },
}

/// Which host an operator's command goes to, and how it answers. The
/// token, when the host has one, comes from SWITCHYARD_ADMIN_TOKEN. Exit
/// codes: 0 done, 1 refused by the host (its reason on stderr), 2 a command
/// line not understood, 3 the host cannot be reached.
#[derive(clap::Args)]
struct HostArgs {
    /// The host's address.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Print the host's JSON answer instead of a table, for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Folder holding <name>/<semver>.wasm (and optional <name>/service.toml).
    #[arg(long, env = "SWITCHYARD_SERVICES", default_value = "services")]
    services: PathBuf,
    /// Folder for durable data (services' key-value data, deployment records,
    /// compiled components); created if missing.
    #[arg(long, env = "SWITCHYARD_DATA", default_value = "data")]
    data: PathBuf,
    /// Folder for compiled components, which hosts of the same build may
    /// share; default: <data>/compiled.
    #[arg(long, env = "SWITCHYARD_COMPILED_CACHE")]
    compiled_cache: Option<PathBuf>,
    /// Where services' data and deployment records live: a PostgreSQL
    /// database that several hosts share (postgres://USER@HOST:PORT/DB), or
    /// sqlite:DIR. Default: the embedded SQLite store under --data.
    #[arg(long, env = "SWITCHYARD_STORE", value_parser = switchyard_store::Location::parse)]
    store: Option<switchyard_store::Location>,
    /// This host's name among the hosts sharing a store (GET /admin/nodes).
    /// Default: the machine's host name and the port listened on.
    #[arg(long, env = "SWITCHYARD_NODE_ID")]
    node_id: Option<String>,
    /// Address to listen on; port 0 picks a free port (printed on start).
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger gets 413.
    #[arg(long, env = "SWITCHYARD_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Milliseconds a request may run before it gets 504 (a service's
    /// `[limits] deadline_ms` overrides it); also bounds reading a request body.
    #[arg(long, env = "SWITCHYARD_REQUEST_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    request_timeout_ms: u64,
    /// Operators' token, presented as `Authorization: Bearer <token>`: the
    /// admin API, /metrics and unpublished functions over /rpc need it.
    /// Without one, operators are loopback clients.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// After SIGTERM or Ctrl-C, milliseconds requests in flight may take to finish.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    shutdown_timeout_ms: u64,
    /// Milliseconds a client has to send a complete request head, from its
    /// first byte (for a new connection: from connecting); then it is closed.
    #[arg(long, env = "SWITCHYARD_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    header_timeout_ms: u64,
    /// Milliseconds a connection may sit with no request running and no bytes
    /// moving before it is closed.
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    idle_timeout_ms: u64,
    /// Open connections at most; more wait until one closes. Lowered to fit
    /// the limit on open files (whose soft limit is raised to the hard one).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Instances of all services and versions together that can exist at
    /// once (wasmtime's pooling allocator reserves room for them at start).
    #[arg(long, env = "SWITCHYARD_POOL_INSTANCES", default_value_t = switchyard_runtime::POOLED_INSTANCES,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pool_instances: u32,
    /// Write the names of the guests' compiled functions to
    /// /tmp/perf-<pid>.map, so that `perf` names guest code in a profile.
    #[arg(long, env = "SWITCHYARD_PERF_MAP")]
    perf_map: bool,
    /// Export a trace of every request over OTLP/HTTP to this collector
    /// (http://HOST:4318; spans go to its /v1/traces). The OTEL_* variables
    /// apply: OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf or http/json),
    /// OTEL_EXPORTER_OTLP_HEADERS, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER.
    #[arg(long, env = "SWITCHYARD_OTLP_ENDPOINT", value_parser = switchyard_trace::Endpoint::parse)]
    otlp_endpoint: Option<switchyard_trace::Endpoint>,
    /// Log lines as `text` for people or `json` for machines (filter: RUST_LOG).
    #[arg(long, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Look for I/O after every task poll, not every 61st: a guest that
        // computes yields every epoch tick (2 ms), and with tokio's default
        // two such guests delay accepting, reading and answering everything
        // else by 61 ticks (~0.5 s here). Measured in `make bench` (fairness):
        // it also raised GET /goods/{id} from 44k to 63k req/s.
        .event_interval(1)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Operate(operate) => run_against_host(operate).await,
        Command::Serve(args) => serve(*args).await,
        Command::Store(StoreCommand::Copy { from, to }) => {
            let _logs = switchyard::logs::init(false);
            let copied = switchyard::copy_store(&from, &to).await?;
            println!(
                "copied {} entries and {} deployment records",
                copied.entries, copied.deployments
            );
            Ok(())
        }
        Command::New {
            name,
            lang,
            imports,
            dir,
        } => {
            let made = switchyard_authoring::scaffold(&dir, &name, lang, &imports)?;
            println!(
                "wrote {}: build it with `switchyard build {}`",
                made.display(),
                made.display()
            );
            Ok(())
        }
        Command::Build {
            dir,
            services,
            toolchains,
        } => {
            let toolchains = match toolchains {
                Some(root) => switchyard_authoring::Toolchains::at(root),
                None => switchyard_authoring::Toolchains::in_user_cache()?,
            };
            #[allow(clippy::print_stderr)] // progress, for the person waiting
            let mut progress = |line: &str| eprintln!("{line}");
            let built =
                switchyard_authoring::build(&dir, services.as_deref(), &toolchains, &mut progress)?;
            println!(
                "built {} {} ({}): {}",
                built.name,
                built.version,
                built.language,
                built.file.display()
            );
            Ok(())
        }
    }
}

/// One admin call; the answer on stdout, or the refusal on stderr with
/// the exit code that says what kind it is.
async fn run_against_host(operate: Operate) -> anyhow::Result<()> {
    use switchyard::operator::Command as Op;
    let (host, op) = match operate {
        Operate::Services { host } => (host, Op::Services),
        Operate::Service { name, host } => (host, Op::Service { name }),
        Operate::Deploy {
            name,
            file,
            version,
            host,
        } => (
            host,
            Op::Deploy {
                name,
                file,
                version,
            },
        ),
        Operate::Activate {
            name,
            version,
            host,
        } => (host, Op::Activate { name, version }),
        Operate::Rollback { name, host } => (host, Op::Rollback { name }),
        Operate::Split {
            name,
            weights,
            host,
        } => (host, Op::Split { name, weights }),
        Operate::History { name, host } => (host, Op::History { name }),
    };
    let token = std::env::var("SWITCHYARD_ADMIN_TOKEN").ok();
    let remote = switchyard::operator::Remote::new(&host.url, token);
    match switchyard::operator::run(&remote, op, host.json).await {
        Ok(shown) => {
            print!("{shown}");
            Ok(())
        }
        Err(failure) => {
            #[allow(clippy::print_stderr)] // the command's own answer
            {
                eprintln!("{failure}");
            }
            std::process::exit(failure.exit_code());
        }
    }
}

/// Serve until told to stop.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _logs = switchyard::logs::init(matches!(args.log_format, LogFormat::Json));
    switchyard::serve(switchyard::Settings {
        services_dir: args.services,
        data_dir: args.data,
        compiled_cache: args.compiled_cache,
        listen: args.listen,
        max_body_bytes: args.max_body_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        pool_instances: args.pool_instances,
        perf_map: args.perf_map,
        connections: switchyard_gateway::server::ConnectionLimits {
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            max_connections: args.max_connections as usize,
        },
        store: args.store,
        node_id: args.node_id.filter(|id| !id.is_empty()),
        otlp_endpoint: args.otlp_endpoint,
    })
    .await
}
