//! A NAT you can test against: three network namespaces — device, NAT router,
//! gateway — joined by veth pairs, with nftables masquerade on the router and
//! a short conntrack timeout, so an idle mapping expires and later packets are
//! dropped silently, the way a carrier NAT behaves.
//!
//! Addresses exist only inside these namespaces (10.231.1.0/24 device side,
//! 10.231.2.0/24 gateway side); nothing leaves them. Each lab has unique
//! namespace names, so two test runs can build labs at the same time.
//! Needs root, `ip` (iproute2) and `nft` (nftables).

use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// The device's address.
pub const DEVICE_IP: [u8; 4] = [10, 231, 1, 2];
/// The gateway's address.
pub const GATEWAY_IP: [u8; 4] = [10, 231, 2, 2];

/// Why a lab cannot be built here, if it cannot (not root, tools missing).
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output();
        if !found.map(|o| o.status.success()).unwrap_or(false) {
            return Some(format!("needs `{tool}` (iproute2 / nftables)"));
        }
    }
    None
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("{args:?}"))?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn nsrun(ns: &str, args: &[&str]) -> Result<()> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// Three namespaces with a NAT between device and gateway; removed on drop.
pub struct NatLab {
    /// The device's namespace (run syspushd here).
    pub device: String,
    /// The router's namespace (masquerade, conntrack timeout).
    pub router: String,
    /// The gateway's namespace (run syspush-gateway here).
    pub gateway: String,
}

impl NatLab {
    /// Builds the lab; established TCP mappings on the NAT expire after
    /// `timeout_s` seconds of silence.
    pub fn new(timeout_s: u32) -> Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "sp{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Self {
            device: format!("{tag}d"),
            router: format!("{tag}r"),
            gateway: format!("{tag}g"),
        };
        for ns in [&lab.device, &lab.router, &lab.gateway] {
            run(&["ip", "netns", "add", ns])?;
            nsrun(ns, &["ip", "link", "set", "lo", "up"])?;
        }
        let (d, r, g) = (
            lab.device.as_str(),
            lab.router.as_str(),
            lab.gateway.as_str(),
        );
        // veth pairs created directly inside the namespaces: no names in the host's.
        run(&[
            "ip", "link", "add", "name", "eth0", "netns", d, "type", "veth", "peer", "name",
            "down0", "netns", r,
        ])?;
        run(&[
            "ip", "link", "add", "name", "up0", "netns", r, "type", "veth", "peer", "name", "eth0",
            "netns", g,
        ])?;
        nsrun(d, &["ip", "addr", "add", "10.231.1.2/24", "dev", "eth0"])?;
        nsrun(d, &["ip", "link", "set", "eth0", "up"])?;
        nsrun(d, &["ip", "route", "add", "default", "via", "10.231.1.1"])?;
        nsrun(r, &["ip", "addr", "add", "10.231.1.1/24", "dev", "down0"])?;
        nsrun(r, &["ip", "addr", "add", "10.231.2.1/24", "dev", "up0"])?;
        nsrun(r, &["ip", "link", "set", "down0", "up"])?;
        nsrun(r, &["ip", "link", "set", "up0", "up"])?;
        nsrun(g, &["ip", "addr", "add", "10.231.2.2/24", "dev", "eth0"])?;
        nsrun(g, &["ip", "link", "set", "eth0", "up"])?;
        nsrun(r, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // Masquerade toward the gateway, and drop what conntrack cannot place:
        // with loose tracking off, a packet of an expired mapping is "invalid"
        // and vanishes without a RST — a silent NAT timeout.
        let rules = "table ip nat {\n chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"up0\" masquerade\n }\n}\n\
                     table inet filter {\n chain forward {\n  type filter hook forward priority filter; policy accept;\n  ct state invalid drop\n }\n\
                      chain input {\n  type filter hook input priority filter; policy accept;\n  ct state invalid drop\n }\n}\n";
        let rules_file = tempfile::NamedTempFile::new()?;
        std::fs::write(rules_file.path(), rules)?;
        nsrun(r, &["nft", "-f", &rules_file.path().display().to_string()])?;
        nsrun(
            r,
            &[
                "sysctl",
                "-qw",
                &format!("net.netfilter.nf_conntrack_tcp_timeout_established={timeout_s}"),
            ],
        )?;
        nsrun(
            r,
            &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
        )?;
        Ok(lab)
    }

    /// The gateway's address inside the lab.
    pub fn gateway_ip(&self) -> IpAddr {
        IpAddr::from(GATEWAY_IP)
    }

    /// Takes the device's link down (its default route goes with it).
    pub fn device_link_down(&self) -> Result<()> {
        nsrun(&self.device, &["ip", "link", "set", "eth0", "down"])
    }

    /// Brings the device's link back with its default route.
    pub fn device_link_up(&self) -> Result<()> {
        nsrun(&self.device, &["ip", "link", "set", "eth0", "up"])?;
        nsrun(
            &self.device,
            &["ip", "route", "replace", "default", "via", "10.231.1.1"],
        )
    }

    /// Bytes (received, sent) on the device's interface.
    pub fn device_bytes(&self) -> Result<(u64, u64)> {
        let read = |f: &str| -> Result<u64> {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.device,
                    "cat",
                    &format!("/sys/class/net/eth0/statistics/{f}"),
                ])
                .output()?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        Ok((read("rx_bytes")?, read("tx_bytes")?))
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in [&self.device, &self.router, &self.gateway] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
