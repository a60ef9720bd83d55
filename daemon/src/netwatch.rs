//! Network awareness through netlink: which network the device is on, and
//! the moment that changes — without polling.
//!
//! One `NETLINK_ROUTE` socket subscribed to the route and link multicast
//! groups (`RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_LINK`) sits in
//! tokio's reactor ([`AsyncFd`]); it is readable only when the kernel reports
//! a change, so an idle device pays nothing for it. After a burst of
//! notifications (drained together) the routing table is read again with an
//! `RTM_GETROUTE` dump on a second socket, and only a change of *identity* is
//! reported: routes to other subnets or flapping link flags that leave the
//! default route alone are not the link's business.
//!
//! **Network identity** (the key under which the heartbeat remembers what it
//! learned): the default route's output interface name and gateway address,
//! e.g. `wlan0 via 192.168.1.1`, or just `rmnet_data0` for a point-to-point
//! link without a gateway. Among several default routes, the main table's
//! lowest metric wins (IPv4 before IPv6 on a tie); without one in the main
//! table (Android keeps per-network tables), the lowest metric of any table
//! but `local`. Two home networks with the same router address on the same
//! interface share an identity — usually the same kind of CPE, so the same
//! NAT behaviour. The Wi-Fi SSID is *not* read: it needs nl80211 (generic
//! netlink family resolution plus the BSS dump) or a wpa_supplicant control
//! socket, neither cheap nor available to an unprivileged daemon everywhere.
//!
//! Messages are parsed by hand — the three fixed headers (`nlmsghdr`,
//! `rtmsg`, `rtattr`) this needs do not earn a netlink crate's dependency tree.

use std::ffi::CString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;

const RTMSG_LEN: usize = 12;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RTN_UNICAST: u8 = 1;
const RT_TABLE_MAIN: u32 = 254;
const RT_TABLE_LOCAL: u32 = 255;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
pub enum NetwatchError {
    /// A netlink socket call failed.
    #[error("netlink: {0}")]
    Io(#[from] io::Error),
}

fn nix_io(e: nix::Error) -> NetwatchError {
    NetwatchError::Io(io::Error::from(e))
}

/// A default route, as far as identity goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    /// Output interface index.
    pub oif: u32,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Metric (lower wins).
    pub metric: u32,
    /// Routing table.
    pub table: u32,
    /// IPv6 (loses ties to IPv4).
    pub v6: bool,
}

/// Picks the route that identifies the network (see the module docs).
pub fn pick_default(routes: &[DefaultRoute]) -> Option<&DefaultRoute> {
    let key = |r: &&DefaultRoute| (r.table != RT_TABLE_MAIN, r.metric, r.v6);
    routes
        .iter()
        .filter(|r| r.table != RT_TABLE_LOCAL)
        .min_by_key(key)
}

/// The identity string of a default route: `IFNAME via GATEWAY` or `IFNAME`.
pub fn identity(route: &DefaultRoute, ifname: &str) -> String {
    match route.gateway {
        Some(gw) => format!("{ifname} via {gw}"),
        None => ifname.to_string(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits a buffer of netlink messages into (type, payload) pairs.
pub fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = u32_at(buf, at) {
        let len = len as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let ty = u16_at(buf, at + 4).unwrap_or(0);
        out.push((ty, &buf[at + NLMSG_HDRLEN..at + len]));
        at += align4(len);
    }
    out
}

/// Parses an `RTM_NEWROUTE` payload; Some only for a unicast default route.
pub fn parse_default_route(payload: &[u8]) -> Option<DefaultRoute> {
    let family = *payload.first()?;
    let dst_len = *payload.get(1)?;
    let mut table = u32::from(*payload.get(4)?);
    let rtype = *payload.get(7)?;
    if dst_len != 0 || rtype != RTN_UNICAST || !matches!(family, AF_INET | AF_INET6) {
        return None;
    }
    let (mut oif, mut gateway, mut metric) = (None, None, 0);
    let mut at = RTMSG_LEN;
    while let (Some(len), Some(ty)) = (u16_at(payload, at), u16_at(payload, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > payload.len() {
            break;
        }
        let data = &payload[at + 4..at + len];
        match ty {
            RTA_OIF => oif = u32_at(data, 0),
            RTA_PRIORITY => metric = u32_at(data, 0).unwrap_or(0),
            RTA_TABLE => table = u32_at(data, 0).unwrap_or(table),
            RTA_GATEWAY => {
                gateway = match data.len() {
                    4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?))),
                    16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?))),
                    _ => None,
                }
            }
            _ => {}
        }
        at += align4(len);
    }
    Some(DefaultRoute {
        oif: oif?,
        gateway,
        metric,
        table,
        v6: family == AF_INET6,
    })
}

fn netlink_socket(groups: u32) -> Result<OwnedFd, NetwatchError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC
            | if groups != 0 {
                SockFlag::SOCK_NONBLOCK
            } else {
                SockFlag::empty()
            },
        SockProtocol::NetlinkRoute,
    )
    .map_err(nix_io)?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups)).map_err(nix_io)?;
    Ok(fd)
}

