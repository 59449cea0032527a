//! The `pvrs-vmm` command; see [`pvrs_vmm::config::USAGE`].

use std::io::Write;
use std::process::exit;

use pvrs_vmm::config::{self, Command, USAGE};
use pvrs_vmm::exit::{EXIT_USAGE, EXIT_VMM_ERROR};
use pvrs_vmm::{logger, vmm};

fn main() {
    logger::init();
    // A panic on any thread ends the VMM with a clear status instead of
    // leaving the other threads running.
    std::panic::set_hook(Box::new(|info| {
        let _ = std::io::stdout().flush();
        eprintln!("pvrs-vmm: internal error: {info}");
        exit(EXIT_VMM_ERROR);
    }));

    let cfg = match config::parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            print!("{USAGE}");
            exit(0);
        }
        Ok(Command::Version) => {
            println!("pvrs-vmm {}", env!("CARGO_PKG_VERSION"));
            exit(0);
        }
        Ok(Command::Control { socket, command }) => match vmm::control_client(&socket, &command) {
            Ok(reply) => {
                print!("{reply}");
                exit(if reply.starts_with("error") { 1 } else { 0 });
            }
            Err(e) => {
                eprintln!("pvrs-vmm: control {}: {e}", socket.display());
                exit(EXIT_VMM_ERROR);
            }
        },
        Err(e) => {
            eprintln!("pvrs-vmm: {e}\n\n{USAGE}");
            exit(EXIT_USAGE);
        }
    };

    if let Some(level) = cfg.log_level {
        log::set_max_level(level);
    }
    pvrs_vmm::virtio::queue::set_hostile_used_len(cfg.hostile_used_len);
    let vm = match vmm::Vm::build(&cfg) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("pvrs-vmm: cannot start the VM: {e}");
            exit(EXIT_VMM_ERROR);
        }
    };
    match vm.run() {
        Ok(reason) => {
            let _ = std::io::stdout().flush();
            eprint!("pvrs-vmm: {reason}\r\n");
            exit(reason.status());
        }
        Err(e) => {
            eprintln!("pvrs-vmm: {e}");
            exit(EXIT_VMM_ERROR);
        }
    }
}
