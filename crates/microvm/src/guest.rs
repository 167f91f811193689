//! The guest image: an initramfs (cpio `newc`, uncompressed: the kernel
//! unpacks it faster than gzip under TCG) made of three archives, which the
//! kernel unpacks one after the other into its root tmpfs:
//!
//! ```text
//!  base     /init (the guest agent, INIT_SCRIPT), busybox, /dev/console,
//!           virtio modules + their dependencies and /lib/modules/load-order
//!  program  the function's executable at /fn/bin/NAME (stripped), plus the
//!           shared libraries `ldd` lists, at their host paths
//!  config   /etc/stratus/run: exports the env ($PORT, $HOST=0.0.0.0,
//!           K_SERVICE, …) and execs the command
//! ```
//!
//! Each layer is cached under the cache directory by a key of its inputs
//! (paths, sizes, mtimes, contents), and the composed image per function
//! spec, so a start only builds what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The guest agent: PID 1 of the VM. It loads the virtio drivers, brings
/// up the user-mode network (QEMU's slirp: guest 10.0.2.15, gateway
/// 10.0.2.2), starts the function, and powers the VM off when the function
/// exits so that the host sees the QEMU process end. Lines starting with
/// `stratus-guest:` on the serial console are its protocol with the host
/// ([`NETWORK_UP`] gates the readiness probe; [`PROBE_OK`] answers the
/// accelerator probe).
pub const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
case " $(cat /proc/cmdline) " in *" stratus.probe "*)
  echo "stratus-guest: probe ok"; poweroff -f;;
esac
while read -r m; do
  insmod "/lib/modules/$m.ko" || echo "stratus-guest: insmod $m failed"
done < /lib/modules/load-order
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
echo "stratus-guest: network up at $(cut -d' ' -f1 /proc/uptime)s"
/bin/sh /etc/stratus/run
echo "stratus-guest: function exited with status $?"
poweroff -f
"#;

/// Serial line printed once the guest's network is configured.
pub const NETWORK_UP: &str = "stratus-guest: network up";
/// Serial line printed by the accelerator probe boot.
pub const PROBE_OK: &str = "stratus-guest: probe ok";

