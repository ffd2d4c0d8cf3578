//! Fixtures for integration tests against the real Docker Engine, driven through the `docker` CLI.
//!
//! No image registry is reachable, so nothing is ever pulled: [`SandboxImage::build`] builds a
//! `FROM scratch` image around the static `sandbox-server` binary of this crate (with
//! `docker import`, see [`SandboxImage::from_binary`]).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use sandport_testkit::docker::{Container, SandboxImage, TestNetwork};
//! use std::time::Duration;
//!
//! let image = SandboxImage::build()?;
//! let net = TestNetwork::create()?;
//! let sandbox = Container::builder(&image)
//!     .network(&net)
//!     .label("conversation_id", &sandport_testkit::docker::random_conversation_id())
//!     .sandbox_ports(&[8000, 8001])
//!     .run()?;
//! let addr = sandbox.wait_http(&net, 8000, Duration::from_secs(10)).await?;
//! // ... talk to `addr` (the container's bridge IP, reachable from the host on Linux) ...
//! # let _ = addr; Ok(()) }
//! ```
//!
//! # Cleanup
//!
//! Every resource is created with the label `sandport.test=1`, a label `sandport.test.pid=<pid of
//! the creating process>` and a name starting with `sandport-test-`. Each fixture removes its
//! resource on `Drop` (also when the test panics), so locals must be declared in creation order:
//! image, then network, then containers (Rust drops them in reverse). Resources left behind by a
//! killed test process are removed by [`sweep_leftovers`] (or the `sandport-test-sweep` binary),
//! or by hand:
//!
//! ```sh
//! docker ps -aq --filter label=sandport.test=1 | xargs -r docker rm -f -v
//! docker network ls -q --filter label=sandport.test=1 | xargs -r docker network rm
//! docker images -q --filter label=sandport.test=1 | xargs -r docker rmi -f
//! ```
//!
//! # The static binary
//!
//! [`sandbox_server_binary`] returns `$SANDPORT_TEST_SANDBOX_BIN` when set, else builds
//! `sandbox-server` with `$CARGO` (or `cargo`) as
//! `RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=false
//! CARGO_PROFILE_RELEASE_STRIP=true cargo build --release --target
//! x86_64-unknown-linux-gnu -p sandport-testkit --bin sandbox-server --target-dir
//! <workspace>/target/testkit-static`. The separate target directory keeps the nested cargo from
//! waiting on the lock held by the `cargo test` / `cargo nextest run` that runs the test.
//! `$SANDPORT_TEST_STATIC_TARGET_DIR` overrides that directory.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::io::Write as _;

use anyhow::{bail, Context as _};

/// Label carried by every Docker resource the kit creates (value `1`).
pub const TEST_LABEL: &str = "sandport.test";
/// Label holding the pid of the process that created the resource.
pub const PID_LABEL: &str = "sandport.test.pid";
/// Prefix of every container, network and image name the kit creates.
pub const NAME_PREFIX: &str = "sandport-test-";
/// Repository of sandbox images (tags are `<pid>-<random>`).
pub const IMAGE_REPOSITORY: &str = "sandport-test-sandbox";
/// Environment variable pointing at a prebuilt static `sandbox-server` binary.
pub const SANDBOX_BIN_ENV: &str = "SANDPORT_TEST_SANDBOX_BIN";
/// Environment variable overriding the target directory of the nested static build.
pub const STATIC_TARGET_DIR_ENV: &str = "SANDPORT_TEST_STATIC_TARGET_DIR";
/// The target triple of the static build.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// A fresh conversation id: 32 lowercase hex digits.
pub fn random_conversation_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// `<pid>-<8 random hex>`: unique across processes and calls.
fn unique_suffix() -> String {
    format!("{}-{:08x}", std::process::id(), rand::random::<u32>())
}

fn pid_label_arg() -> String {
    format!("{PID_LABEL}={}", std::process::id())
}

fn test_label_arg() -> String {
    format!("{TEST_LABEL}=1")
}

