use std::collections::BTreeMap;
use std::io::Read;

use super::registry::{Registry, is_loopback};
use super::*;

/// The test binary itself: a dynamically linked ELF executable of this machine.
fn this_binary() -> PathBuf {
    std::env::current_exe().expect("current exe")
}

/// One build shared by the tests that only read it (compressing the binary takes a moment).
fn built() -> &'static Image {
    static IMG: std::sync::OnceLock<Image> = std::sync::OnceLock::new();
    IMG.get_or_init(|| build(&opts()).expect("build"))
}

fn opts() -> BuildOptions {
    BuildOptions {
        binary: this_binary(),
        ..BuildOptions::default()
    }
}

/// (path, mode, uid, mtime, size) of every entry of a gzip layer.
fn entries(layer: &[u8]) -> BTreeMap<String, (u32, u64, u64, u64)> {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(layer)
        .read_to_end(&mut raw)
        .expect("gunzip");
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(raw.as_slice());
    for e in ar.entries().expect("entries") {
        let e = e.expect("entry");
        let h = e.header();
        out.insert(
            e.path().expect("path").display().to_string(),
            (
                h.mode().expect("mode"),
                h.uid().expect("uid"),
                h.mtime().expect("mtime"),
                h.size().expect("size"),
            ),
        );
    }
    out
}

fn config(img: &Image) -> Value {
    serde_json::from_slice(&img.config.data).expect("config json")
}

#[test]
fn building_twice_gives_the_same_digest() {
    let a = built();
    let b = build(&opts()).expect("build");
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.layers[0].data, b.layers[0].data);
    assert_eq!(a.digest, sha256_digest(&a.manifest));
    assert!(a.digest.starts_with("sha256:") && a.digest.len() == 71);
}

#[test]
fn a_dynamic_binary_gets_its_loader_and_libraries() {
    let img = built();
    assert_eq!(img.summary.linking, "dynamic");
    let libs = &img.summary.libraries;
    assert!(libs.iter().any(|l| l.ends_with("/libc.so.6")), "{libs:?}");
    assert!(libs.iter().any(|l| l.contains("ld-linux")), "{libs:?}");
    let files = entries(&img.layers[0].data);
    for l in libs {
        let (mode, uid, _, size) = files[l.trim_start_matches('/')];
        assert_eq!((mode, uid), (0o755, 0), "{l}");
        assert!(size > 0, "{l}");
    }
}

#[test]
fn the_layer_is_deterministic_and_owned_as_documented() {
    let img = built();
    assert_eq!(img.layers.len(), 1);
    let files = entries(&img.layers[0].data);
    let bin = files["usr/local/bin/agentbus"];
    assert_eq!(bin.0, 0o755);
    assert_eq!(bin.3, std::fs::metadata(this_binary()).expect("meta").len());
    assert_eq!(files["home/agentbus/"].1, u64::from(IMAGE_UID));
    assert_eq!(files["tmp/"].0, 0o1777);
    assert!(files["etc/ssl/certs/ca-certificates.crt"].3 > 1000);
    assert!(files.values().all(|(_, _, mtime, _)| *mtime == 0));
    // Parents come before children, so the tar extracts anywhere.
    let order: Vec<String> = {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(img.layers[0].data.as_slice())
            .read_to_end(&mut raw)
            .expect("gunzip");
        let mut ar = tar::Archive::new(raw.as_slice());
        ar.entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect()
    };
    let pos = |p: &str| order.iter().position(|x| x == p).expect(p);
    assert!(
        pos("usr/") < pos("usr/local/") && pos("usr/local/bin/") < pos("usr/local/bin/agentbus")
    );
}

#[test]
fn the_config_runs_the_server_as_a_non_root_user() {
    let img = built();
    let c = config(img);
    assert_eq!(c["os"], "linux");
    assert_eq!(c["architecture"], "amd64");
    assert_eq!(c["created"], "1970-01-01T00:00:00Z");
    assert_eq!(c["config"]["User"], "10001:10001");
    assert_eq!(
        c["config"]["Entrypoint"],
        json!(["/usr/local/bin/agentbus"])
    );
    assert_eq!(c["config"]["Cmd"], json!(["serve"]));
    assert_eq!(c["config"]["ExposedPorts"], json!({"8080/tcp": {}}));
    assert_eq!(
        c["config"]["Healthcheck"]["Test"],
        json!(["CMD", "/usr/local/bin/agentbus", "healthcheck"])
    );
    let env: Vec<&str> = c["config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"));
    // The diff id is the digest of the uncompressed layer.
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(img.layers[0].data.as_slice())
        .read_to_end(&mut raw)
        .expect("gunzip");
    assert_eq!(c["rootfs"]["diff_ids"], json!([sha256_digest(&raw)]));
    let m: Value = serde_json::from_slice(&img.manifest).expect("manifest");
    assert_eq!(m["config"]["digest"], json!(img.config.digest));
    assert_eq!(m["layers"][0]["size"], json!(img.layers[0].data.len()));
    assert_eq!(m["mediaType"], MEDIA_MANIFEST);
}