/// Drivers the guest loads (with their dependencies from `modules.dep`):
/// virtio over PCI (the q35 machine) and MMIO (microvm), and the NIC.
pub const GUEST_MODULES: &[&str] = &["virtio_pci", "virtio_mmio", "virtio_net"];

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel module '{0}' is not in modules.dep")]
    NoModule(String),
    #[error("kernel module {0} is compressed; busybox insmod needs plain .ko files")]
    CompressedModule(String),
    #[error("no kernel found: need /boot/vmlinuz-VERSION with /lib/modules/VERSION/modules.dep (apt-get install linux-image-cloud-amd64)")]
    NoKernel,
    #[error("program '{0}' not found (absolute path, or on $PATH)")]
    NoProgram(String),
    #[error("environment variable name {0:?} is not a valid shell identifier")]
    BadEnvName(String),
    #[error("cannot build an initramfs path from {0:?}")]
    BadPath(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GuestError + '_ {
    move |source| GuestError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a cpio archive in the `newc` format (the one the Linux initramfs
/// unpacker reads). Parent directories are emitted automatically.
pub struct NewcWriter<W: Write> {
    w: W,
    ino: u32,
    offset: u64,
    dirs: BTreeSet<String>,
}

impl<W: Write> NewcWriter<W> {
    pub fn new(w: W) -> Self {
        NewcWriter {
            w,
            ino: 1,
            offset: 0,
            dirs: BTreeSet::new(),
        }
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - (self.offset % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> std::io::Result<()> {
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime: fixed, so images are reproducible
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.ino += 1;
        let mut hdr = String::with_capacity(110);
        hdr.push_str("070701");
        for f in fields {
            hdr.push_str(&format!("{f:08x}"));
        }
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn parents(&mut self, path: &str) -> std::io::Result<()> {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(p);
            if self.dirs.insert(acc.clone()) {
                let name = acc.clone();
                self.entry(&name, 0o040755, (0, 0), &[])?;
            }
        }
        Ok(())
    }

    /// `path` is relative to the archive root ("bin/busybox").
    pub fn dir(&mut self, path: &str) -> std::io::Result<()> {
        self.parents(path)?;
        if self.dirs.insert(path.to_string()) {
            self.entry(path, 0o040755, (0, 0), &[])?;
        }
        Ok(())
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o100000 | (perm & 0o7777), (0, 0), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o120777, (0, 0), target.as_bytes())
    }

    pub fn char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> std::io::Result<()> {
        self.parents(path)?;
        self.entry(path, 0o020000 | (perm & 0o7777), (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// `modules.dep` as a map from module name (`virtio_net`) to its file and
/// its dependencies' names.
pub fn parse_modules_dep(text: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some((file, deps)) = line.split_once(':') else {
            continue;
        };
        let file = file.trim();
        if file.is_empty() {
            continue;
        }
        let deps = deps.split_whitespace().map(module_name).collect();
        m.insert(module_name(file), (file.to_string(), deps));
    }
    m
}

/// `kernel/drivers/net/virtio_net.ko` → `virtio_net` (`-` and `_` are one).
pub fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// The modules to load, dependencies first, each once.
pub fn load_order(
    deps: &BTreeMap<String, (String, Vec<String>)>,
    wanted: &[&str],
) -> Result<Vec<(String, String)>, GuestError> {
    fn visit(
        deps: &BTreeMap<String, (String, Vec<String>)>,
        name: &str,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<(String, String)>,
        depth: usize,
    ) -> Result<(), GuestError> {
        if seen.contains(name) || depth > 64 {
            return Ok(());
        }
        let (file, ds) = deps
            .get(name)
            .ok_or_else(|| GuestError::NoModule(name.to_string()))?;
        seen.insert(name.to_string());
        for d in ds {
            visit(deps, d, seen, out, depth + 1)?;
        }
        out.push((name.to_string(), file.clone()));
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        visit(deps, &module_name(w), &mut seen, &mut out, 0)?;
    }
    Ok(out)
}

/// A kernel and its modules directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

impl Kernel {
    /// The newest `/boot/vmlinuz-*` with a matching `/lib/modules/*/modules.dep`,
    /// preferring Debian's `cloud` flavour.
    pub fn find() -> Result<Kernel, GuestError> {
        Self::find_in(Path::new("/boot"), Path::new("/lib/modules"))
    }

    pub fn find_in(boot: &Path, modules: &Path) -> Result<Kernel, GuestError> {
        let mut found: Vec<(bool, String)> = std::fs::read_dir(boot)
            .map_err(|_| GuestError::NoKernel)?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rel = name.strip_prefix("vmlinuz-")?.to_string();
                modules
                    .join(&rel)
                    .join("modules.dep")
                    .is_file()
                    .then(|| (rel.contains("cloud"), rel))
            })
            .collect();
        found.sort();
        let (_, rel) = found.pop().ok_or(GuestError::NoKernel)?;
        Ok(Kernel {
            vmlinuz: boot.join(format!("vmlinuz-{rel}")),
            modules: modules.join(rel),
        })
    }
}

/// Stable 64-bit FNV-1a, for cache keys.
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Identity of a file for cache keys: path, size, mtime.
fn file_id(p: &Path) -> Result<String, GuestError> {
    let md = std::fs::metadata(p).map_err(io_err(p))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{}:{}:{}", p.display(), md.len(), mtime))
}

/// Writes `data` to `path` atomically (temp file + rename), so concurrent
/// builders and a crash never leave a half-written image.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), GuestError> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    std::fs::write(&tmp, data).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn cached(
    cache: &Path,
    name: String,
    build: impl FnOnce() -> Result<Vec<u8>, GuestError>,
) -> Result<PathBuf, GuestError> {
    let path = cache.join(name);
    if !path.is_file() {
        let data = build()?;
        write_atomic(&path, &data)?;
    }
    Ok(path)
}

/// Looks `program` up like `execvp` would, in `extra_path` then `$PATH`.
pub fn resolve_program(program: &str, extra_path: &[PathBuf]) -> Result<PathBuf, GuestError> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(GuestError::NoProgram(program.into()))
        };
    }
    let env: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    extra_path
        .iter()
        .chain(env.iter())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| GuestError::NoProgram(program.into()))
}

/// The shared libraries `ldd` lists for `bin` (none for a static binary).
pub fn shared_libraries(bin: &Path) -> Vec<PathBuf> {
    let Ok(out) = std::process::Command::new("ldd").arg(bin).output() else {
        return Vec::new();
    };
    parse_ldd(&String::from_utf8_lossy(&out.stdout))
}