/// Runs `docker <args>` and returns its trimmed stdout, or an error with the command and stderr.
pub fn docker<I, S>(args: I) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run the `docker` CLI")?;
    if !output.status.success() {
        bail!(
            "`docker {}` failed ({}): {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs `docker <args>` ignoring the outcome (used by `Drop`).
fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// True when the `docker` CLI works and reaches an engine.
pub fn docker_available() -> bool {
    docker(["version", "--format", "{{.Server.Version}}"]).is_ok()
}

/// Ok when Docker is usable; otherwise an error explaining why (tests should fail on it).
pub fn require_docker() -> anyhow::Result<()> {
    docker(["version", "--format", "{{.Server.Version}}"])
        .map(|_| ())
        .context("the Docker engine is required for this test and is not reachable")
}

// ---------------------------------------------------------------------------------------------
// The static sandbox-server binary
// ---------------------------------------------------------------------------------------------

fn workspace_root() -> PathBuf {
    // crates/sandport-testkit -> workspace root
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Target directory of the nested static build.
pub fn static_target_dir() -> PathBuf {
    match std::env::var_os(STATIC_TARGET_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join("target").join("testkit-static"),
    }
}

/// Where the nested static build puts `sandbox-server`.
pub fn static_binary_path() -> PathBuf {
    static_target_dir()
        .join(STATIC_TARGET)
        .join("release")
        .join("sandbox-server")
}

/// Path of a static `sandbox-server` binary, building it on first use in this process.
///
/// `$SANDPORT_TEST_SANDBOX_BIN` wins when set. Otherwise cargo (`$CARGO` or `cargo`) is run once
/// per process; it is a no-op when the binary is up to date. Concurrent processes serialise on
/// cargo's own lock of the separate target directory.
pub fn sandbox_server_binary() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn locate_or_build() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(SANDBOX_BIN_ENV).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        check_static_elf(&bin).with_context(|| format!("${SANDBOX_BIN_ENV}={}", bin.display()))?;
        return Ok(bin);
    }
    build_static_binary()
}

/// Runs the nested static build and returns the binary path.
pub fn build_static_binary() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = workspace_root();
    let target_dir = static_target_dir();
    let started = Instant::now();
    let output = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--target", STATIC_TARGET])
        .args(["-p", "sandport-testkit", "--bin", "sandbox-server"])
        .arg("--target-dir")
        .arg(&target_dir)
        // CARGO_ENCODED_RUSTFLAGS would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // A small binary keeps `docker build` fast (the workspace keeps line tables in release).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        bail!(
            "static build of sandbox-server failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let bin = static_binary_path();
    check_static_elf(&bin)?;
    eprintln!(
        "sandport-testkit: static sandbox-server ready in {:.1?}: {}",
        started.elapsed(),
        bin.display()
    );
    Ok(bin)
}

