//! The hidden `__workload` command the crash test kills at random moments: puts forever, saying
//! `begin KEY SEED I SIZE` before each and `ack KEY SEED I SIZE` once it is acknowledged. A put
//! that fails says `fail KEY SEED I SIZE: ERROR` instead: nothing injects faults here, so the
//! test counts any failure as a defect rather than let a workload whose puts all fail pass.

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
        // Made before the put begins, so that a kill said to land mid-put lands in the store.
        let bytes = put.bytes();
        let _ = writeln!(out, "begin {line}").and_then(|()| out.flush());
        let said = match block_on(data.store().put(&put.key, bytes, &PutOptions::default())) {
            Ok(_) => writeln!(out, "ack {line}"),
            // One line, whatever the error says.
            Err(e) => writeln!(out, "fail {line}: {}", e.to_string().replace('\n', " ")),
        };
        let _ = said.and_then(|()| out.flush());
    }
    Ok(ExitCode::SUCCESS)
}
