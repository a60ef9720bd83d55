//! Where the app socket comes from: inherited from the init system, or bound
//! by the daemon itself.
//!
//! - systemd socket activation (`sd_listen_fds`): when `LISTEN_PID` is our pid
//!   and `LISTEN_FDS` >= 1, fd 3 (`SD_LISTEN_FDS_START`) is the listening
//!   socket of `syspushd.socket`. systemd owns the path; the daemon never
//!   unlinks it, so apps keep connecting (and queueing) across daemon restarts.
//! - Android init: the `socket syspushd stream ...` line of `syspushd.rc` makes
//!   init create `/dev/socket/syspushd` and pass its fd number in
//!   `ANDROID_SOCKET_syspushd`. init owns the path.
//! - Otherwise the daemon binds `socket_path` itself ([`bind`]: creates the
//!   directory, replaces a stale socket nobody answers on, mode 0666) and
//!   removes it on exit.
//!
//! An inherited fd is checked before it is trusted (a listening `AF_UNIX`
//! stream socket, else a clear error rather than serving on whatever fd 3
//! happens to be), marked close-on-exec (wake commands must not inherit it),
//! and the variables naming it are removed from the environment so that
//! children do not mistake them for their own.
//!
//! [`take_from_env`] runs in `main` before the runtime starts any thread:
//! removing environment variables is only sound while no other thread may
//! read the environment (glibc's `getaddrinfo` does).

use std::fs::{DirBuilder, Permissions};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname};
use nix::sys::socket::{getsockopt, sockopt};
use nix::sys::stat::{SFlag, fstat};
use tokio::net::UnixListener;

/// `SD_LISTEN_FDS_START`: the first fd systemd passes.
pub const SD_LISTEN_FDS_START: RawFd = 3;
/// The variable Android init sets for `socket syspushd ...`.
pub const ANDROID_SOCKET_ENV: &str = "ANDROID_SOCKET_syspushd";
const SYSTEMD_VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Errors taking an inherited socket or binding one.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// File system trouble around the socket path.
    #[error("app socket {path}: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Something that is not a socket sits at the path.
    #[error("app socket {0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// Another daemon answers on the path.
    #[error("app socket {0} is in use by a running process")]
    InUse(PathBuf),
    /// A variable that should name an fd does not parse.
    #[error("{var}={value:?} is not a valid file descriptor number")]
    BadVar {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The fd is not what the protocol promises.
    #[error("inherited fd {fd} (from {origin}) is not usable as the app socket: {why}")]
    NotAListener {
        /// The fd number.
        fd: RawFd,
        /// Which protocol passed it.
        origin: Origin,
        /// What is wrong with it.
        why: String,
    },
    /// The fd could not be handed to the event loop.
    #[error("inherited app socket (from {origin}): {source}")]
    Io {
        /// Which protocol passed it.
        origin: Origin,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Who created the app socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// systemd socket activation (`LISTEN_FDS`).
    Systemd,
    /// Android init (`ANDROID_SOCKET_syspushd`).
    AndroidInit,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Systemd => "systemd LISTEN_FDS",
            Origin::AndroidInit => ANDROID_SOCKET_ENV,
        })
    }
}

/// A validated listening socket passed by init.
#[derive(Debug)]
pub struct Inherited {
    listener: StdUnixListener,
    origin: Origin,
}

impl Inherited {
    /// Who passed it.
    pub fn origin(&self) -> Origin {
        self.origin
    }
}

/// The app listener the daemon serves on, and what to clean up on exit.
#[derive(Debug)]
pub struct AppListener {
    /// The listening socket, registered with the runtime.
    pub listener: UnixListener,
    /// The path to unlink on exit: only a socket the daemon bound itself.
    pub unlink_on_exit: Option<PathBuf>,
    /// Where it listens (for logs).
    pub path: PathBuf,
}

impl AppListener {
    /// Uses the inherited socket if there is one, else binds `socket_path`.
    /// Must run inside the tokio runtime.
    pub fn open(socket_path: &Path, inherited: Option<Inherited>) -> Result<Self, ActivationError> {
        let Some(inh) = inherited else {
            return Ok(Self {
                listener: bind(socket_path)?,
                unlink_on_exit: Some(socket_path.to_path_buf()),
                path: socket_path.to_path_buf(),
            });
        };
        let origin = inh.origin;
        let io = |source| ActivationError::Io { origin, source };
        let path = inh
            .listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .unwrap_or_default();
        if path != socket_path {
            // The init system's path wins: apps find the socket where it put it.
            tracing::info!(
                inherited = %path.display(),
                configured = %socket_path.display(),
                "serving on the inherited socket, not socket_path"
            );
        }
        inh.listener.set_nonblocking(true).map_err(io)?;
        let listener = UnixListener::from_std(inh.listener).map_err(io)?;
        tracing::info!(origin = %origin, socket = %path.display(), "using the app socket passed by init");
        Ok(Self {
            listener,
            unlink_on_exit: None,
            path,
        })
    }
}

fn bind_err(path: &Path) -> impl FnOnce(std::io::Error) -> ActivationError + '_ {
    move |source| ActivationError::Bind {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the app socket at `path`: creates the parent directory, removes a
/// stale socket (one nobody answers on), binds and makes it 0666. Must run
/// inside the tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener, ActivationError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(bind_err(parent))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ActivationError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(bind_err(path))?;
        }
        Ok(_) => return Err(ActivationError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err(path))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o666)).map_err(bind_err(path))?;
    Ok(listener)
}

