//! The hidden `__workload` command the crash test kills at random moments: puts forever, saying
//! `begin KEY SEED I SIZE` before each and `ack KEY SEED I SIZE` once it is acknowledged.

use crate::commands::{CliError, Data};
use crate::workload_plan::Put;
use cairn_adapters::PutOptions;
use futures_lite::future::block_on;
use std::io::Write;
use std::process::ExitCode;

pub fn run(data: &Data, seed: u64) -> Result<ExitCode, CliError> {
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let put = Put::new(seed, i);
        let line = format!("{} {seed} {i} {}", put.key, put.size);
        let _ = writeln!(out, "begin {line}").and_then(|()| out.flush());
        if block_on(
            data.store()
                .put(&put.key, put.bytes(), &PutOptions::default()),
        )
        .is_ok()
        {
            let _ = writeln!(out, "ack {line}").and_then(|()| out.flush());
        }
    }
    Ok(ExitCode::SUCCESS)
}