/// Paths from `ldd` output lines such as
/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` and
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            line.split("=>")
                .last()
                .and_then(|r| r.split_whitespace().next())
                .filter(|p| p.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

/// Single-quotes `s` for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn valid_env_name(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// The `/etc/stratus/run` script: env exports then `exec` of the command.
pub fn run_script(argv: &[String], env: &[(String, String)]) -> Result<String, GuestError> {
    let mut s = String::from("# written by the host: the function's environment and command\n");
    for (k, v) in env {
        if !valid_env_name(k) {
            return Err(GuestError::BadEnvName(k.clone()));
        }
        s.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    s.push_str("exec");
    for a in argv {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s.push('\n');
    Ok(s)
}

/// Builds (or finds cached) guest initramfs images.
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    pub kernel: Kernel,
    pub busybox: PathBuf,
    pub cache_dir: PathBuf,
}

impl GuestBuilder {
    pub fn new(kernel: Kernel, busybox: PathBuf, cache_dir: PathBuf) -> Result<Self, GuestError> {
        std::fs::create_dir_all(&cache_dir).map_err(io_err(&cache_dir))?;
        Ok(GuestBuilder {
            kernel,
            busybox,
            cache_dir,
        })
    }

    /// Busybox, the agent and the drivers.
    pub fn base(&self) -> Result<PathBuf, GuestError> {
        let dep_path = self.kernel.modules.join("modules.dep");
        let key = fnv64(&[
            file_id(&self.busybox)?.as_bytes(),
            file_id(&dep_path)?.as_bytes(),
            INIT_SCRIPT.as_bytes(),
        ]);
        cached(&self.cache_dir, format!("base-{key:016x}.cpio"), || {
            let deps = std::fs::read_to_string(&dep_path).map_err(io_err(&dep_path))?;
            let order = load_order(&parse_modules_dep(&deps), GUEST_MODULES)?;
            let mut w = NewcWriter::new(Vec::new());
            let e = |e| io_err(Path::new("initramfs"))(e);
            for d in [
                "bin",
                "dev",
                "proc",
                "sys",
                "tmp",
                "etc/stratus",
                "lib/modules",
                "fn/bin",
            ] {
                w.dir(d).map_err(e)?;
            }
            w.char_dev("dev/console", 0o600, 5, 1).map_err(e)?;
            w.char_dev("dev/null", 0o666, 1, 3).map_err(e)?;
            let bb = std::fs::read(&self.busybox).map_err(io_err(&self.busybox))?;
            w.file("bin/busybox", 0o755, &bb).map_err(e)?;
            w.symlink("bin/sh", "busybox").map_err(e)?;
            w.file("init", 0o755, INIT_SCRIPT.as_bytes()).map_err(e)?;
            let mut names = String::new();
            for (name, file) in &order {
                if !file.ends_with(".ko") {
                    return Err(GuestError::CompressedModule(file.clone()));
                }
                let src = self.kernel.modules.join(file);
                let data = std::fs::read(&src).map_err(io_err(&src))?;
                w.file(&format!("lib/modules/{name}.ko"), 0o644, &data)
                    .map_err(e)?;
                names.push_str(name);
                names.push('\n');
            }
            w.file("lib/modules/load-order", 0o644, names.as_bytes())
                .map_err(e)?;
            w.finish().map_err(e)
        })
    }

    /// The function's executable (stripped when `strip` exists) and its
    /// shared libraries. Returns the archive and the path inside the guest.
    pub fn program(&self, bin: &Path) -> Result<(PathBuf, String), GuestError> {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty() && !n.contains('\n'))
            .ok_or_else(|| GuestError::BadPath(bin.display().to_string()))?;
        let guest_path = format!("fn/bin/{name}");
        let key = fnv64(&[file_id(bin)?.as_bytes()]);
        let archive = cached(&self.cache_dir, format!("prog-{key:016x}.cpio"), || {
            let stripped = self
                .cache_dir
                .join(format!("strip-{key:016x}-{}", std::process::id()));
            let data = match std::process::Command::new("strip")
                .arg("-o")
                .arg(&stripped)
                .arg(bin)
                .status()
            {
                Ok(s) if s.success() => std::fs::read(&stripped).map_err(io_err(&stripped)),
                _ => std::fs::read(bin).map_err(io_err(bin)),
            };
            let _ = std::fs::remove_file(&stripped);
            let data = data?;
            let mut w = NewcWriter::new(Vec::new());
            let e = |e| io_err(Path::new("initramfs"))(e);
            w.file(&guest_path, 0o755, &data).map_err(e)?;
            for lib in shared_libraries(bin) {
                let rel = lib.to_string_lossy().trim_start_matches('/').to_string();
                let data = std::fs::read(&lib).map_err(io_err(&lib))?;
                w.file(&rel, 0o755, &data).map_err(e)?;
            }
            w.finish().map_err(e)
        })?;
        Ok((archive, format!("/{guest_path}")))
    }

    /// The complete image for one function: base + program + config.
    pub fn image(&self, program: &Path, run_script: &str) -> Result<PathBuf, GuestError> {
        let base = self.base()?;
        let (prog, _) = self.program(program)?;
        let key = fnv64(&[
            // File names, not paths: they carry the layers' content keys,
            // and the same image gets the same name in any cache directory.
            base.file_name().unwrap_or_default().as_encoded_bytes(),
            prog.file_name().unwrap_or_default().as_encoded_bytes(),
            run_script.as_bytes(),
        ]);
        cached(&self.cache_dir, format!("initrd-{key:016x}.cpio"), || {
            let mut data = std::fs::read(&base).map_err(io_err(&base))?;
            data.extend(std::fs::read(&prog).map_err(io_err(&prog))?);
            let mut w = NewcWriter::new(Vec::new());
            w.file("etc/stratus/run", 0o644, run_script.as_bytes())
                .map_err(|e| io_err(Path::new("initramfs"))(e))?;
            data.extend(w.finish().map_err(|e| io_err(Path::new("initramfs"))(e))?);
            Ok(data)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_archive_is_read_back_by_cpio() {
        let mut w = NewcWriter::new(Vec::new());
        w.file("etc/stratus/run", 0o644, b"exec true\n").unwrap();
        w.file("bin/x", 0o755, b"abc").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.dir("tmp").unwrap();
        let data = w.finish().unwrap();
        assert_eq!(data.len() % 4, 0);
        assert!(data.starts_with(b"070701"));
        // Parents come first, each once.
        let text = String::from_utf8_lossy(&data);
        let names: Vec<usize> = [
            "etc\0",
            "etc/stratus\0",
            "etc/stratus/run\0",
            "bin\0",
            "TRAILER!!!\0",
        ]
        .iter()
        .map(|n| text.find(n).unwrap_or_else(|| panic!("{n} missing")))
        .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert_eq!(text.matches("etc/stratus\0").count(), 1);
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED cpio round trip: cpio not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-idm", "--quiet"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&data).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("etc/stratus/run")).unwrap(),
            b"exec true\n"
        );
        assert_eq!(std::fs::read(dir.path().join("bin/x")).unwrap(), b"abc");
        assert_eq!(
            std::fs::read_link(dir.path().join("bin/sh")).unwrap(),
            PathBuf::from("busybox")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("bin/x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn module_load_order_puts_dependencies_first() {
        let dep = "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/drivers/virtio/virtio_ring.ko:\n\
                   kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
                   kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
                   kernel/net/core/failover.ko:\n\
                   garbage line without colon\n\
                   : orphan\n";
        let m = parse_modules_dep(dep);
        let order: Vec<String> = load_order(&m, &["virtio-net", "virtio"])
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            order,
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_net"
            ]
        );
        assert_eq!(
            load_order(&m, &["virtio_blk"]).unwrap_err().to_string(),
            "kernel module 'virtio_blk' is not in modules.dep"
        );
    }

    #[test]
    fn run_script_quotes_everything() {
        let s = run_script(
            &["/fn/bin/stratus".into(), "fn".into(), "it's $(x)".into()],
            &[("GREETING".into(), "a'b; rm -rf /".into())],
        )
        .unwrap();
        assert!(s.contains("export GREETING='a'\\''b; rm -rf /'\n"), "{s}");
        assert!(
            s.ends_with("exec '/fn/bin/stratus' 'fn' 'it'\\''s $(x)'\n"),
            "{s}"
        );
        assert!(run_script(&[], &[("A=B".into(), "x".into())]).is_err());
        assert!(run_script(&[], &[("1A".into(), "x".into())]).is_err());
        assert!(run_script(&[], &[(String::new(), "x".into())]).is_err());
        // The script really runs under sh with those values.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(
                run_script(
                    &[
                        "printf".into(),
                        "%s|%s".into(),
                        "$GREETING".into(),
                        "it's".into(),
                    ],
                    &[("GREETING".into(), "a'b".into())],
                )
                .unwrap()
                .replace("exec", "exec env"),
            )
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "$GREETING|it's");
    }

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n\tnot a dynamic executable\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn kernel_lookup_prefers_cloud_with_modules() {
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("boot");
        let mods = d.path().join("modules");
        std::fs::create_dir_all(&boot).unwrap();
        for rel in [
            "6.1.0-9-amd64",
            "6.1.0-5-cloud-amd64",
            "6.1.0-7-cloud-amd64",
        ] {
            std::fs::write(boot.join(format!("vmlinuz-{rel}")), b"k").unwrap();
        }
        assert!(Kernel::find_in(&boot, &mods).is_err());
        for rel in ["6.1.0-9-amd64", "6.1.0-5-cloud-amd64"] {
            std::fs::create_dir_all(mods.join(rel)).unwrap();
            std::fs::write(mods.join(rel).join("modules.dep"), b"").unwrap();
        }
        let k = Kernel::find_in(&boot, &mods).unwrap();
        assert_eq!(k.vmlinuz, boot.join("vmlinuz-6.1.0-5-cloud-amd64"));
        assert_eq!(k.modules, mods.join("6.1.0-5-cloud-amd64"));
    }
}