/// Reads the routing table once: the current network identity (None: no default route).
pub fn current() -> Result<Option<String>, NetwatchError> {
    let fd = netlink_socket(0)?;
    // The kernel answers a dump from within our recv calls; the timeout only
    // guards against a kernel that never sends NLMSG_DONE.
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(2, 0)).map_err(nix_io)?;
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + RTMSG_LEN);
    req.extend_from_slice(&((NLMSG_HDRLEN + RTMSG_LEN) as u32).to_ne_bytes());
    req.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[0u8; RTMSG_LEN]); // AF_UNSPEC: both families
    send(fd.as_raw_fd(), &req, MsgFlags::empty()).map_err(nix_io)?;
    let mut routes = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    'dump: loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(nix_io)?;
        if n == 0 {
            break;
        }
        for (ty, payload) in messages(&buf[..n]) {
            match ty {
                NLMSG_DONE => break 'dump,
                NLMSG_ERROR => {
                    let errno = u32_at(payload, 0).map_or(0, |e| e as i32);
                    if errno != 0 {
                        return Err(NetwatchError::Io(io::Error::from_raw_os_error(-errno)));
                    }
                }
                RTM_NEWROUTE => routes.extend(parse_default_route(payload)),
                _ => {}
            }
        }
    }
    Ok(pick_default(&routes).map(|r| {
        let name = nix::net::if_::if_indextoname(r.oif)
            .ok()
            .and_then(|n: CString| n.into_string().ok())
            .unwrap_or_else(|| format!("if{}", r.oif));
        identity(r, &name)
    }))
}

