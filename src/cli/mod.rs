//! The `paydvm` command line: argument parsing, dispatch and exit codes.

mod audit;
mod backup;
pub mod check_config;
mod copy;
mod copy_ecash;
mod ecash_into_database;
mod export;
mod fatal_signal;
mod init;
mod ledger_file;
mod operator;
pub mod output;
mod reconcile;
mod run;
pub mod status;
pub(crate) mod timeline;
mod verify;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use paydvm_ledger::WriteOffTo;

use crate::config::LedgerPlace;
use crate::operator::OperatorAction;

pub use timeline::{format_ms, render_trail};
pub use verify::summary as verify_summary;

/// Everything went fine.
pub const EXIT_OK: u8 = 0;
/// An error other than a failed verification (missing file, unknown reference, I/O).
pub const EXIT_ERROR: u8 = 1;
/// `ledger verify` found the ledger file inconsistent.
pub const EXIT_VERIFY_FAILED: u8 = 2;
/// `reconcile` found an asset whose ledger balance and backend figure disagree (or a backend it
/// could not ask). Shares 1 with [`EXIT_ERROR`]: either way something needs a look.
pub const EXIT_RECONCILE_MISMATCH: u8 = 1;
/// Bad command-line usage (sysexits EX_USAGE); kept apart from 2 so scripts can trust it.
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "paydvm",
    version,
    about = "NIP-90 Data Vending Machine node with an event-sourced payments ledger",
    after_help = "Exit codes: 0 ok, 1 error or reconcile mismatch, 2 ledger verification failed, \
                  64 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a starter node: paydvm.toml, policy.toml and a new key.
    ///
    /// Writes a commented paydvm.toml, a starter policy.toml and a new node key (paydvm.key,
    /// mode 0600). Never overwrites an existing file; prints only the public key.
    Init {
        /// Where to write the files; created if missing.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run the node offline against an embedded relay with a scripted customer, then print each
    /// job's audit trail. Everything stays on 127.0.0.1 in a temporary directory.
    Demo,
    /// Run the node from a config file until SIGINT, SIGTERM or SIGHUP, then shut down cleanly.
    ///
    /// Logs go to stderr; set PAYDVM_LOG (e.g. `debug`, `paydvm=debug`) to change the level.
    ///
    /// Makes the checks of `paydvm check-config` first; with `[node] config_problems = "error"`
    /// (the default) a problem stops the start.
    Run {
        /// The node's paydvm.toml.
        #[arg(long, default_value = "paydvm.toml")]
        config: PathBuf,
        /// Log format: `text` (default) or `json` (one JSON object per line). Also
        /// PAYDVM_LOG_FORMAT; the flag wins.
        #[arg(long, value_enum)]
        log_format: Option<run::LogFormat>,
        /// Start a new, empty ledger although the node directory shows that one existed (its
        /// marker, `-wal`/`-shm` or lock file is there but the ledger file is not). Without it
        /// `run` refuses: a new ledger would forget every job and payment, and re-run work.
        #[arg(long)]
        new_ledger: bool,
        /// Wait while another node holds the ledger (its lock file, or a database's advisory
        /// lock) and take over when it stops or dies, instead of refusing to start. A node that
        /// takes ecash must share its node directory (`state_dir` for a database) with the node
        /// it stands in for: the Cashu wallet is there.
        #[arg(long)]
        standby: bool,
    },
    /// Check that the node can take money as configured: every priced offer payable by some
    /// rail, every price invoiceable, the Lightning backend and trusted mints answering.
    ///
    /// Exit 1 when a problem would stop `paydvm run` (`[node] config_problems = "error"`, the
    /// default), 0 when there is none or they are only warnings (`"warn"`).
    CheckConfig {
        /// The node's paydvm.toml.
        #[arg(long, default_value = "paydvm.toml")]
        config: PathBuf,
    },
    /// Show one job's or payment's trail from a node's ledger (the one its config names).
    ///
    /// Reads the live ledger read-only; safe while the node runs.
    Audit {
        /// A job id, request event id, payment hash or other payment reference, bolt11, refund
        /// id, refund lookup or result event id.
        reference: String,
        /// The node's paydvm.toml.
        #[arg(long, default_value = "paydvm.toml")]
        config: PathBuf,
        /// Print the trail as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Count a node's jobs by state and show its balances (the ledger its config names).
    Status {
        /// The node's paydvm.toml.
        #[arg(long, default_value = "paydvm.toml")]
        config: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// List every account, not only the system accounts and per-kind totals.
        #[arg(long)]
        all_accounts: bool,
    },
    /// Compare the ledger's asset accounts with what the Lightning wallet and the cdk wallet hold.
    ///
    /// Read-only: asks the Lightning backend for its balance and looks up unpaid invoices,
    /// reads the cdk wallet store; books nothing. Exit 0 when every asset matches (or differs
    /// only by money in flight, or cannot be checked: the fake backend), 1 otherwise.
    Reconcile {
        /// The node's paydvm.toml.
        #[arg(long, default_value = "paydvm.toml")]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Refunds that wait, and the operator's way out for each (recorded in the ledger with the
    /// operator as the cause). Reaches a running node through its control socket, or writes a
    /// stopped node's ledger directly.
    #[command(subcommand)]
    Refund(RefundCommand),
    /// The operator's own money in a wallet, booked as float (`equity:float`).
    #[command(subcommand)]
    Float(FloatCommand),
    /// The node's Cashu wallet and pending swaps.
    #[command(subcommand)]
    Ecash(EcashCommand),
    /// A customer's prepaid credit, granted or adjusted by hand against the operator's float
    /// (`equity:float`), recorded in the ledger with the operator as the cause. Like `refund`:
    /// through a running node's control socket, or on a stopped node's ledger.
    #[command(subcommand)]
    Credit(CreditCommand),
    /// Inspect a ledger (a file or a postgres:// URL), copy it, or create a sample one.
    #[command(subcommand)]
    Ledger(LedgerCommand),
}

/// Where a node is and why the operator acts (every action needs a note; it is kept).
#[derive(Debug, clap::Args)]
struct OperatorArgs {
    /// The node's paydvm.toml.
    #[arg(long, default_value = "paydvm.toml")]
    config: PathBuf,
    /// Why: kept in the ledger with the operator as the cause.
    #[arg(long, visible_alias = "reason")]
    note: String,
}

#[derive(Debug, Subcommand)]
enum RefundCommand {
    /// Every refund not yet paid or written off: why it waits and what can be done.
    List {
        /// The node's paydvm.toml.
        #[arg(long, default_value = "paydvm.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Route a waiting refund again now, with a fresh budget of attempts.
    Retry {
        refund: String,
        #[command(flatten)]
        args: OperatorArgs,
    },
    /// Pay a waiting refund from another asset: `lightning` or `mint:<URL>`.
    Reroute {
        refund: String,
        asset: String,
        #[command(flatten)]
        args: OperatorArgs,
    },
    /// Stop paying a waiting refund: back to the customer's credit, or kept as income.
    WriteOff {
        refund: String,
        #[arg(long, value_parser = ["credit", "income"])]
        to: String,
        #[command(flatten)]
        args: OperatorArgs,
    },
    /// After checking the wallet: a payment whose outcome is unknown was paid, or failed.
    Resolve {
        refund: String,
        #[arg(value_parser = ["paid", "failed"])]
        outcome: String,
        /// The routing or mint fee the payment cost (paid only).
        #[arg(long, default_value_t = 0)]
        fee_msat: u64,
        #[command(flatten)]
        args: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
enum FloatCommand {
    /// Book money the operator put into a wallet: `lightning` or `mint:<URL>`, in msat.
    Add {
        asset: String,
        msat: u64,
        #[command(flatten)]
        args: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
enum EcashCommand {
    /// Move a PostgreSQL node's wallet and pending swaps from files in its state_dir (written
    /// before the wallet moved into the database) into the ledger's database, so a standby on
    /// another machine takes them over too. Stop the node first; the files are renamed with a
    /// `.moved-to-database` suffix, not deleted.
    IntoDatabase {
        /// The node's paydvm.toml.
        #[arg(long, default_value = "paydvm.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CreditCommand {
    /// Give a customer (npub or hex public key) prepaid credit, in msat.
    Grant {
        customer: String,
        msat: u64,
        #[command(flatten)]
        args: OperatorArgs,
    },
    /// Move a customer's prepaid credit by msat: positive adds, negative takes back (never
    /// more than the customer holds).
    Adjust {
        customer: String,
        #[arg(allow_negative_numbers = true)]
        msat: i64,
        #[command(flatten)]
        args: OperatorArgs,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Recheck a ledger from scratch: hash chain, replay, postings, projections, invariants.
    Verify {
        /// A ledger file or postgres:// URL.
        ledger: String,
        /// Print the report or the failure as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show everything the ledger knows about one job or payment.
    Audit {
        /// A ledger file or postgres:// URL.
        ledger: String,
        /// A job id, request event id, payment hash or other payment reference, bolt11, refund
        /// id, refund lookup or result event id.
        reference: String,
        /// Print the trail as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the whole log to stdout as JSON lines, one event per line.
    Export {
        /// A ledger file or postgres:// URL.
        ledger: String,
    },
    /// Write a consistent copy of a ledger (a file, or a postgres:// database: its events up to
    /// the head when the backup started) into a new SQLite file, safe while the node runs, then
    /// verify the copy. Exit 2 if the copy does not verify; never overwrites an existing file.
    Backup {
        /// A ledger file or postgres:// URL.
        ledger: String,
        /// The copy to create (an SQLite file).
        copy: PathBuf,
    },
    /// Copy a ledger to a new place: an SQLite file or a postgres:// URL, either way (the
    /// password outside the URL: `?password_file=` or `?password_env=`). The destination must be
    /// a new file or an empty database; both ends are verified. The ecash goes with it: the
    /// Cashu wallet and pending swaps beside a ledger file, or in the ledger's database (the
    /// destination must hold none). Exit 2 if either ledger does not verify or they differ.
    Copy {
        /// The ledger file or postgres:// URL to read (stop the node writing it first).
        from: String,
        /// The new ledger file or empty postgres:// database to write.
        to: String,
    },
    /// Count jobs by state and show account balances.
    Status {
        /// A ledger file or postgres:// URL.
        ledger: String,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// List every account, not only the system accounts and per-kind totals.
        #[arg(long)]
        all_accounts: bool,
    },
    /// Create a new ledger file filled with realistic sample jobs, and show commands to explore
    /// it. Never overwrites an existing file.
    Sample {
        file: PathBuf,
        /// How many jobs to write; the first ones cover every job type.
        #[arg(
            long,
            default_value_t = SAMPLE_DEFAULT_JOBS,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(SAMPLE_MAX_JOBS)),
        )]
        jobs: u32,
    },
}

/// `ledger sample` writes this many jobs unless `--jobs` says otherwise.
pub const SAMPLE_DEFAULT_JOBS: u32 = 12;
/// The most jobs `ledger sample --jobs` accepts.
pub const SAMPLE_MAX_JOBS: u32 = 100_000;

/// The commands this library declares but does not implement: they run test scaffolding (an
/// in-process Cashu mint, an LNURL-pay zapper, the sample job mix) from `paydvm-testkit`, which
/// depends on this library and so cannot be a dependency of it. The `paydvm` binary (`app/`)
/// supplies them.
pub trait Scaffolded {
    /// `paydvm demo`.
    fn demo(&self) -> anyhow::Result<u8>;
    /// `paydvm ledger sample <file> --jobs <jobs>` (`jobs` within 1..=[`SAMPLE_MAX_JOBS`]).
    fn ledger_sample(&self, file: &Path, jobs: u32) -> anyhow::Result<u8>;
}

/// Parse `args` (program name first), run the command and map the outcome to an exit code.
pub fn run<I, T>(args: I, scaffolded: &dyn Scaffolded) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            // Printing help/usage can only fail if the terminal is gone; nothing left to tell.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dispatch(cli.command, scaffolded) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn dispatch(command: Command, scaffolded: &dyn Scaffolded) -> anyhow::Result<u8> {
    match command {
        Command::Init { dir } => init::run(&dir),
        Command::Demo => scaffolded.demo(),
        Command::Run {
            config,
            log_format,
            new_ledger,
            standby,
        } => run::run(
            &config,
            log_format,
            run::RunFlags {
                new_ledger,
                standby,
            },
        ),
        Command::CheckConfig { config } => check_config::run(&config),
        Command::Audit {
            reference,
            config,
            json,
        } => audit::run(&node_config(&config)?.ledger, &reference, json),
        Command::Status {
            config,
            json,
            all_accounts,
        } => {
            let node = node_config(&config)?;
            status::run(&node.ledger, Some(&node.local_base()), json, all_accounts)
        }
        Command::Reconcile { config, json } => reconcile::run(&config, json),
        Command::Refund(command) => refund_command(command),
        Command::Float(FloatCommand::Add { asset, msat, args }) => operator::run(
            &node_config(&args.config)?,
            OperatorAction::FloatAdd { asset, msat },
            &args.note,
        ),
        Command::Credit(command) => credit_command(command),
        Command::Ecash(EcashCommand::IntoDatabase { config }) => ecash_into_database::run(&config),
        Command::Ledger(LedgerCommand::Verify { ledger, json }) => {
            verify::run(&LedgerPlace::from_arg(&ledger)?, json)
        }
        Command::Ledger(LedgerCommand::Audit {
            ledger,
            reference,
            json,
        }) => audit::run(&LedgerPlace::from_arg(&ledger)?, &reference, json),
        Command::Ledger(LedgerCommand::Export { ledger }) => {
            export::run(&LedgerPlace::from_arg(&ledger)?)
        }
        Command::Ledger(LedgerCommand::Backup { ledger, copy }) => backup::run(&ledger, &copy),
        Command::Ledger(LedgerCommand::Copy { from, to }) => copy::run(&from, &to),
        Command::Ledger(LedgerCommand::Status {
            ledger,
            json,
            all_accounts,
        }) => {
            let place = LedgerPlace::from_arg(&ledger)?;
            status::run(&place, place.file(), json, all_accounts)
        }
        Command::Ledger(LedgerCommand::Sample { file, jobs }) => {
            scaffolded.ledger_sample(&file, jobs)
        }
    }
}

fn refund_command(command: RefundCommand) -> anyhow::Result<u8> {
    let (args, action) = match command {
        RefundCommand::List { config, json } => {
            return operator::list(&node_config(&config)?.ledger, json)
        }
        RefundCommand::Retry { refund, args } => (args, OperatorAction::RefundRetry { refund }),
        RefundCommand::Reroute {
            refund,
            asset,
            args,
        } => (args, OperatorAction::RefundReroute { refund, asset }),
        RefundCommand::WriteOff { refund, to, args } => {
            let to = if to == "credit" {
                WriteOffTo::Credit
            } else {
                WriteOffTo::Income
            };
            (args, OperatorAction::RefundWriteOff { refund, to })
        }
        RefundCommand::Resolve {
            refund,
            outcome,
            fee_msat,
            args,
        } => {
            let paid = outcome == "paid";
            (
                args,
                OperatorAction::RefundResolve {
                    refund,
                    paid,
                    fee_msat,
                },
            )
        }
    };
    operator::run(&node_config(&args.config)?, action, &args.note)
}

fn credit_command(command: CreditCommand) -> anyhow::Result<u8> {
    let (args, action) = match command {
        CreditCommand::Grant {
            customer,
            msat,
            args,
        } => (args, OperatorAction::CreditGrant { customer, msat }),
        CreditCommand::Adjust {
            customer,
            msat,
            args,
        } => (args, OperatorAction::CreditAdjust { customer, msat }),
    };
    operator::run(&node_config(&args.config)?, action, &args.note)
}

/// The `[node]` table of a node's config (its ledger, where its local files are).
fn node_config(config: &Path) -> anyhow::Result<crate::config::Node> {
    Ok(crate::config::Config::load(config)?.node)
}
