//! Loopback ports for children that serve on the host's network: the
//! process backend's `$PORT` and QEMU's `hostfwd`.
//!
//! A port is picked with `bind(0)` and closed ([`free_port`]), then handed
//! to the child, which binds it itself. Nothing reserves the port across
//! that gap: an outgoing connection, another process picking at the same
//! moment, or a child spawned concurrently that inherited the probe socket
//! (until its exec) can hold it when the child binds. Picking ports below
//! the ephemeral range does not close the gap either (tried twice, and
//! failed in CI both times). So the backends *retry*: a child that could
//! not bind its port is started again on a new one, at most
//! [`PORT_ATTEMPTS`] times, with a warning per retry.
//!
//! How a backend tells "port taken" from a child that failed on its own:
//! - QEMU says "Could not set up host forwarding rule" and exits.
//! - A process child either exits (its bind failed: it says
//!   [`says_address_in_use`], or [`held_by_others`] finds the port held by
//!   a socket outside the child's process group), or keeps running while
//!   *another* process's listener answers the readiness probe.
//!   [`listener_owner`] tells whose listener answered: the listening
//!   socket's inode (from `/proc/net/tcp` and `tcp6`) must be an open file
//!   of a process in the child's process group.
//!
//! The probe socket of [`free_port`] is opened with `SOCK_CLOEXEC` (the
//! standard library always does; tested below), so a child spawned by
//! another thread at that moment holds it at most until its own exec.
//!
//! The pickers sit behind [`PortPicker`], so that tests can hand out a
//! port they hold ([`PresetPorts`]).

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many times a backend starts a child on a fresh port before it
/// gives up.
pub const PORT_ATTEMPTS: u32 = 4;

/// Hands out loopback ports for new instances.
pub trait PortPicker: Send + Sync + 'static {
    fn pick(&self) -> std::io::Result<u16>;
}

/// The default picker: [`free_port`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FreePorts;

impl PortPicker for FreePorts {
    fn pick(&self) -> std::io::Result<u16> {
        free_port()
    }
}

/// Hands out the given ports first, then free ones; counts its picks.
/// For tests that take a port on purpose.
#[derive(Debug, Default)]
pub struct PresetPorts {
    preset: parking_lot::Mutex<VecDeque<u16>>,
    picks: AtomicUsize,
}

impl PresetPorts {
    pub fn new(ports: impl IntoIterator<Item = u16>) -> PresetPorts {
        PresetPorts {
            preset: parking_lot::Mutex::new(ports.into_iter().collect()),
            picks: AtomicUsize::new(0),
        }
    }

    /// How many ports were handed out so far.
    pub fn picks(&self) -> usize {
        self.picks.load(Ordering::SeqCst)
    }
}

impl PortPicker for PresetPorts {
    fn pick(&self) -> std::io::Result<u16> {
        self.picks.fetch_add(1, Ordering::SeqCst);
        match self.preset.lock().pop_front() {
            Some(p) => Ok(p),
            None => free_port(),
        }
    }
}

/// A loopback port nobody listens on right now (see the module docs for
/// why the child may still find it taken).
pub fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

/// Whether a line a child printed reports `EADDRINUSE` (libc's, Python's,
/// Go's, Node's and Rust's wordings).
pub fn says_address_in_use(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("eaddrinuse")
}

/// One TCP socket of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    pub addr: IpAddr,
    pub port: u16,
    pub listening: bool,
    /// 0 for sockets no file refers to (`TIME_WAIT`, half-open).
    pub inode: u64,
}

impl TcpSocket {
    /// Whether a connection to `127.0.0.1` reaches this socket's address.
    fn takes_loopback_v4(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => a == Ipv4Addr::LOCALHOST || a.is_unspecified(),
            IpAddr::V6(a) => {
                a.is_unspecified()
                    || a.to_ipv4_mapped()
                        .is_some_and(|v4| v4 == Ipv4Addr::LOCALHOST || v4.is_unspecified())
            }
        }
    }
}

/// The sockets listed in the text of `/proc/net/tcp` or `tcp6` (the
/// kernel prints addresses as 32-bit words in host byte order). Lines that
/// do not parse are skipped.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpSocket> {
    text.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<TcpSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (addr, port) = f.get(1)?.split_once(':')?;
    let words = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<Vec<u32>>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let addr = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(TcpSocket {
        addr,
        port: u16::from_str_radix(port, 16).ok()?,
        listening: *f.get(3)? == "0A",
        inode: f.get(9)?.parse().ok()?,
    })
}

/// The host's TCP sockets on local port `port` (IPv4 and IPv6).
fn sockets_on(port: u16) -> Vec<TcpSocket> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| parse_proc_net_tcp(&t))
        .filter(|s| s.port == port)
        .collect()
}

