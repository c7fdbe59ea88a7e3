//! The CPU architecture a Fargate task needs to run an image, read from the image itself:
//! an index lists its platforms, a single manifest's config names its `architecture` (OCI
//! image spec, "Image Configuration": a required property). ECS runs a task definition
//! without `runtimePlatform` on X86_64, so an arm64 image there cannot start; the task
//! definition names what the image was built for.

use serde_json::Value;

/// A CPU architecture Fargate runs Linux tasks on (`RuntimePlatform.cpuArchitecture`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuArchitecture {
    /// ECS's default when a task definition names none.
    #[default]
    X86_64,
    Arm64,
}

impl CpuArchitecture {
    /// ECS's name: `X86_64`, `ARM64`.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuArchitecture::X86_64 => "X86_64",
            CpuArchitecture::Arm64 => "ARM64",
        }
    }

    /// From ECS's name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "X86_64" => Some(CpuArchitecture::X86_64),
            "ARM64" => Some(CpuArchitecture::Arm64),
            _ => None,
        }
    }

    /// From the OCI/Go name an image's config or index uses (`amd64`, `arm64`).
    pub fn from_oci(s: &str) -> Option<Self> {
        match s {
            "amd64" => Some(CpuArchitecture::X86_64),
            "arm64" => Some(CpuArchitecture::Arm64),
            _ => None,
        }
    }
}

/// What an image's top manifest tells of its platforms.
#[derive(Debug, PartialEq)]
pub enum Manifest {
    /// An index (multi-platform image): `(os, architecture)` of each entry.
    Index(Vec<(String, String)>),
    /// A single image: the digest of its config, which names the architecture.
    Single { config_digest: String },
}

/// Reads a manifest or index (OCI or Docker v2).
pub fn read_manifest(image: &str, manifest: &Value) -> Result<Manifest, String> {
    if let Some(entries) = manifest.get("manifests") {
        let platforms = entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let p = &m["platform"];
                (
                    p["os"].as_str().unwrap_or_default().to_string(),
                    p["architecture"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        return Ok(Manifest::Index(platforms));
    }
    manifest["config"]["digest"]
        .as_str()
        .map(|d| Manifest::Single {
            config_digest: d.to_string(),
        })
        .ok_or_else(|| format!("image {image}: its manifest names no config"))
}

/// The architecture a task runs a multi-platform image on: X86_64 when the index has a
/// linux/amd64 image (what ECS picks without `runtimePlatform`), else ARM64 when it has
/// linux/arm64. Entries of other platforms (`unknown/unknown` attestations, Windows) are
/// not for Fargate's Linux tasks.
pub fn choose(image: &str, platforms: &[(String, String)]) -> Result<CpuArchitecture, String> {
    let linux: Vec<CpuArchitecture> = platforms
        .iter()
        .filter(|(os, _)| os == "linux")
        .filter_map(|(_, a)| CpuArchitecture::from_oci(a))
        .collect();
    [CpuArchitecture::X86_64, CpuArchitecture::Arm64]
        .into_iter()
        .find(|a| linux.contains(a))
        .ok_or_else(|| {
            let offered: Vec<String> = platforms.iter().map(|(o, a)| format!("{o}/{a}")).collect();
            format!(
                "image {image} has no linux/amd64 or linux/arm64 image (it offers {}): Fargate runs only those",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            )
        })
}

/// The architecture an image's config names.
pub fn from_config(image: &str, config: &Value) -> Result<CpuArchitecture, String> {
    let os = config["os"].as_str().unwrap_or("linux");
    let arch = config["architecture"].as_str().unwrap_or_default();
    if arch.is_empty() {
        return Err(format!(
            "image {image}: its config names no architecture, so the task cannot ask Fargate for one"
        ));
    }
    match CpuArchitecture::from_oci(arch) {
        Some(a) if os == "linux" => Ok(a),
        _ => Err(format!(
            "image {image} is built for {os}/{arch}: Fargate runs only linux/amd64 and linux/arm64"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(os: &str, arch: &str) -> (String, String) {
        (os.to_string(), arch.to_string())
    }

    #[test]
    fn an_index_runs_on_x86_64_when_it_has_amd64_and_on_arm64_when_that_is_all_it_has() {
        let both = [
            p("linux", "arm64"),
            p("linux", "amd64"),
            p("unknown", "unknown"),
        ];
        assert_eq!(choose("i", &both), Ok(CpuArchitecture::X86_64));
        let arm = [p("linux", "arm64"), p("unknown", "unknown")];
        assert_eq!(choose("i", &arm), Ok(CpuArchitecture::Arm64));
        let other = [p("linux", "s390x"), p("windows", "amd64")];
        let e = choose("i", &other).unwrap_err();
        assert!(e.contains("linux/s390x, windows/amd64"), "{e}");
        assert!(choose("i", &[]).unwrap_err().contains("offers none"));
    }

    #[test]
    fn a_config_names_the_architecture_or_the_image_is_refused() {
        let c = |os: &str, arch: &str| json!({"os": os, "architecture": arch});
        assert_eq!(
            from_config("i", &c("linux", "amd64")),
            Ok(CpuArchitecture::X86_64)
        );
        assert_eq!(
            from_config("i", &c("linux", "arm64")),
            Ok(CpuArchitecture::Arm64)
        );
        let e = from_config("i", &c("linux", "ppc64le")).unwrap_err();
        assert!(e.contains("linux/ppc64le"), "{e}");
        let e = from_config("i", &c("windows", "amd64")).unwrap_err();
        assert!(e.contains("windows/amd64"), "{e}");
        let e = from_config("i", &json!({})).unwrap_err();
        assert!(e.contains("names no architecture"), "{e}");
    }

    #[test]
    fn manifests_and_indexes_are_told_apart() {
        let index = json!({"manifests": [{"digest": "sha256:a", "platform": {"os": "linux", "architecture": "arm64"}}]});
        assert_eq!(
            read_manifest("i", &index),
            Ok(Manifest::Index(vec![p("linux", "arm64")]))
        );
        let single = json!({"config": {"digest": "sha256:c"}, "layers": []});
        assert_eq!(
            read_manifest("i", &single),
            Ok(Manifest::Single {
                config_digest: "sha256:c".into()
            })
        );
        assert!(read_manifest("i", &json!({})).is_err());
    }

    #[test]
    fn ecs_names_read_back() {
        for a in [CpuArchitecture::X86_64, CpuArchitecture::Arm64] {
            assert_eq!(CpuArchitecture::parse(a.as_str()), Some(a));
        }
        assert_eq!(CpuArchitecture::parse("x86"), None);
    }
}
