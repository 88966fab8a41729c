//! Service-manager files: the systemd user units and the launchd LaunchAgent, rendered from the
//! templates in `systemd/` and `launchd/` with this installation's real paths.
//!
//! Pure functions (no I/O), so the CLI's `service install` and the tests render exactly the same
//! text. The repository's files are the single source of truth for unit contents.

use std::path::{Path, PathBuf};

pub const SOCKET_UNIT: &str = "llm-sidecar.socket";
pub const SERVICE_UNIT: &str = "llm-sidecar.service";
pub const LAUNCHD_LABEL: &str = "dev.llm-sidecar";

const SOCKET_TEMPLATE: &str = include_str!("../systemd/llm-sidecar.socket");
const SERVICE_TEMPLATE: &str = include_str!("../systemd/llm-sidecar.service");
const PLIST_TEMPLATE: &str = include_str!("../launchd/dev.llm-sidecar.plist");
const TEMPLATE_BIN: &str = "/usr/local/bin/llm-sidecar";

/// One file to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFile {
    pub path: PathBuf,
    pub contents: String,
}

/// Quotes a path for a systemd command line if it needs it.
fn systemd_quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\') {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.into_owned()
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The systemd user units (socket + service) for `binary`, writable `data_dir`, in `unit_dir`.
pub fn systemd_units(unit_dir: &Path, binary: &Path, data_dir: &Path) -> Vec<ServiceFile> {
    let service = SERVICE_TEMPLATE
        .lines()
        .map(|line| {
            if line.starts_with("ExecStart=") {
                format!("ExecStart={} serve", systemd_quote(binary))
            } else if line.starts_with("ReadWritePaths=") {
                format!("ReadWritePaths=-{}", systemd_quote(data_dir))
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    vec![
        ServiceFile { path: unit_dir.join(SOCKET_UNIT), contents: SOCKET_TEMPLATE.to_string() },
        ServiceFile { path: unit_dir.join(SERVICE_UNIT), contents: service },
    ]
}

/// The LaunchAgent plist for `binary`, listening on `socket`, logging into `log_dir`.
pub fn launchd_plist(agent_dir: &Path, binary: &Path, socket: &Path, log_dir: &Path) -> ServiceFile {
    let esc = |p: &Path| xml_escape(&p.to_string_lossy());
    let contents = PLIST_TEMPLATE
        .replace(TEMPLATE_BIN, &esc(binary))
        .replace("/tmp/llm-sidecar-501/sock", &esc(socket))
        .replace("/tmp/llm-sidecar.out.log", &esc(&log_dir.join("llm-sidecar.out.log")))
        .replace("/tmp/llm-sidecar.err.log", &esc(&log_dir.join("llm-sidecar.err.log")));
    ServiceFile { path: agent_dir.join(format!("{LAUNCHD_LABEL}.plist")), contents }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_units_carry_real_paths() {
        let files = systemd_units(Path::new("/u"), Path::new("/opt/my apps/llm-sidecar"), Path::new("/d/data"));
        assert_eq!(files[0].path, Path::new("/u/llm-sidecar.socket"));
        assert!(files[0].contents.contains("ListenStream=%t/llm-sidecar/sock"));
        let service = &files[1].contents;
        assert!(service.contains("ExecStart=\"/opt/my apps/llm-sidecar\" serve"), "{service}");
        assert!(service.contains("ReadWritePaths=-/d/data"));
        assert!(service.contains("Type=notify"));
        assert!(!service.contains(TEMPLATE_BIN));
    }

    #[test]
    fn plist_is_filled_and_escaped() {
        let f = launchd_plist(Path::new("/a"), Path::new("/b/llm&sidecar"), Path::new("/s/sock"), Path::new("/l"));
        assert_eq!(f.path, Path::new("/a/dev.llm-sidecar.plist"));
        assert!(f.contents.contains("<string>/b/llm&amp;sidecar</string>"));
        assert!(f.contents.contains("<string>/s/sock</string>"));
        assert!(f.contents.contains("<string>/l/llm-sidecar.err.log</string>"));
    }
}
