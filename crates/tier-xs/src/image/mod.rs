//! Container images of the agentbus binary, built without Docker.
//!
//! [`build`] turns an ELF binary into an OCI image: one gzip layer with the binary at
//! [`crate::config::IMAGE_BINARY_PATH`], the shared libraries it loads (none for a static
//! musl build; for a glibc build exactly its `DT_NEEDED` closure and the loader, read from
//! this machine), CA certificates, and `/etc/passwd` naming the non-root user. The config
//! sets the entrypoint (`agentbus serve`), the user, the port and the health check. Every
//! byte is a function of the inputs (sorted entries, zero timestamps and owners, no build
//! date), so building twice gives the same digest.
//!
//! With a base image ([`BaseImage`], pulled by [`registry`]) the layer carries only the
//! binary and the base must provide what it links against.

pub mod ecr;
pub mod platform;
pub mod registry;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{Dyn as _, FileHeader, ProgramHeader as _};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::{AGENT_BINARY_PATH, DASHBOARD_PORT, IMAGE_BINARY_PATH};

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The user the server runs as (no login, no shell).
pub const IMAGE_UID: u32 = 10001;
pub const IMAGE_USER: &str = "agentbus";
pub const IMAGE_HOME: &str = "/home/agentbus";
/// Where the image keeps the CA bundle; `SSL_CERT_FILE` points at it.
pub const IMAGE_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where a glibc loader looks for libraries on the distributions we read them from.
const LIBRARY_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// CA bundles of the common distributions, in the order they are tried.
const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Linux ELF executable: {detail}")]
    NotElf { path: PathBuf, detail: String },
    #[error(
        "{binary} needs {library}, which is in none of {dirs}: build a static binary (cargo build --release --target x86_64-unknown-linux-musl) or install the library",
        dirs = LIBRARY_DIRS.join(", ")
    )]
    MissingLibrary { binary: String, library: String },
    #[error(
        "no CA certificate bundle found (looked in {}): install ca-certificates or pass --ca-bundle",
        CA_BUNDLES.join(", ")
    )]
    NoCaBundle,
    #[error("invalid image data: {0}")]
    Invalid(String),
    #[error("registry: {0}")]
    Registry(String),
    /// The registry wants a login it was not given, or refused the one it was.
    #[error("registry: {0}: it asks for a login it was not given or did not accept")]
    Unauthorized(String),
}

/// A content-addressed blob: a config or a layer.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Self {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256_digest(&data),
            data,
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A base image to put the binary on: its config and its layers, in order.
#[derive(Clone, Debug)]
pub struct BaseImage {
    pub reference: String,
    pub config: Value,
    pub layers: Vec<Blob>,
}

/// What goes into an image.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// The binary (an ELF executable): `agentbus` for the server, `agentbus-agent` for the agents.
    pub binary: PathBuf,
    /// Which image: the server's or the agents'.
    pub kind: ImageKind,
    /// CA bundle to include (default: the first of the usual places that exists).
    pub ca_bundle: Option<PathBuf>,
    /// Put the binary on this image instead of an empty one.
    pub base: Option<BaseImage>,
    /// The image's creation time, seconds since the epoch (default 0, or `SOURCE_DATE_EPOCH`
    /// as the caller reads it): a build date would make every build differ.
    pub created_epoch: u64,
}

/// Which of agentbus's images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageKind {
    /// `agentbus serve`: the dashboard, the API and the MCP endpoint on port 8080, with a
    /// health check.
    #[default]
    Server,
    /// `agentbus-agent`: one workflow step per task (or a queue's), no port, no health check.
    Agent,
}

impl ImageKind {
    /// Where the binary goes in the image (and what runs).
    pub fn binary_path(self) -> &'static str {
        match self {
            ImageKind::Server => IMAGE_BINARY_PATH,
            ImageKind::Agent => AGENT_BINARY_PATH,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ImageKind::Server => "agentbus",
            ImageKind::Agent => "agentbus-agent",
        }
    }
}

/// A built image: the exact manifest bytes, its config and layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Vec<u8>,
    pub digest: String,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub summary: Summary,
}

/// What the build found and made, for people.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub digest: String,
    pub architecture: String,
    /// `static` or `dynamic`.
    pub linking: String,
    /// Shared libraries (and the loader) copied into the image, as paths in the image.
    pub libraries: Vec<String>,
    pub binary_bytes: u64,
    /// Sum of the compressed layers (what a registry stores and a task pulls).
    pub compressed_bytes: u64,
    /// Uncompressed size of the layer this build made.
    pub layer_bytes: u64,
    pub base: Option<String>,
}

