//! Builds the guest image for a program and prints the QEMU command line
//! that boots it (used by `scripts/build-microvm-guest.sh`).
//!
//! `guest_image OUT_DIR PROGRAM [ARGS...]`

use std::path::PathBuf;

use stratus_microvm::guest::{self, GuestBuilder, Kernel};
use stratus_microvm::{qemu_args, Accel, QemuArgs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, program, rest @ ..] = args.as_slice() else {
        return Err("usage: guest_image OUT_DIR PROGRAM [ARGS...]".into());
    };
    let out = std::path::absolute(PathBuf::from(out))?;
    let kernel = Kernel::find()?;
    let builder = GuestBuilder::new(kernel.clone(), PathBuf::from("/bin/busybox"), out.clone())?;
    let bin = std::path::absolute(guest::resolve_program(program, &[])?)?;
    let (_, guest_bin) = builder.program(&bin)?;
    let mut argv = vec![guest_bin];
    argv.extend(rest.iter().cloned());
    let env = [
        ("PATH".to_string(), "/fn/bin:/bin".to_string()),
        ("HOST".to_string(), "0.0.0.0".to_string()),
        ("PORT".to_string(), "8080".to_string()),
    ];
    let initrd = builder.image(&bin, &guest::run_script(&argv, &env)?)?;
    let a = qemu_args(&QemuArgs {
        accel: Accel::Tcg,
        memory_mib: 256,
        mem_path: &out.join("memory"),
        share: true,
        kernel: &kernel.vmlinuz,
        initrd: &initrd,
        host_port: 8081,
        guest_port: 8080,
        qmp: &out.join("qmp.sock"),
        incoming: false,
    });
    println!("image: {}", initrd.display());
    println!("kernel: {}", kernel.vmlinuz.display());
    let quoted: Vec<String> = a.iter().map(|s| guest::shell_quote(s)).collect();
    println!(
        "boot (function on http://127.0.0.1:8081/):\n  qemu-system-x86_64 {}",
        quoted.join(" ")
    );
    Ok(())
}