#[test]
fn a_base_image_keeps_its_layers_and_environment() {
    let first = built();
    let mut base_config = config(first);
    base_config["config"]["Env"] = json!(["PATH=/base/bin", "LANG=C.UTF-8"]);
    let base = BaseImage {
        reference: "127.0.0.1:5000/base:1".into(),
        config: base_config,
        layers: first.layers.clone(),
    };
    let img = build(&BuildOptions {
        base: Some(base),
        ..opts()
    })
    .expect("build on base");
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.layers[0].digest, first.layers[0].digest);
    let c = config(&img);
    assert_eq!(c["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(c["history"].as_array().map(Vec::len), Some(2));
    let env = c["config"]["Env"].to_string();
    assert!(
        env.contains("LANG=C.UTF-8") && !env.contains("/base/bin"),
        "{env}"
    );
    // On a base, the layer carries the binary only: the base provides the rest.
    let files = entries(&img.layers[1].data);
    assert!(files.contains_key("usr/local/bin/agentbus"));
    assert!(!files.keys().any(|f| f.contains("libc")), "{files:?}");
    assert!(img.summary.libraries.is_empty());
}

#[test]
fn a_base_image_of_another_architecture_is_refused() {
    let first = built();
    let mut c = config(first);
    c["architecture"] = json!("arm64");
    let err = build(&BuildOptions {
        base: Some(BaseImage {
            reference: "base".into(),
            config: c,
            layers: first.layers.clone(),
        }),
        ..opts()
    })
    .expect_err("arch mismatch");
    assert!(err.to_string().contains("arm64"), "{err}");
}

#[test]
fn a_file_that_is_not_an_executable_is_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("agentbus-img-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("not-elf");
    std::fs::write(&f, b"#!/bin/sh\necho hi\n").expect("write");
    let err = build(&BuildOptions {
        binary: f.clone(),
        ..BuildOptions::default()
    })
    .expect_err("not elf");
    assert!(
        err.to_string().contains("not a Linux ELF executable"),
        "{err}"
    );
    let err = build(&BuildOptions {
        binary: dir.join("missing"),
        ..BuildOptions::default()
    })
    .expect_err("missing");
    assert!(err.to_string().contains("cannot read"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_layout_holds_every_blob_under_its_digest() {
    let img = built();
    let dir = std::env::temp_dir().join(format!("agentbus-layout-{}", std::process::id()));
    img.write_layout(&dir, "test").expect("layout");
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).expect("index"))
            .expect("json");
    assert_eq!(index["manifests"][0]["digest"], json!(img.digest));
    for d in [&img.digest, &img.config.digest, &img.layers[0].digest] {
        let data = std::fs::read(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .expect("blob");
        assert_eq!(&sha256_digest(&data), d);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn plain_http_is_only_for_loopback() {
    for h in [
        "127.0.0.1:5000",
        "localhost:5000",
        "[::1]:5000",
        "127.0.0.2",
        "localhost",
    ] {
        assert!(is_loopback(h), "{h}");
    }
    for h in [
        "registry.example.com",
        "10.0.0.1:5000",
        "localhost.example.com:5000",
    ] {
        assert!(!is_loopback(h), "{h}");
    }
    let err = Registry::new(
        "registry.example.com",
        oci_client::secrets::RegistryAuth::Anonymous,
        true,
    )
    .err()
    .expect("refused");
    assert!(
        err.to_string()
            .contains("only for a registry on this machine"),
        "{err}"
    );
    assert!(Registry::new("a/b", oci_client::secrets::RegistryAuth::Anonymous, false).is_err());
}

#[test]
fn the_default_tag_names_version_and_digest() {
    let img = built();
    let tag = img.default_tag();
    let hex = img.digest.trim_start_matches("sha256:");
    assert_eq!(tag, format!("{}-{}", env!("CARGO_PKG_VERSION"), &hex[..12]));
}

#[test]
fn a_static_binary_needs_no_libraries() {
    // Debian's ldconfig is a static-pie executable: no loader, no DT_NEEDED.
    let img = build(&BuildOptions {
        binary: PathBuf::from("/sbin/ldconfig"),
        ..BuildOptions::default()
    })
    .expect("build from a static binary (Debian's /sbin/ldconfig)");
    assert_eq!(img.summary.linking, "static");
    assert!(img.summary.libraries.is_empty());
    let files = entries(&img.layers[0].data);
    assert!(files.contains_key("usr/local/bin/agentbus"));
    assert!(files.contains_key("etc/ssl/certs/ca-certificates.crt"));
    assert!(!files.keys().any(|f| f.contains("lib")), "{files:?}");
}

#[test]
fn the_agents_image_runs_agentbus_agent_with_no_port_and_no_health_check() {
    let img = build(&BuildOptions {
        kind: super::ImageKind::Agent,
        ..opts()
    })
    .expect("build the agents' image");
    let c = config(&img);
    assert_eq!(
        c["config"]["Entrypoint"],
        json!(["/usr/local/bin/agentbus-agent"])
    );
    assert!(c["config"].get("Cmd").is_none(), "{c}");
    assert!(c["config"].get("ExposedPorts").is_none(), "{c}");
    assert!(c["config"].get("Healthcheck").is_none(), "{c}");
    assert_eq!(c["config"]["User"], "10001:10001");
    assert_eq!(
        c["config"]["Labels"]["org.opencontainers.image.title"],
        "agentbus-agent"
    );
    let files = entries(&img.layers.last().expect("a layer").data);
    assert!(
        files.contains_key("usr/local/bin/agentbus-agent"),
        "{files:?}"
    );
    assert!(!files.contains_key("usr/local/bin/agentbus"));
    assert_ne!(img.digest, built().digest, "another image");
}