/// The ELF facts the image needs.
#[derive(Debug)]
struct ElfInfo {
    architecture: &'static str,
    interpreter: Option<String>,
    needed: Vec<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn elf_info(path: &Path, data: &[u8]) -> Result<ElfInfo, ImageError> {
    let not_elf = |detail: String| ImageError::NotElf {
        path: path.to_path_buf(),
        detail,
    };
    let header = elf::FileHeader64::<object::Endianness>::parse(data)
        .map_err(|e| not_elf(format!("{e} (only 64-bit ELF is supported)")))?;
    let endian = header.endian().map_err(|e| not_elf(e.to_string()))?;
    let architecture = match header.e_machine(endian) {
        elf::EM_X86_64 => "amd64",
        elf::EM_AARCH64 => "arm64",
        m => return Err(not_elf(format!("machine type {m} is not amd64 or arm64"))),
    };
    let mut interpreter = None;
    for ph in header
        .program_headers(endian, data)
        .map_err(|e| not_elf(e.to_string()))?
    {
        if let Some(i) = ph
            .interpreter(endian, data)
            .map_err(|e| not_elf(e.to_string()))?
        {
            interpreter = Some(String::from_utf8_lossy(i).into_owned());
        }
    }
    let sections = header
        .sections(endian, data)
        .map_err(|e| not_elf(e.to_string()))?;
    let mut needed = Vec::new();
    if let Some((dyns, link)) = sections
        .dynamic(endian, data)
        .map_err(|e| not_elf(e.to_string()))?
    {
        let strings = sections
            .strings(endian, data, link)
            .map_err(|e| not_elf(e.to_string()))?;
        for d in dyns {
            if d.tag(endian) == elf::DT_NEEDED {
                let name = d
                    .string(endian, strings)
                    .map_err(|e| not_elf(e.to_string()))?;
                needed.push(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(ElfInfo {
        architecture,
        interpreter,
        needed,
    })
}

fn find_library(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    LIBRARY_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The loader and every shared library `binary` needs, transitively: (path in the image,
/// contents). Paths are where this machine's loader finds them, which is where the same
/// loader finds them in the image.
fn library_closure(binary: &Path, info: &ElfInfo) -> Result<BTreeMap<String, Vec<u8>>, ImageError> {
    let mut files = BTreeMap::new();
    let Some(interp) = &info.interpreter else {
        return Ok(files);
    };
    let binary_name = binary.display().to_string();
    let interp_path = PathBuf::from(interp);
    files.insert(interp.clone(), read(&interp_path)?);
    let mut queue: VecDeque<(String, String)> = info
        .needed
        .iter()
        .map(|n| (binary_name.clone(), n.clone()))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((who, name)) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let path = find_library(&name).ok_or_else(|| ImageError::MissingLibrary {
            binary: who.clone(),
            library: name.clone(),
        })?;
        let data = read(&path)?;
        let lib = elf_info(&path, &data)?;
        for n in lib.needed {
            queue.push_back((path.display().to_string(), n));
        }
        // The loader is also the library `ld-linux-*.so.2`; keep it once, at its own path.
        if path.file_name() != interp_path.file_name() {
            files.insert(path.display().to_string(), data);
        }
    }
    Ok(files)
}

fn find_ca_bundle(given: Option<&Path>) -> Result<Vec<u8>, ImageError> {
    if let Some(p) = given {
        return read(p);
    }
    CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or(ImageError::NoCaBundle)
        .and_then(read)
}

/// One file or directory of the layer.
enum Entry {
    Dir { mode: u32, uid: u32 },
    File { mode: u32, data: Vec<u8> },
}

/// A deterministic tar of `entries` (paths without a leading `/`), parents first, then
/// gzip at a fixed level with a zero timestamp. Returns (uncompressed, compressed).
fn layer(entries: BTreeMap<String, Entry>) -> Result<(Vec<u8>, Vec<u8>), ImageError> {
    // Every parent directory gets its own entry, so owners and modes are explicit.
    let mut all: BTreeMap<String, Entry> = BTreeMap::new();
    for path in entries.keys() {
        let mut p = Path::new(path).parent();
        while let Some(dir) = p.filter(|d| !d.as_os_str().is_empty()) {
            all.entry(dir.display().to_string()).or_insert(Entry::Dir {
                mode: 0o755,
                uid: 0,
            });
            p = dir.parent();
        }
    }
    all.extend(entries);
    let invalid = |e: std::io::Error| ImageError::Invalid(format!("writing the layer: {e}"));
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in &all {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_gid(0);
        match entry {
            Entry::Dir { mode, uid } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_uid(u64::from(*uid));
                h.set_size(0);
                h.set_cksum();
                tar.append_data(&mut h, format!("{path}/"), std::io::empty())
                    .map_err(invalid)?;
            }
            Entry::File { mode, data } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(0);
                h.set_size(data.len() as u64);
                h.set_cksum();
                tar.append_data(&mut h, path, data.as_slice())
                    .map_err(invalid)?;
            }
        }
    }
    let raw = tar.into_inner().map_err(invalid)?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&raw).map_err(invalid)?;
    let compressed = gz.finish().map_err(invalid)?;
    Ok((raw, compressed))
}

fn rfc3339(epoch: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// The image architecture (`amd64`, `arm64`) of an ELF executable.
pub fn architecture(binary: &Path) -> Result<String, ImageError> {
    let data = read(binary)?;
    Ok(elf_info(binary, &data)?.architecture.to_string())
}

/// Builds the image. Pure: reads the binary (and libraries, CA bundle) and returns bytes.
pub fn build(opts: &BuildOptions) -> Result<Image, ImageError> {
    let binary = read(&opts.binary)?;
    let info = elf_info(&opts.binary, &binary)?;
    let binary_bytes = binary.len() as u64;
    let bin_path = opts.kind.binary_path().trim_start_matches('/').to_string();

    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut libraries = Vec::new();
    entries.insert(
        IMAGE_HOME.trim_start_matches('/').into(),
        Entry::Dir {
            mode: 0o750,
            uid: IMAGE_UID,
        },
    );
    if opts.base.is_none() {
        for (path, data) in library_closure(&opts.binary, &info)? {
            libraries.push(path.clone());
            entries.insert(
                path.trim_start_matches('/').into(),
                Entry::File { mode: 0o755, data },
            );
        }
        entries.insert(
            IMAGE_CA_BUNDLE.trim_start_matches('/').into(),
            Entry::File {
                mode: 0o644,
                data: find_ca_bundle(opts.ca_bundle.as_deref())?,
            },
        );
        entries.insert(
            "etc/passwd".into(),
            Entry::File {
                mode: 0o644,
                data: format!(
                    "root:x:0:0:root:/root:/sbin/nologin\n{IMAGE_USER}:x:{IMAGE_UID}:{IMAGE_UID}:{IMAGE_USER}:{IMAGE_HOME}:/sbin/nologin\n"
                )
                .into_bytes(),
            },
        );
        entries.insert(
            "etc/group".into(),
            Entry::File {
                mode: 0o644,
                data: format!("root:x:0:\n{IMAGE_USER}:x:{IMAGE_UID}:\n").into_bytes(),
            },
        );
        entries.insert(
            "tmp".into(),
            Entry::Dir {
                mode: 0o1777,
                uid: 0,
            },
        );
    }
    entries.insert(
        bin_path,
        Entry::File {
            mode: 0o755,
            data: binary,
        },
    );
    let (raw, compressed) = layer(entries)?;
    let layer_bytes = raw.len() as u64;
    let diff_id = sha256_digest(&raw);
    let own_layer = Blob::new(MEDIA_LAYER, compressed);

    let linking = if info.interpreter.is_some() {
        "dynamic"
    } else {
        "static"
    };
    let created = rfc3339(opts.created_epoch);
    let history_entry = json!({
        "created": created,
        "created_by": format!(
            "agentbus image build: {} ({linking}{})",
            opts.kind.binary_path(),
            if libraries.is_empty() { String::new() } else { format!(", {} shared libraries, CA certificates", libraries.len()) }
        ),
    });
    let mut env = vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        format!("SSL_CERT_FILE={IMAGE_CA_BUNDLE}"),
        format!("HOME={IMAGE_HOME}"),
    ];
    let (mut layers, mut diff_ids, mut history, base_ref) = match &opts.base {
        Some(base) => {
            let ids: Vec<Value> = base.config["rootfs"]["diff_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if ids.len() != base.layers.len() {
                return Err(ImageError::Invalid(format!(
                    "base image {}: {} layers but {} diff_ids in its config",
                    base.reference,
                    base.layers.len(),
                    ids.len()
                )));
            }
            if let Some(arch) = base.config["architecture"].as_str()
                && arch != info.architecture
            {
                return Err(ImageError::Invalid(format!(
                    "base image {} is {arch}, the binary is {}",
                    base.reference, info.architecture
                )));
            }
            // Keep the base's variables unless ours set the same name.
            let ours: BTreeSet<String> = env
                .iter()
                .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
                .collect();
            let mut merged: Vec<String> = base.config["config"]["Env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .filter(|e| !ours.contains(e.split('=').next().unwrap_or("")))
                .map(str::to_string)
                .collect();
            merged.append(&mut env);
            env = merged;
            let history = base.config["history"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (
                base.layers.clone(),
                ids,
                history,
                Some(base.reference.clone()),
            )
        }
        None => (Vec::new(), Vec::new(), Vec::new(), None),
    };
    layers.push(own_layer);
    diff_ids.push(json!(diff_id));
    history.push(history_entry);

    let labels = json!({
        "org.opencontainers.image.title": opts.kind.title(),
        "org.opencontainers.image.version": env!("CARGO_PKG_VERSION"),
        "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
    });
    let run = match opts.kind {
        ImageKind::Server => json!({
            "User": format!("{IMAGE_UID}:{IMAGE_UID}"),
            "Env": env,
            "Entrypoint": [IMAGE_BINARY_PATH],
            "Cmd": ["serve"],
            "WorkingDir": IMAGE_HOME,
            "ExposedPorts": { format!("{DASHBOARD_PORT}/tcp"): {} },
            "Labels": labels,
            // Docker and its descendants read this; ECS takes the task definition's check,
            // which runs the same command.
            "Healthcheck": {
                "Test": ["CMD", IMAGE_BINARY_PATH, "healthcheck"],
                "Interval": 30_000_000_000u64,
                "Timeout": 5_000_000_000u64,
                "StartPeriod": 10_000_000_000u64,
                "Retries": 3,
            },
        }),
        // An agent does one step and exits (or serves a queue): no port, no health check.
        ImageKind::Agent => json!({
            "User": format!("{IMAGE_UID}:{IMAGE_UID}"),
            "Env": env,
            "Entrypoint": [AGENT_BINARY_PATH],
            "WorkingDir": IMAGE_HOME,
            "Labels": labels,
        }),
    };
    let config = json!({
        "created": created,
        "architecture": info.architecture,
        "os": "linux",
        "config": run,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    let config = Blob::new(
        MEDIA_CONFIG,
        serde_json::to_vec(&config).map_err(|e| ImageError::Invalid(e.to_string()))?,
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| ImageError::Invalid(e.to_string()))?;
    let digest = sha256_digest(&manifest);
    let compressed_bytes = layers.iter().map(|l| l.data.len() as u64).sum();
    Ok(Image {
        summary: Summary {
            digest: digest.clone(),
            architecture: info.architecture.to_string(),
            linking: linking.to_string(),
            libraries,
            binary_bytes,
            compressed_bytes,
            layer_bytes,
            base: base_ref,
        },
        manifest,
        digest,
        config,
        layers,
    })
}

impl Image {
    /// Writes the image as an OCI image layout (`oci-layout`, `index.json`, `blobs/`),
    /// which skopeo, crane, podman and containerd read.
    pub fn write_layout(&self, dir: &Path, tag: &str) -> Result<(), ImageError> {
        let write = |path: PathBuf, data: &[u8]| -> Result<(), ImageError> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| ImageError::Write {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, data).map_err(|source| ImageError::Write { path, source })
        };
        let blob_path = |digest: &str| {
            dir.join("blobs")
                .join("sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        for b in self.layers.iter().chain(std::iter::once(&self.config)) {
            write(blob_path(&b.digest), &b.data)?;
        }
        write(blob_path(&self.digest), &self.manifest)?;
        write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [{
                "mediaType": MEDIA_MANIFEST,
                "digest": self.digest,
                "size": self.manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        write(
            dir.join("index.json"),
            &serde_json::to_vec_pretty(&index).map_err(|e| ImageError::Invalid(e.to_string()))?,
        )
    }

    /// The tag a push gives this image: the version and the start of the digest, so an
    /// immutable repository never sees one tag for two images.
    pub fn default_tag(&self) -> String {
        let hex = self.digest.trim_start_matches("sha256:");
        format!(
            "{}-{}",
            env!("CARGO_PKG_VERSION"),
            &hex[..12.min(hex.len())]
        )
    }
}

#[cfg(test)]
mod tests;