/// Takes the app socket passed by systemd or Android init, if any, and removes
/// the variables that named it from the environment. Call once, from `main`,
/// before any thread is started.
pub fn take_from_env() -> Result<Option<Inherited>, ActivationError> {
    let systemd = systemd_fd()?;
    let android = std::env::var(ANDROID_SOCKET_ENV).ok();
    let mut vars: Vec<&str> = Vec::new();
    if std::env::var_os("LISTEN_FDS").is_some() || std::env::var_os("LISTEN_PID").is_some() {
        vars.extend(SYSTEMD_VARS);
    }
    if android.is_some() {
        vars.push(ANDROID_SOCKET_ENV);
    }
    let taken = if let Some(fd) = systemd {
        Some(adopt(fd, Origin::Systemd)?)
    } else if let Some(v) = android {
        let fd = v
            .trim()
            .parse::<RawFd>()
            .ok()
            // 0-2 are stdio: never adopt those as a listener.
            .filter(|fd| *fd > 2)
            .ok_or(ActivationError::BadVar {
                var: ANDROID_SOCKET_ENV,
                value: v.clone(),
            })?;
        Some(adopt(fd, Origin::AndroidInit)?)
    } else {
        None
    };
    unset_env(&vars);
    Ok(taken)
}

/// fd 3 when `LISTEN_PID` names this process and `LISTEN_FDS` >= 1.
fn systemd_fd() -> Result<Option<RawFd>, ActivationError> {
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    // For another process (a parent that did not clean up): not ours.
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: u32 = fds.trim().parse().map_err(|_| ActivationError::BadVar {
        var: "LISTEN_FDS",
        value: fds.clone(),
    })?;
    if n == 0 {
        return Ok(None);
    }
    if n > 1 {
        // Only one ListenStream= is expected; the others stay open but unused
        // (and close-on-exec is not ours to set on fds we do not take).
        tracing::warn!(
            listen_fds = n,
            "more than one socket passed; using the first"
        );
    }
    Ok(Some(SD_LISTEN_FDS_START))
}

/// Checks that `fd` is a listening `AF_UNIX` stream socket.
fn check_listener(fd: BorrowedFd<'_>) -> Result<(), String> {
    let st = fstat(fd).map_err(|e| format!("fstat: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err("not a socket".into());
    }
    let addr: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| format!("getsockname: {e}"))?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err(format!("address family {:?}, not AF_UNIX", addr.family()));
    }
    let ty = getsockopt(&fd, sockopt::SockType).map_err(|e| format!("SO_TYPE: {e}"))?;
    if ty != SockType::Stream {
        return Err(format!("socket type {ty:?}, not SOCK_STREAM"));
    }
    if !getsockopt(&fd, sockopt::AcceptConn).map_err(|e| format!("SO_ACCEPTCONN: {e}"))? {
        return Err("not listening".into());
    }
    Ok(())
}

/// Validates `fd` and takes ownership of it as a close-on-exec listener.
#[allow(unsafe_code)]
fn adopt(fd: RawFd, origin: Origin) -> Result<Inherited, ActivationError> {
    let bad = |why: String| ActivationError::NotAListener { fd, origin, why };
    // SAFETY: `fd` is the number init passed to this process by protocol, and
    // this runs once in `main` before any other thread exists, so no other code
    // can close or reuse it while borrowed. If it is not open at all, the
    // checks only get EBADF for it and it is never used.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    check_listener(borrowed).map_err(bad)?;
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| bad(format!("F_SETFD: {e}")))?;
    // SAFETY: validated above as an open listening AF_UNIX stream socket; the
    // protocol hands it to this process alone and nothing else in it holds
    // the number (the variables naming it are removed right after), so the
    // OwnedFd is its only owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Inherited {
        listener: StdUnixListener::from(owned),
        origin,
    })
}

/// Whether this process has exactly one thread (Linux/Android `/proc`).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// Removes `vars` from the environment if that is sound now.
#[allow(unsafe_code)]
fn unset_env(vars: &[&str]) {
    if vars.is_empty() {
        return;
    }
    if !single_threaded() {
        // Another thread could be reading the environment (getaddrinfo does):
        // leave the variables; child processes get LISTEN_PID of another pid,
        // which sd_listen_fds ignores, and fds that are close-on-exec.
        tracing::warn!(
            ?vars,
            "not single-threaded; leaving activation variables in the environment"
        );
        return;
    }
    for v in vars {
        // SAFETY: only this thread exists (checked just above), so nothing
        // reads or writes the environment concurrently.
        unsafe { std::env::remove_var(v) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn check_listener_accepts_only_listening_unix_stream_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = StdUnixListener::bind(dir.path().join("s")).expect("bind");
        assert_eq!(check_listener(l.as_fd()), Ok(()));

        let dgram = std::os::unix::net::UnixDatagram::unbound().expect("dgram");
        assert!(
            check_listener(dgram.as_fd())
                .expect_err("dgram")
                .contains("SOCK_STREAM")
        );

        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert!(
            check_listener(a.as_fd())
                .expect_err("connected")
                .contains("not listening")
        );

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        assert!(
            check_listener(tcp.as_fd())
                .expect_err("tcp")
                .contains("AF_UNIX")
        );

        let file = std::fs::File::open("/dev/null").expect("file");
        assert_eq!(check_listener(file.as_fd()), Err("not a socket".into()));
    }

    #[test]
    fn bind_replaces_stale_sockets_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        drop(StdUnixListener::bind(&path).expect("stale socket"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async {
            let l = bind(&path).expect("stale socket replaced");
            assert_eq!(
                std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
                0o666
            );
            assert!(matches!(bind(&path), Err(ActivationError::InUse(_))));
            drop(l);
            let file = dir.path().join("plain");
            std::fs::write(&file, "x").expect("write");
            assert!(matches!(bind(&file), Err(ActivationError::NotASocket(_))));
            assert!(file.exists());
        });
    }
}
