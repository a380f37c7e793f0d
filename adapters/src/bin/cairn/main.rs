//! `cairn`: store and fetch objects in a local data directory (SQLite for small objects and the
//! change log, a blob directory for large ones), check it, and tour it.
//!
//! ```text
//! cairn [--data DIR] [--json] put KEY [FILE|-] [--ttl DURATION] [--content-type TYPE] [--meta NAME=VALUE]…
//! cairn get KEY [-o FILE] [--range START-END]
//! cairn head KEY | rm KEY | ls [PREFIX] | recover | fsck [--repair] | demo [--keep]
//! ```
//!
//! The data directory is `--data`, else `$CAIRN_DATA`, else `./cairn-data`.

mod commands;
mod demo;
mod interrupt;
mod output;
mod parse;
mod workload;
mod workload_plan;

use clap::{Parser, Subcommand};
use commands::CliError;
use std::path::PathBuf;
use std::process::ExitCode;

/// Store and fetch objects through cairn's tiered store on this machine.
#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version,
    about = "Store and fetch objects in a local data directory: small ones inline in SQLite, \
             large ones in a blob directory, crash-safe",
    long_about = None
)]
pub struct Cli {
    /// The data directory [default: $CAIRN_DATA, else ./cairn-data; for the demo a fresh
    /// temporary one].
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Print results as JSON (one document per command) for scripts; every command but the
    /// demo.
    #[arg(long, global = true)]
    pub json: bool,
    /// Change-log lease in milliseconds: how long after this process dies another may reclaim
    /// its unfinished writes.
    #[arg(
        long,
        global = true,
        value_name = "MS",
        default_value_t = 30_000,
        hide = true
    )]
    pub lease_ms: u64,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Store an object from FILE, or from standard input when FILE is `-` or absent.
    Put {
        /// The key (1 to 1024 bytes, no NUL).
        key: String,
        /// The file to store; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Expire the object after this long (e.g. `90s`, `15m`, `2h`, `7d`).
        #[arg(long, value_parser = parse::duration)]
        ttl: Option<std::time::Duration>,
        /// The content type to record.
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
        /// A user metadata pair, `NAME=VALUE`; repeatable.
        #[arg(long = "meta", value_name = "NAME=VALUE", value_parser = parse::pair)]
        meta: Vec<(String, String)>,
    },
    /// Write an object (or a byte range of it) to standard output or a file.
    Get {
        /// The key.
        key: String,
        /// Write to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Bytes START-END (inclusive), START- (to the end) or -N (the last N; write it as
        /// `--range=-N` so it is not taken for an option).
        #[arg(long, value_parser = parse::range)]
        range: Option<cairn_core::ByteRange>,
    },
    /// Show an object's metadata without reading its bytes.
    Head {
        /// The key.
        key: String,
    },
    /// Delete an object (deleting a missing key succeeds).
    Rm {
        /// The key.
        key: String,
    },
    /// List keys, optionally only those starting with PREFIX.
    Ls {
        /// Only keys starting with this.
        prefix: Option<String>,
    },
    /// Clean up after writes that a crash or a failure left unfinished.
    Recover,
    /// Check for dangling tombstones, orphan blobs and stale change-log entries.
    Fsck {
        /// Recover stale entries and delete orphan blobs.
        #[arg(long)]
        repair: bool,
    },
    /// A guided tour on a fresh data directory: small and large puts, overwrite, range read,
    /// delete, a simulated crash and recovery, each step explained. It runs in a new temporary
    /// directory (never in $CAIRN_DATA or ./cairn-data), or in `--data DIR` if given, which must
    /// be new or empty and is kept.
    Demo {
        /// Keep the demo's temporary data directory instead of removing it.
        #[arg(long)]
        keep: bool,
    },
    /// (For the demo and crash tests.) Put SIZE bytes under KEY and abort the process after the
    /// blob is written, before the commit.
    #[command(name = "__crash-put", hide = true)]
    CrashPut {
        /// The key.
        key: String,
        /// Bytes to write.
        size: u64,
    },
    /// (For the crash test.) Write objects forever, announcing each put on standard output
    /// before it starts (`begin KEY SEED I SIZE`) and after it is acknowledged (`ack …`).
    #[command(name = "__workload", hide = true)]
    Workload {
        /// Seeds the sequence of keys, sizes and contents.
        seed: u64,
    },
}

fn main() -> ExitCode {
    interrupt::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = cli.json;
    let done = commands::run(cli);
    interrupt::settle();
    match done {
        Ok(code) => code,
        Err(e) => report(&e, json),
    }
}

/// Says why a command failed: a JSON document on standard output under `--json`, a line on
/// standard error otherwise. Returns the exit code.
fn report(e: &CliError, json: bool) -> ExitCode {
    use std::io::Write;
    // Best effort: with standard output or error gone there is nowhere left to say it.
    match e {
        // The reader of standard output stopped reading: nothing to say.
        CliError::Closed => {}
        // The command's own document says so already.
        CliError::Problems(_) if json => {}
        _ if json => {
            let mut doc = serde_json::json!({ "error": e.to_string(), "kind": e.kind() });
            if let CliError::NotFound(key) = e {
                doc["key"] = key.as_str().into();
            }
            if writeln!(std::io::stdout(), "{doc}").is_err() {
                // Standard output is what failed: say it where it can still be read.
                let _ = writeln!(std::io::stderr(), "{doc}");
            }
        }
        _ => {
            let _ = writeln!(std::io::stderr(), "cairn: {e}");
        }
    }
    e.exit_code()
}

/// A command line clap refused. Help and version requests, and every refusal without `--json`,
/// print as clap prints them; with `--json` on the command line a script gets the same JSON
/// document as for any other bad input, and the same exit code (2).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    use std::io::Write;
    // An option only before `--`: after it, `--json` is a key or a file name.
    let json = std::env::args_os()
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    let request = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if e.kind() == ErrorKind::MissingSubcommand {
        // clap's own message would list the hidden internal commands too.
        let cli = <Cli as clap::CommandFactory>::command();
        let names: Vec<&str> = cli
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name())
            .collect();
        let reason = format!("a command is required: one of {}", names.join(", "));
        if !json {
            let _ = writeln!(
                std::io::stderr(),
                "error: {reason}\n\nFor more information, try '--help'."
            );
            return ExitCode::from(2);
        }
        return report(&CliError::Input(reason), true);
    }
    if !json || request {
        e.exit();
    }
    // clap's first paragraph is the reason ("error: ..." and, for a missing argument, the
    // argument on the lines after it); the rest is usage help for people.
    let text = e.to_string();
    let reason: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let reason = reason.join(" ");
    let reason = reason.strip_prefix("error: ").unwrap_or(&reason);
    report(&CliError::Input(reason.to_string()), true)
}