/// `AsyncFd` wants `AsRawFd` on its own type.
#[derive(Debug)]
struct Fd(OwnedFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Watches for network changes. See the module docs.
#[derive(Debug)]
pub struct Netwatch {
    events: AsyncFd<Fd>,
    current: Option<String>,
    /// Notifications were consumed but the table not read yet: kept across a
    /// cancelled [`Netwatch::changed`] so no change is lost.
    dirty: bool,
}

/// Notifications closer together than this are one change (a DHCP renewal or
/// a handover sends a burst): read the table once after the burst.
const SETTLE: Duration = Duration::from_millis(50);

impl Netwatch {
    /// Subscribes, then reads the current identity. Needs a tokio runtime with I/O.
    pub fn open() -> Result<Self, NetwatchError> {
        // Subscribe first, so no change between the dump and the subscription is missed.
        let fd = netlink_socket(RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)?;
        // Deprecated for fds that could be closed behind the reactor's back;
        // `Fd` owns its `OwnedFd` for the `AsyncFd`'s whole life (as in
        // `clock::Timer`), which is the condition, and the crate stays free of `unsafe`.
        #[allow(deprecated)]
        let events = AsyncFd::with_interest(Fd(fd), Interest::READABLE)?;
        Ok(Self {
            events,
            current: current()?,
            dirty: false,
        })
    }

    /// The identity as last read (None: no default route).
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Waits until the identity changes; returns the new one. Cancel-safe.
    pub async fn changed(&mut self) -> Result<Option<String>, NetwatchError> {
        loop {
            if !self.dirty {
                self.drain().await?;
                self.dirty = true;
            }
            // Let the rest of a burst arrive, then swallow it with the same read.
            let _ = crate::clock::timeout(SETTLE, std::future::pending::<()>()).await;
            self.drain_ready()?;
            let now = current()?;
            self.dirty = false;
            if now != self.current {
                self.current = now.clone();
                return Ok(now);
            }
        }
    }

    /// Waits for at least one notification and discards what is queued.
    async fn drain(&mut self) -> Result<(), NetwatchError> {
        loop {
            let mut guard = self.events.readable().await?;
            match guard.try_io(|fd| read_all(fd.get_ref())) {
                Ok(r) => return r.map(|_| ()).map_err(NetwatchError::Io),
                Err(_would_block) => continue,
            }
        }
    }

    fn drain_ready(&mut self) -> Result<(), NetwatchError> {
        match read_all(self.events.get_ref()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads every queued notification (their content does not matter: the
/// table is read again). WouldBlock if there was none. An overrun (ENOBUFS)
/// means changes were lost: that is a change too.
fn read_all(fd: &Fd) -> io::Result<usize> {
    let mut buf = [0u8; 8192];
    let mut count = 0;
    loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Ok(count),
            Ok(_) => count += 1,
            Err(nix::errno::Errno::EAGAIN) if count > 0 => return Ok(count),
            Err(nix::errno::Errno::ENOBUFS) => count += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rta(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = ((4 + data.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        v.resize(align4(v.len()), 0);
        v
    }

    fn route_msg(family: u8, dst_len: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = vec![
            family,
            dst_len,
            0,
            0,
            RT_TABLE_MAIN as u8,
            3,
            0,
            RTN_UNICAST,
        ];
        payload.extend_from_slice(&0u32.to_ne_bytes());
        for a in attrs {
            payload.extend_from_slice(a);
        }
        let mut m = ((NLMSG_HDRLEN + payload.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        m.extend_from_slice(&RTM_NEWROUTE.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn parses_default_routes_and_picks_the_identity() {
        let mut buf = route_msg(
            AF_INET,
            0,
            &[
                rta(RTA_OIF, &3u32.to_ne_bytes()),
                rta(RTA_GATEWAY, &[192, 168, 1, 1]),
                rta(RTA_PRIORITY, &600u32.to_ne_bytes()),
            ],
        );
        // A subnet route: not a default route.
        buf.extend(route_msg(AF_INET, 24, &[rta(RTA_OIF, &3u32.to_ne_bytes())]));
        let mut gw6 = [0u8; 16];
        gw6[0] = 0xfe;
        gw6[1] = 0x80;
        gw6[15] = 1;
        buf.extend(route_msg(
            AF_INET6,
            0,
            &[
                rta(RTA_OIF, &4u32.to_ne_bytes()),
                rta(RTA_GATEWAY, &gw6),
                rta(RTA_PRIORITY, &100u32.to_ne_bytes()),
            ],
        ));
        let routes: Vec<DefaultRoute> = messages(&buf)
            .into_iter()
            .filter(|(t, _)| *t == RTM_NEWROUTE)
            .filter_map(|(_, p)| parse_default_route(p))
            .collect();
        assert_eq!(routes.len(), 2);
        assert_eq!(
            routes[0].gateway,
            Some(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)))
        );
        let best = pick_default(&routes).expect("a default route");
        assert_eq!(best.oif, 4, "lowest metric wins");
        assert_eq!(identity(best, "wlan0"), "wlan0 via fe80::1");
        let ptp = DefaultRoute {
            oif: 9,
            gateway: None,
            metric: 0,
            table: 1021,
            v6: false,
        };
        assert_eq!(identity(&ptp, "rmnet_data0"), "rmnet_data0");
        assert_eq!(
            pick_default(&[ptp.clone(), routes[0].clone()]),
            Some(&routes[0]),
            "main table first"
        );
    }

    #[test]
    fn truncated_messages_are_ignored() {
        let buf = route_msg(AF_INET, 0, &[rta(RTA_OIF, &3u32.to_ne_bytes())]);
        for cut in 0..buf.len() {
            for (_, p) in messages(&buf[..cut]) {
                let _ = parse_default_route(p);
            }
        }
        assert!(parse_default_route(&[AF_INET, 0]).is_none());
    }

    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;

    /// The usable default routes as procfs shows them, with their interface
    /// names: IPv4 from `/proc/net/route` (the main table), IPv6 from
    /// `/proc/net/ipv6_route` (unreachable defaults left out). Read here as
    /// text, independently of the netlink dump under test.
    fn procfs_default_routes() -> Vec<(DefaultRoute, String)> {
        let hex = |s: &str| u32::from_str_radix(s, 16).expect("hex field");
        let oif = |name: &str| nix::net::if_::if_nametoindex(name).expect("interface index");
        let mut routes = Vec::new();
        let v4 = std::fs::read_to_string("/proc/net/route").expect("/proc/net/route");
        for line in v4.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
            let flags = hex(f[3]);
            if f[1] != "00000000" || f[7] != "00000000" || flags & RTF_UP == 0 {
                continue;
            }
            if flags & RTF_REJECT != 0 {
                continue;
            }
            // The kernel prints the address as a host-order u32 of network-order bytes.
            let gw = Ipv4Addr::from(hex(f[2]).to_ne_bytes());
            let route = DefaultRoute {
                oif: oif(f[0]),
                gateway: Some(IpAddr::V4(gw)).filter(|_| !gw.is_unspecified()),
                metric: f[6].parse().expect("metric"),
                table: RT_TABLE_MAIN,
                v6: false,
            };
            routes.push((route, f[0].to_string()));
        }
        let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
        for line in v6.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // dst dst_len src src_len next_hop metric refcnt use flags iface
            let flags = hex(f[8]);
            if f[1] != "00" || flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
                continue;
            }
            let mut nh = [0u8; 16];
            for (i, b) in nh.iter_mut().enumerate() {
                *b = u8::from_str_radix(&f[4][2 * i..2 * i + 2], 16).expect("next hop");
            }
            let gw = Ipv6Addr::from(nh);
            let route = DefaultRoute {
                oif: oif(f[9]),
                gateway: Some(IpAddr::V6(gw)).filter(|_| !gw.is_unspecified()),
                metric: hex(f[5]),
                table: RT_TABLE_MAIN,
                v6: true,
            };
            routes.push((route, f[9].to_string()));
        }
        routes
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reads_this_machine_s_routing_table() {
        // The identity the netlink dump finds is the one procfs implies
        // (this machine, like most, keeps its default routes in the main table).
        let procfs = procfs_default_routes();
        let routes: Vec<DefaultRoute> = procfs.iter().map(|(r, _)| r.clone()).collect();
        let want = pick_default(&routes).map(|best| {
            let (_, name) = procfs.iter().find(|(r, _)| r == best).expect("picked");
            identity(best, name)
        });
        assert_eq!(current().expect("netlink dump"), want);
        let w = Netwatch::open().expect("netlink");
        assert_eq!(w.current(), want.as_deref());
    }
}
