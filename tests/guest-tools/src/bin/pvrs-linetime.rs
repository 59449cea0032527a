//! Runs a command (a VMM) and times how long after its start the first
//! output line containing a marker arrives, e.g. the guest init's first
//! line: boot-to-init as the host of that VMM sees it. Used in the nested
//! L1 by the `vmm` benchmark (`tests/bench`), where busybox `date` has no
//! sub-second resolution.
//!
//! `pvrs-linetime --tag TAG --mark TEXT [--timeout S] -- COMMAND ARGS...`
//!
//! The command's stdout is forwarded line by line; its stdin and stderr
//! are inherited. Prints, on CLOCK_MONOTONIC from just before the spawn:
//!
//! ```text
//! PVRS-LINETIME: begin TAG
//! PVRS-LINETIME: mark TAG ms=...          (the first line with TEXT)
//! PVRS-LINETIME: end TAG exit=N ms=...    (the command ended; N = its status,
//!                                          or 128+signal, or "timeout")
//! ```
//!
//! Exits with the command's status (1 if it was killed or timed out).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mut tag = String::new();
    let mut mark = String::new();
    let mut timeout: Option<f64> = None;
    let mut args = std::env::args().skip(1);
    let mut command = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => {
                command.extend(args.by_ref());
                break;
            }
            "--tag" => tag = args.next().expect("--tag needs a value"),
            "--mark" => mark = args.next().expect("--mark needs a value"),
            "--timeout" => {
                timeout = Some(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--timeout needs seconds"),
                )
            }
            other => panic!("unknown option {other}"),
        }
    }
    if command.is_empty() || mark.is_empty() {
        eprintln!("usage: pvrs-linetime --tag TAG --mark TEXT [--timeout S] -- COMMAND ARGS...");
        std::process::exit(2);
    }

    let out = std::io::stdout();
    println!("PVRS-LINETIME: begin {tag}");
    let _ = out.lock().flush();
    let start = Instant::now();
    let mut child = match Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            println!("PVRS-LINETIME: end {tag} exit=spawn-failed ms=0");
            eprintln!("pvrs-linetime: {}: {e}", command[0]);
            std::process::exit(1);
        }
    };

    // A watchdog, so that one hung guest does not stall a whole benchmark.
    let timed_out = Arc::new(AtomicBool::new(false));
    if let Some(secs) = timeout {
        let pid = child.id() as libc::pid_t;
        let flag = timed_out.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            flag.store(true, Ordering::SeqCst);
            // SAFETY: kill(2) on the child's pid. If the child was already
            // reaped the pid may be reused, but the process exits right
            // after reaping it, long before this sleep ends in practice.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
    }

    let mut marked = false;
    let reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        let now = start.elapsed();
        let mut lock = out.lock();
        let _ = lock.write_all(&line);
        let _ = lock.write_all(b"\n");
        if !marked && String::from_utf8_lossy(&line).contains(&mark) {
            marked = true;
            let _ = writeln!(
                lock,
                "PVRS-LINETIME: mark {tag} ms={:.1}",
                now.as_secs_f64() * 1000.0
            );
        }
        let _ = lock.flush();
    }
    let status = child.wait().expect("waiting for the command");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let (word, code) = if timed_out.load(Ordering::SeqCst) {
        ("timeout".to_string(), 1)
    } else if let Some(c) = status.code() {
        (c.to_string(), c)
    } else {
        let sig = status.signal().unwrap_or(0);
        ((128 + sig).to_string(), 1)
    };
    println!("PVRS-LINETIME: end {tag} exit={word} ms={ms:.1}");
    std::process::exit(code);
}