/// Fails unless `path` is an x86-64 ELF executable without a `PT_INTERP` program header (that
/// is, statically linked and runnable in a `FROM scratch` image).
pub fn check_static_elf(path: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if data.get(0..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{} has a truncated ELF header", path.display());
    };
    const PT_INTERP: u32 = 3;
    for i in 0..usize::from(phnum) {
        let off = usize::try_from(phoff)? + i * usize::from(phentsize);
        let p_type = data
            .get(off..off + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
            .with_context(|| format!("{} has a truncated program header", path.display()))?;
        if p_type == PT_INTERP {
            bail!(
                "{} is dynamically linked (has an ELF interpreter); build it with \
                 RUSTFLAGS='-C target-feature=+crt-static' and --target {STATIC_TARGET}",
                path.display()
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Image
// ---------------------------------------------------------------------------------------------

/// A `FROM scratch` image holding `/sandbox-server` as its entrypoint, under a unique tag.
///
/// Dropping it runs `docker rmi -f <tag>`.
#[derive(Debug)]
pub struct SandboxImage {
    tag: String,
}

impl SandboxImage {
    /// Builds the image around [`sandbox_server_binary`].
    pub fn build() -> anyhow::Result<Self> {
        require_docker()?;
        let bin = sandbox_server_binary()?;
        Self::from_binary(&bin)
    }

    /// Builds the image around the given static binary.
    ///
    /// The image is the one this Dockerfile describes:
    ///
    /// ```text
    /// FROM scratch
    /// COPY sandbox-server /sandbox-server
    /// LABEL sandport.test=1 sandport.test.pid=<pid>
    /// ENTRYPOINT ["/sandbox-server"]
    /// ```
    ///
    /// It is made with `docker import` of a one-file tar stream written to the CLI's stdin
    /// (about 0.1 s) rather than `docker build`: the legacy builder commits one intermediate
    /// container per instruction and takes about 2 s for the same result.
    pub fn from_binary(binary: &Path) -> anyhow::Result<Self> {
        check_static_elf(binary)?;
        let data =
            std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
        let archive = single_file_tar("sandbox-server", &data, 0o755);
        drop(data);
        let image = SandboxImage {
            tag: format!("{IMAGE_REPOSITORY}:{}", unique_suffix()),
        };
        let mut child = Command::new("docker")
            .args(["import", "--change", "ENTRYPOINT [\"/sandbox-server\"]"])
            .args([
                "--change",
                &format!("LABEL {TEST_LABEL}=1 {}", pid_label_arg()),
            ])
            .args(["-", &image.tag])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run the `docker` CLI")?;
        let written = child
            .stdin
            .take()
            .context("docker import has no stdin")?
            .write_all(&archive);
        let output = child.wait_with_output()?;
        if !output.status.success() || written.is_err() {
            bail!(
                "`docker import` of the sandbox image failed ({}, stdin: {:?}): {}",
                output.status,
                written,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(image)
    }

    /// `sandport-test-sandbox:<pid>-<random>`.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for SandboxImage {
    fn drop(&mut self) {
        docker_quiet(&["rmi", "-f", &self.tag]);
    }
}

/// A ustar archive holding one regular file `name` (owned by root) with `data`.
fn single_file_tar(name: &str, data: &[u8], mode: u32) -> Vec<u8> {
    fn octal(field: &mut [u8], value: u64) {
        let digits = format!("{value:0width$o}", width = field.len() - 1);
        field[..digits.len()].copy_from_slice(digits.as_bytes());
        field[digits.len()] = 0;
    }
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut header[100..108], u64::from(mode));
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], data.len() as u64);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    octal(&mut header[136..148], mtime);
    header[148..156].fill(b' ');
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    let checksum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    octal(&mut header[148..155], u64::from(checksum));

    let padded = data.len().div_ceil(512) * 512;
    let mut archive = Vec::with_capacity(512 + padded + 1024);
    archive.extend_from_slice(&header);
    archive.extend_from_slice(data);
    archive.resize(512 + padded + 1024, 0);
    archive
}

// ---------------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------------

/// A user-defined bridge network with a unique `sandport-test-net-…` name.
///
/// Containers on it are reachable from the host at their IP on that network (Linux). Dropping
/// it disconnects whatever is still attached and removes it.
#[derive(Debug)]
pub struct TestNetwork {
    name: String,
    id: String,
}

impl TestNetwork {
    /// `docker network create --driver bridge` with the test labels.
    pub fn create() -> anyhow::Result<Self> {
        let name = format!("{NAME_PREFIX}net-{}", unique_suffix());
        let id = docker([
            "network",
            "create",
            "--driver",
            "bridge",
            "--label",
            &test_label_arg(),
            "--label",
            &pid_label_arg(),
            &name,
        ])?;
        Ok(TestNetwork { name, id })
    }

    /// The network name (what `docker run --network` and the gateway's config take).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full network id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host side (gateway address) of the bridge, as containers see the host.
    pub fn gateway_ip(&self) -> anyhow::Result<IpAddr> {
        let out = docker([
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            &self.id,
        ])?;
        out.split_whitespace()
            .find_map(|s| s.parse().ok())
            .with_context(|| format!("network {} has no gateway address", self.name))
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        if docker(["network", "rm", &self.id]).is_ok() {
            return;
        }
        // Still has endpoints (a container outlived the network guard): detach them, retry.
        if let Ok(ids) = docker([
            "network",
            "inspect",
            "--format",
            "{{range $id, $c := .Containers}}{{$id}} {{end}}",
            &self.id,
        ]) {
            for container in ids.split_whitespace() {
                docker_quiet(&["network", "disconnect", "-f", &self.id, container]);
            }
        }
        docker_quiet(&["network", "rm", &self.id]);
    }
}

// ---------------------------------------------------------------------------------------------
// Container
// ---------------------------------------------------------------------------------------------

/// Builder for a detached container; see [`Container::builder`].
#[derive(Debug, Clone)]
pub struct ContainerBuilder {
    image: String,
    name: String,
    labels: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    network: Option<String>,
    host_network: bool,
    publish: Vec<u16>,
    extra_args: Vec<String>,
    command: Vec<String>,
}

impl ContainerBuilder {
    /// Adds a label (`conversation_id`, `user_id`, …). `sandport.test=1` is always added;
    /// `sandport.test.pid` defaults to this process and may be overridden.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds several labels.
    pub fn labels<K, V>(mut self, labels: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets `SANDBOX_PORTS` for the sandbox server.
    pub fn sandbox_ports(self, ports: &[u16]) -> Self {
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.env(crate::sandbox_server::PORTS_ENV, list)
    }

    /// Attaches the container to `network` at creation (`--network`).
    pub fn network(mut self, network: &TestNetwork) -> Self {
        self.network = Some(network.name.clone());
        self.host_network = false;
        self
    }

    /// Attaches the container to a network by name (for example `bridge`).
    pub fn network_name(mut self, name: impl Into<String>) -> Self {
        self.network = Some(name.into());
        self.host_network = false;
        self
    }

    /// Runs the container with `--network host`; its ports are then reached on 127.0.0.1.
    pub fn host_network(mut self) -> Self {
        self.host_network = true;
        self.network = None;
        self
    }

    /// Publishes `private` (tcp) on a random host port on all interfaces (`-p <private>`, same as
    /// `-p 0:<private>`). Read the host port back with [`Container::published_port`].
    pub fn publish(mut self, private: u16) -> Self {
        self.publish.push(private);
        self
    }

    /// Uses `<NAME_PREFIX><hint>-<pid>-<random>` as the name instead of the default `sandbox`.
    pub fn name_hint(mut self, hint: &str) -> Self {
        self.name = format!("{NAME_PREFIX}{hint}-{}", unique_suffix());
        self
    }

    /// Extra raw `docker run` arguments (placed before the image).
    pub fn docker_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Arguments after the image (passed to the entrypoint).
    pub fn command<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = args.into_iter().map(Into::into).collect();
        self
    }

    /// The `docker run` arguments this builder produces.
    pub fn run_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            self.name.clone(),
        ];
        args.extend([
            "--label".into(),
            test_label_arg(),
            "--label".into(),
            pid_label_arg(),
        ]);
        for (k, v) in &self.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        for (k, v) in &self.env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        if self.host_network {
            args.extend(["--network".into(), "host".into()]);
        } else if let Some(net) = &self.network {
            args.extend(["--network".into(), net.clone()]);
        }
        for port in &self.publish {
            args.extend(["-p".into(), port.to_string()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args.push(self.image.clone());
        args.extend(self.command.iter().cloned());
        args
    }

    /// `docker run -d …`: returns once the container has started.
    pub fn run(self) -> anyhow::Result<Container> {
        let args = self.run_args();
        let id = match docker(&args) {
            Ok(id) => id,
            Err(e) => {
                // `docker run` can fail after creating the container (e.g. port clash).
                docker_quiet(&["rm", "-f", "-v", &self.name]);
                return Err(e);
            }
        };
        Ok(Container {
            id,
            name: self.name,
            host_network: self.host_network,
        })
    }
}

/// A container removed with `docker rm -f -v` when dropped.
#[derive(Debug)]
pub struct Container {
    id: String,
    name: String,
    host_network: bool,
}

impl Container {
    /// A builder for a container of the sandbox image.
    pub fn builder(image: &SandboxImage) -> ContainerBuilder {
        Self::builder_for(image.tag())
    }

    /// A builder for a container of any local image.
    pub fn builder_for(image: &str) -> ContainerBuilder {
        ContainerBuilder {
            image: image.to_owned(),
            name: format!("{NAME_PREFIX}sandbox-{}", unique_suffix()),
            labels: BTreeMap::from([(PID_LABEL.to_owned(), std::process::id().to_string())]),
            env: Vec::new(),
            network: None,
            host_network: false,
            publish: Vec::new(),
            extra_args: Vec::new(),
            command: Vec::new(),
        }
    }

    /// Full container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's current name (changes with [`Container::rename`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first 12 characters of the id: the container's default hostname.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// `docker inspect` as JSON.
    pub fn inspect(&self) -> anyhow::Result<serde_json::Value> {
        let out = docker(["inspect", "--type", "container", &self.id])?;
        let mut list: Vec<serde_json::Value> =
            serde_json::from_str(&out).context("parsing docker inspect output")?;
        list.pop().context("docker inspect returned nothing")
    }

    /// `State.Status`: `created`, `running`, `paused`, `restarting`, `exited`, `dead`.
    pub fn status(&self) -> anyhow::Result<String> {
        docker([
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.State.Status}}",
            &self.id,
        ])
    }

    /// The container's IP on `network` (127.0.0.1 for a host-network container).
    pub fn ip(&self, network: &TestNetwork) -> anyhow::Result<IpAddr> {
        self.ip_on(network.name())
    }

    /// The container's IP on the network called `network` (127.0.0.1 on the host network).
    pub fn ip_on(&self, network: &str) -> anyhow::Result<IpAddr> {
        if self.host_network {
            return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let out = docker([
            "inspect",
            "--type",
            "container",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            &self.id,
        ])?;
        let networks: serde_json::Value = serde_json::from_str(&out)?;
        let ip = networks
            .get(network)
            .and_then(|n| n.get("IPAddress"))
            .and_then(|ip| ip.as_str())
            .filter(|ip| !ip.is_empty())
            .with_context(|| {
                format!(
                    "container {} has no IP on network {network} (attached: {out})",
                    self.name
                )
            })?;
        ip.parse()
            .with_context(|| format!("bad IP {ip:?} for container {}", self.name))
    }

    /// `ip(network):port`.
    pub fn addr(&self, network: &TestNetwork, port: u16) -> anyhow::Result<SocketAddr> {
        Ok(SocketAddr::new(self.ip(network)?, port))
    }

    /// The host port that `private`/tcp is published on.
    pub fn published_port(&self, private: u16) -> anyhow::Result<u16> {
        let out = docker([
            "inspect",
            "--type",
            "container",
            "--format",
            "{{json .NetworkSettings.Ports}}",
            &self.id,
        ])?;
        let ports: serde_json::Value = serde_json::from_str(&out)?;
        let bindings = ports
            .get(format!("{private}/tcp"))
            .and_then(|b| b.as_array())
            .with_context(|| format!("port {private}/tcp is not published ({out})"))?;
        // Prefer the IPv4 binding; Docker may add an IPv6 one.
        let mut candidates: Vec<&serde_json::Value> = bindings.iter().collect();
        candidates.sort_by_key(|b| {
            b.get("HostIp")
                .and_then(|ip| ip.as_str())
                .map(|ip| ip.contains(':'))
        });
        candidates
            .iter()
            .find_map(|b| b.get("HostPort")?.as_str()?.parse().ok())
            .with_context(|| format!("port {private}/tcp has no host binding ({out})"))
    }

    /// `docker stop` (SIGTERM, SIGKILL after Docker's default 10 s).
    pub fn stop(&self) -> anyhow::Result<()> {
        docker(["stop", &self.id]).map(drop)
    }

    /// `docker stop -t <secs>`.
    pub fn stop_with_timeout(&self, secs: u32) -> anyhow::Result<()> {
        docker(["stop", "-t", &secs.to_string(), &self.id]).map(drop)
    }

    /// `docker start`.
    pub fn start(&self) -> anyhow::Result<()> {
        docker(["start", &self.id]).map(drop)
    }

    /// `docker restart`.
    pub fn restart(&self) -> anyhow::Result<()> {
        docker(["restart", &self.id]).map(drop)
    }

    /// `docker kill` (SIGKILL).
    pub fn kill(&self) -> anyhow::Result<()> {
        docker(["kill", &self.id]).map(drop)
    }

    /// `docker pause`.
    pub fn pause(&self) -> anyhow::Result<()> {
        docker(["pause", &self.id]).map(drop)
    }

    /// `docker unpause`.
    pub fn unpause(&self) -> anyhow::Result<()> {
        docker(["unpause", &self.id]).map(drop)
    }

    /// `docker rm -f -v` now (Drop then does nothing useful).
    pub fn remove(&self) -> anyhow::Result<()> {
        docker(["rm", "-f", "-v", &self.id]).map(drop)
    }

    /// `docker rename`; the new name is prefixed with [`NAME_PREFIX`] unless it already is.
    pub fn rename(&mut self, new_name: &str) -> anyhow::Result<()> {
        let new_name = if new_name.starts_with(NAME_PREFIX) {
            new_name.to_owned()
        } else {
            format!("{NAME_PREFIX}{new_name}")
        };
        docker(["rename", &self.id, &new_name])?;
        self.name = new_name;
        Ok(())
    }

    /// `docker network connect`.
    pub fn connect(&self, network: &TestNetwork) -> anyhow::Result<()> {
        docker(["network", "connect", network.name(), &self.id]).map(drop)
    }

    /// `docker network disconnect`.
    pub fn disconnect(&self, network: &TestNetwork) -> anyhow::Result<()> {
        docker(["network", "disconnect", network.name(), &self.id]).map(drop)
    }

    /// `docker logs` (stdout and stderr concatenated).
    pub fn logs(&self) -> anyhow::Result<String> {
        let output = Command::new("docker")
            .args(["logs", &self.id])
            .stdin(Stdio::null())
            .output()
            .context("cannot run the `docker` CLI")?;
        let mut logs = String::from_utf8_lossy(&output.stdout).into_owned();
        logs.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok(logs)
    }

    /// Waits until `port` on this container's IP on `network` answers HTTP; returns the address.
    pub async fn wait_http(
        &self,
        network: &TestNetwork,
        port: u16,
        timeout: Duration,
    ) -> anyhow::Result<SocketAddr> {
        let addr = self.addr(network, port)?;
        wait_for_http(addr, timeout).await.with_context(|| {
            format!(
                "container {} logs:\n{}",
                self.name,
                self.logs().unwrap_or_default()
            )
        })?;
        Ok(addr)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        docker_quiet(&["rm", "-f", "-v", &self.id]);
    }
}

// ---------------------------------------------------------------------------------------------
// Readiness
// ---------------------------------------------------------------------------------------------

const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

fn probe_request(addr: SocketAddr) -> String {
    format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

fn is_http_status_line(buf: &[u8]) -> bool {
    buf.len() >= 12
        && buf.starts_with(b"HTTP/1.")
        && buf[8] == b' '
        && buf[9..12].iter().all(u8::is_ascii_digit)
}

/// Polls `addr` until it answers a `GET /` with an HTTP/1.x status line (any status), or fails
/// once `timeout` has passed, reporting the last error.
pub async fn wait_for_http(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(probe_request(addr).as_bytes()).await?;
            let mut buf = Vec::with_capacity(64);
            while buf.len() < 12 {
                if stream.read_buf(&mut buf).await? == 0 {
                    break;
                }
            }
            Ok::<_, std::io::Error>(buf)
        };
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .clamp(PROBE_INTERVAL, PROBE_ATTEMPT_TIMEOUT);
        let last_err = match tokio::time::timeout(budget, attempt).await {
            Ok(Ok(buf)) if is_http_status_line(&buf) => return Ok(()),
            Ok(Ok(buf)) => format!("not an HTTP response: {:?}", String::from_utf8_lossy(&buf)),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "attempt timed out".into(),
        };
        if Instant::now() >= deadline {
            bail!("{addr} did not answer HTTP within {timeout:?}: {last_err}");
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Blocking version of [`wait_for_http`] for synchronous tests.
pub fn wait_for_http_blocking(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    loop {
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .clamp(PROBE_INTERVAL, PROBE_ATTEMPT_TIMEOUT);
        let attempt = || -> std::io::Result<Vec<u8>> {
            let mut stream = std::net::TcpStream::connect_timeout(&addr, budget)?;
            stream.set_read_timeout(Some(budget))?;
            stream.set_write_timeout(Some(budget))?;
            stream.write_all(probe_request(addr).as_bytes())?;
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            while got.len() < 12 {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            Ok(got)
        };
        let last_err = match attempt() {
            Ok(buf) if is_http_status_line(&buf) => return Ok(()),
            Ok(buf) => format!("not an HTTP response: {:?}", String::from_utf8_lossy(&buf)),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("{addr} did not answer HTTP within {timeout:?}: {last_err}");
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
}

// ---------------------------------------------------------------------------------------------
// Sweeping
// ---------------------------------------------------------------------------------------------

/// What [`sweep_leftovers`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Container ids removed.
    pub containers: Vec<String>,
    /// Network ids removed.
    pub networks: Vec<String>,
    /// Image ids removed.
    pub images: Vec<String>,
}

fn pid_alive(pid: &str) -> bool {
    pid.parse::<u32>()
        .map(|pid| Path::new(&format!("/proc/{pid}")).exists())
        .unwrap_or(false)
}

/// `(id, pid label)` of every resource of `kind` carrying the test label.
fn labelled(kind: &str) -> anyhow::Result<Vec<(String, String)>> {
    let filter = format!("label={TEST_LABEL}=1");
    let ids = match kind {
        "container" => docker(["ps", "-aq", "--no-trunc", "--filter", &filter])?,
        "network" => docker(["network", "ls", "-q", "--no-trunc", "--filter", &filter])?,
        _ => docker(["images", "-q", "--no-trunc", "--filter", &filter])?,
    };
    let mut ids: Vec<&str> = ids.split_whitespace().collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let labels_path = if kind == "network" {
        ".Labels"
    } else {
        ".Config.Labels"
    };
    let format = format!("{{{{.Id}}}} {{{{index {labels_path} \"{PID_LABEL}\"}}}}");
    let mut args = vec!["inspect", "--type", kind, "--format", &format];
    args.extend(ids.iter().copied());
    // Resources can vanish between the list and the inspect: inspect one by one on failure.
    let out = match docker(&args) {
        Ok(out) => out,
        Err(_) => ids
            .iter()
            .filter_map(|id| docker(["inspect", "--type", kind, "--format", &format, id]).ok())
            .collect::<Vec<_>>()
            .join("\n"),
    };
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let id = parts.next()?.to_owned();
            let pid = parts.next().unwrap_or("").to_owned();
            Some((id, pid))
        })
        .collect())
}

fn sweep(only_dead: bool) -> anyhow::Result<SweepReport> {
    let keep = |pid: &str| only_dead && pid_alive(pid);
    let mut report = SweepReport::default();
    for (id, pid) in labelled("container")? {
        if !keep(&pid) && docker(["rm", "-f", "-v", &id]).is_ok() {
            report.containers.push(id);
        }
    }
    for (id, pid) in labelled("network")? {
        if !keep(&pid) && docker(["network", "rm", &id]).is_ok() {
            report.networks.push(id);
        }
    }
    for (id, pid) in labelled("image")? {
        if !keep(&pid) && docker(["rmi", "-f", &id]).is_ok() {
            report.images.push(id);
        }
    }
    Ok(report)
}

/// Removes test containers, networks and images whose creating process is no longer running
/// (by the `sandport.test.pid` label and `/proc`). Safe to run while other tests run on the
/// same host, as long as they run in the same pid namespace.
pub fn sweep_leftovers() -> anyhow::Result<SweepReport> {
    sweep(true)
}

/// Removes every resource labelled `sandport.test=1`, including those of running tests.
pub fn sweep_all() -> anyhow::Result<SweepReport> {
    sweep(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_32_lower_hex() {
        let a = random_conversation_id();
        let b = random_conversation_id();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn run_args_carry_labels_and_prefix() {
        let args = Container::builder_for("img:1")
            .label("conversation_id", "abc")
            .env("SANDBOX_PORTS", "8000")
            .publish(8000)
            .run_args();
        let name = &args[3];
        assert!(name.starts_with(NAME_PREFIX), "{name}");
        assert!(args.contains(&"sandport.test=1".to_owned()));
        assert!(args.contains(&"conversation_id=abc".to_owned()));
        assert!(args.contains(&"SANDBOX_PORTS=8000".to_owned()));
        assert_eq!(args.last().map(String::as_str), Some("img:1"));
    }

    #[test]
    fn status_line_detection() {
        assert!(is_http_status_line(b"HTTP/1.1 200 OK\r\n"));
        assert!(!is_http_status_line(b"SSH-2.0-OpenSSH"));
        assert!(!is_http_status_line(b"HTTP/1.1"));
    }

    #[test]
    fn tar_has_valid_layout() {
        let tar = single_file_tar("sandbox-server", b"hello", 0o755);
        assert_eq!(tar.len(), 512 + 512 + 1024);
        assert_eq!(&tar[..14], b"sandbox-server");
        assert_eq!(&tar[124..136], b"00000000005\0");
        assert_eq!(&tar[512..517], b"hello");
        let mut header = tar[..512].to_vec();
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        let stored = std::str::from_utf8(&tar[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
    }

    #[test]
    fn elf_check_rejects_non_elf() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"#!/bin/sh\n").unwrap();
        assert!(check_static_elf(&f).is_err());
    }
}
