//! A throwaway PostgreSQL cluster for tests: `initdb` into a temp folder,
//! started on a free loopback port (as the `postgres` user when the tests
//! run as root, since the server refuses root), stopped and removed on drop.
//! Nothing needs to be running beforehand.
//!
//! When the server binaries cannot be found or the cluster cannot start, the
//! test fails saying why. On a machine without PostgreSQL, set
//! `INTEROP_SKIP_POSTGRES=1` to skip these tests with a loud notice instead;
//! CI never sets it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tempfile::TempDir;

/// The opt-out variable; see the module docs.
pub const SKIP_VAR: &str = "INTEROP_SKIP_POSTGRES";

pub struct PgCluster {
    /// Holds `data/`, the socket and the server log; removed on drop.
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
    /// `postgresql://postgres@127.0.0.1:<port>/postgres`
    pub url: String,
    /// Server settings beyond the port and folders (TLS).
    options: String,
}

impl PgCluster {
    /// A started cluster, or `None` (after a loud notice on stderr) when
    /// `INTEROP_SKIP_POSTGRES` is set and PostgreSQL cannot be started. Any
    /// other failure to start panics with the reason.
    pub fn start_or_skip(test: &str) -> Option<PgCluster> {
        Self::start_with_or_skip(test, None)
    }

    /// As [`PgCluster::start_or_skip`], serving TLS (as well as plaintext)
    /// with `cert_pem` and `key_pem`.
    pub fn start_tls_or_skip(test: &str, cert_pem: &str, key_pem: &str) -> Option<PgCluster> {
        Self::start_with_or_skip(test, Some((cert_pem, key_pem)))
    }

    fn start_with_or_skip(test: &str, tls: Option<(&str, &str)>) -> Option<PgCluster> {
        match Self::try_start(tls) {
            Ok(pg) => Some(pg),
            Err(why) if std::env::var_os(SKIP_VAR).is_some() => {
                eprintln!(
                    "\n!!!!! SKIPPED {test}: PostgreSQL could not be started ({why}); \
                     {SKIP_VAR} is set, so this test did NOT run !!!!!\n"
                );
                None
            }
            Err(why) => panic!(
                "{test} needs PostgreSQL, which could not be started: {why}\n\
                 Install Debian's `postgresql` package (initdb, pg_ctl, postgres), \
                 or set {SKIP_VAR}=1 to skip the PostgreSQL tests on this machine."
            ),
        }
    }

    fn try_start(tls: Option<(&str, &str)>) -> Result<PgCluster, String> {
        let bin = find_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("interop-pg-")
            .tempdir()
            .map_err(|e| format!("temp folder: {e}"))?;
        let as_postgres = is_root();
        if as_postgres {
            // The server runs as `postgres`: it must reach its folder.
            set_mode(dir.path(), 0o755)?;
        }
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        if as_postgres {
            set_mode(&data, 0o700)?;
            chown_postgres(dir.path())?;
            chown_postgres(&data)?;
        }
        let initdb = run(
            as_postgres,
            Command::new(bin.join("initdb")).arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]),
        )?;
        check(&initdb, "initdb")?;
        let mut options = String::new();
        if let Some((cert, key)) = tls {
            // The server reads its key only when the file is private to it.
            let (cert_path, key_path) = (data.join("server.crt"), data.join("server.key"));
            std::fs::write(&cert_path, cert).map_err(|e| format!("server.crt: {e}"))?;
            std::fs::write(&key_path, key).map_err(|e| format!("server.key: {e}"))?;
            set_mode(&key_path, 0o600)?;
            if as_postgres {
                chown_postgres(&cert_path)?;
                chown_postgres(&key_path)?;
            }
            options = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_path.display(),
                key_path.display()
            );
        }
        let mut last = String::new();
        // A free port is found by binding :0 and letting go; another process
        // may take it in between, so try a few.
        for _ in 0..5 {
            let port = free_port()?;
            match pg_ctl_start(&bin, dir.path(), port, &options) {
                Ok(()) => {
                    return Ok(PgCluster {
                        url: format!("postgresql://postgres@127.0.0.1:{port}/postgres"),
                        dir,
                        bin,
                        port,
                        options,
                    })
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Stops the server at once (`-m immediate`: no checkpoint, as a crash).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        if let Ok(out) = run(
            is_root(),
            Command::new(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .args(["-w", "-m", "immediate", "stop"]),
        ) {
            if let Err(e) = check(&out, "pg_ctl stop") {
                eprintln!("{e}");
            }
        }
    }

    /// Starts it again after [`PgCluster::stop`]; panics if it cannot.
    pub fn start_again(&self) {
        if let Err(e) = pg_ctl_start(&self.bin, self.dir.path(), self.port, &self.options) {
            panic!("PostgreSQL did not start again: {e}");
        }
    }

    /// Runs SQL with the server's own `psql`, returning its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url,
                "-c",
                sql,
            ])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server in `dir/data` on `port` and waits until it accepts
/// connections (`pg_ctl -w`).
fn pg_ctl_start(bin: &Path, dir: &Path, port: u16, extra: &str) -> Result<(), String> {
    let options = format!(
        "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
         -c max_connections=100{extra}",
        dir.display()
    );
    let out = run(
        is_root(),
        Command::new(bin.join("pg_ctl"))
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]),
    )?;
    check(&out, "pg_ctl start").map_err(|e| {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        format!("{e}\nserver log:\n{log}")
    })
}

/// The folder of `initdb`, `pg_ctl` and `postgres`: on PATH, or Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first).
fn find_bin_dir() -> Result<PathBuf, String> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    let mut candidates = Vec::new();
    if let Ok(lib) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = lib
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        candidates.extend(versions.into_iter().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.into_iter().find(|d| has_all(d)).ok_or_else(|| {
        "initdb, pg_ctl and postgres were found neither in /usr/lib/postgresql/*/bin nor on PATH"
            .to_owned()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(as_postgres: bool, cmd: &mut Command) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let out = if as_postgres {
        let mut wrapped = Command::new("runuser");
        wrapped
            .args(["-u", "postgres", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir("/");
        wrapped.output()
    } else {
        cmd.output()
    };
    out.map_err(|e| format!("{shown}: {e}"))
}

fn check(out: &Output, what: &str) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn chown_postgres(path: &Path) -> Result<(), String> {
    let out = Command::new("chown")
        .arg("postgres:postgres")
        .arg(path)
        .output()
        .map_err(|e| format!("chown: {e}"))?;
    check(&out, "chown postgres")
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}