/// The socket inodes among `pid`'s open files.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The processes of process group `pgid` (its leader first).
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = vec![pgid];
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return members;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == pgid {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After "pid (comm) ": state, ppid, pgrp.
        let pgrp = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(2))
            .and_then(|g| g.parse::<u32>().ok());
        if pgrp == Some(pgid) {
            members.push(pid);
        }
    }
    members
}

/// Whose listener a connection to `127.0.0.1:port` reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A process of the child's process group.
    Group,
    /// Some other process: the port was taken before the child bound it.
    Other,
    /// No such listener is listed (it closed meanwhile, or `/proc` is
    /// unreadable).
    Unknown,
}

/// Whose listener answers on `127.0.0.1:port`: a process of process group
/// `pgid` (the child leads its own group), or another process.
pub fn listener_owner(port: u16, pgid: u32) -> Owner {
    let inodes: HashSet<u64> = sockets_on(port)
        .into_iter()
        .filter(|s| s.listening && s.inode != 0 && s.takes_loopback_v4())
        .map(|s| s.inode)
        .collect();
    if inodes.is_empty() {
        return Owner::Unknown;
    }
    // The leader (usually the exec'd server itself) first: most starts
    // need no scan of /proc.
    for pid in std::iter::once(pgid).chain(group_members(pgid).into_iter().skip(1)) {
        if !socket_inodes(pid).is_disjoint(&inodes) {
            return Owner::Group;
        }
    }
    Owner::Other
}

/// Whether a socket outside process group `pgid` holds local port `port`
/// (listening or connected), i.e. why a child of that group could not bind it.
pub fn held_by_others(port: u16, pgid: u32) -> bool {
    let sockets = sockets_on(port);
    if sockets.is_empty() {
        return false;
    }
    let ours: HashSet<u64> = group_members(pgid)
        .into_iter()
        .flat_map(socket_inodes)
        .collect();
    sockets
        .iter()
        .any(|s| s.inode == 0 || !ours.contains(&s.inode))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_proc_net_tcp_lines() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:07E8 0100007F:A662 06 00000000:00000000 03:00000204 00000000     0        0 0 3 0000000000000000
   2: garbage
";
        assert_eq!(
            parse_proc_net_tcp(v4),
            vec![
                TcpSocket {
                    addr: "127.0.0.1".parse().unwrap(),
                    port: 8080,
                    listening: true,
                    inode: 4242
                },
                TcpSocket {
                    addr: "0.0.0.0".parse().unwrap(),
                    port: 2024,
                    listening: false,
                    inode: 0
                },
            ]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:0051 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0000000000000000 100 0 0 10 0
";
        let s = parse_proc_net_tcp(v6);
        assert_eq!(s[0].addr, "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((s[0].port, s[0].inode), (80, 77));
        assert!(s[0].takes_loopback_v4());
        assert_eq!(s[1].addr, "::1".parse::<IpAddr>().unwrap());
        assert!(!s[1].takes_loopback_v4(), "::1 does not take 127.0.0.1");
    }

    #[test]
    fn recognises_address_in_use_messages() {
        for l in [
            "OSError: [Errno 98] Address already in use",
            "listen tcp 127.0.0.1:8080: bind: address already in use",
            "Error: listen EADDRINUSE: address already in use :::8080",
            "Address already in use (os error 98)",
        ] {
            assert!(says_address_in_use(l), "{l}");
        }
        assert!(!says_address_in_use("Connection refused"));
    }

    /// std opens sockets with `SOCK_CLOEXEC`: a child spawned while the
    /// probe listener of `free_port` is open does not keep it past exec.
    #[test]
    fn free_port_probe_sockets_are_close_on_exec() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let flags = rustix::io::fcntl_getfd(&l).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        let p = free_port().unwrap();
        // Nothing listens on it once it is handed out.
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok());
    }

    /// A listener of this process belongs to this process's group, not to
    /// another group; a connected socket on a port counts as holding it.
    #[test]
    fn tells_whose_socket_holds_a_port() {
        let own_group = rustix::process::getpgrp().as_raw_pid() as u32;
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listener_owner(port, own_group), Owner::Group);
        // A group that does not hold it: a child leading its own group.
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        let other = child.id();
        assert_eq!(listener_owner(port, other), Owner::Other);
        assert!(held_by_others(port, other));
        assert!(!held_by_others(port, own_group));
        // A connected (not listening) socket holds its local port too.
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let cport = c.local_addr().unwrap().port();
        assert_eq!(listener_owner(cport, other), Owner::Unknown);
        assert!(held_by_others(cport, other));
        drop((c, l));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
