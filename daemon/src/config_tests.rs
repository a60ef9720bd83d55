//! Config parsing and validation: defaults, relative paths, the redacted
//! rendering, and the error each bad value gets.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("/etc/syspush"))
}

const MIN: &str = "gateway = \"https://127.0.0.1:8443\"\nenrollment_key = \"k\"\n";

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(MIN).expect("valid");
    assert_eq!(c.heartbeat_s, 270);
    assert_eq!(c.pong_timeout_s, 10);
    let h = c.heartbeat_config();
    assert_eq!(h, HeartbeatConfig::default());
    // A short test heartbeat lowers the default minimum with it.
    let c = parse(&format!("{MIN}heartbeat_s = 5\n")).expect("valid");
    assert_eq!(c.heartbeat_config().min, Duration::from_secs(5));
    assert_eq!(
        c.endpoint(),
        &Endpoint {
            host: "127.0.0.1".into(),
            port: 8443
        }
    );
    assert!(c.apps.is_empty());
}

#[test]
fn full_config_round_trips_and_resolves_relative_paths() {
    let text = format!(
        "{MIN}state_dir = \"state\"\nsocket_path = \"/run/x.sock\"\nheartbeat_s = 300\n\
         [[app]]\nid = \"com.example.chat\"\nuids = [1000, 1001]\nwake_command = [\"/bin/true\"]\n\
         [[app]]\nid = \"b\"\n"
    );
    let c = parse(&text).expect("valid");
    assert_eq!(c.state_dir, PathBuf::from("/etc/syspush/state"));
    assert_eq!(c.apps[0].uids, vec![1000, 1001]);
    assert_eq!(c.apps[0].wake_min_interval_s, 30);
    let printed = c.to_toml_redacted();
    assert!(
        printed.contains("<redacted>") && !printed.contains("\"k\""),
        "{printed}"
    );
    let again = Config::from_toml(&printed, Path::new("/")).expect("printed config parses");
    assert_eq!(again.apps, c.apps);
}

#[test]
fn unknown_keys_are_rejected() {
    let e = parse(&format!("{MIN}heartbeat = 5\n")).expect_err("typo");
    assert!(e.to_string().contains("unknown field"), "{e}");
    let e = parse(&format!("{MIN}[[app]]\nid = \"a\"\nuid = [1]\n")).expect_err("typo");
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn bad_values_have_clear_errors() {
    let cases = [
        ("gateway = \"http://x\"\n", "scheme must be https"),
        ("gateway = \"x\"\n", "gateway"),
        ("gateway = \"https://x/api\"\n", "without path"),
        ("gateway = \"https://h\"\ndevice_id = \"d\"\n", "together"),
        (&format!("{MIN}heartbeat_s = 0\n"), "heartbeat_s"),
        (&format!("{MIN}pong_timeout_s = 0\n"), "pong_timeout_s"),
        (
            &format!("{MIN}heartbeat_min_s = 300\n"),
            "outside heartbeat_min_s",
        ),
        (
            &format!("{MIN}heartbeat_min_s = 60\nheartbeat_max_s = 50\n"),
            "min <= max",
        ),
        (
            &format!("{MIN}heartbeat_precision_pct = 100\n"),
            "heartbeat_precision_pct",
        ),
        (
            &format!("{MIN}[[app]]\nid = \"a\"\n[[app]]\nid = \"a\"\n"),
            "twice",
        ),
        (
            &format!("{MIN}[[app]]\nid = \"a\"\nwake_command = []\n"),
            "wake_command",
        ),
        (
            &format!("{MIN}ca_file = \"/nonexistent/ca.pem\"\n"),
            "cannot read ca_file",
        ),
        (&format!("{MIN}heartbeat_s = \"often\"\n"), "invalid type"),
    ];
    for (text, want) in cases {
        let e = parse(text).expect_err(text);
        assert!(e.to_string().contains(want), "{text:?}: {e}");
    }
}

#[test]
fn ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").expect("write");
    let e = parse(&format!("{MIN}ca_file = \"{}\"\n", ca.display())).expect_err("empty");
    assert!(
        matches!(e, ConfigError::Trust(TrustError::CaFileEmpty { .. })),
        "{e}"
    );
}

#[test]
fn load_reports_missing_file() {
    let e = Config::load("/nonexistent/syspushd.toml").expect_err("missing");
    assert!(matches!(e, ConfigError::Read { .. }));
}
