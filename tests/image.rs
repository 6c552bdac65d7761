//! The container image (`make image`, hack/image/build.sh), built here without
//! pulling anything: an OCI archive tagged with the crate version, non-root,
//! signoff as its entrypoint, static binaries that run on their own.

use std::process::Command;

fn root() -> std::path::PathBuf {
    signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_image_is_an_oci_archive_of_static_non_root_binaries() {
    let out = Command::new(root().join("hack/image/build.sh")).current_dir(root()).output().unwrap();
    assert!(out.status.success(), "hack/image/build.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let archive = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let version = env!("CARGO_PKG_VERSION");
    assert!(archive.ends_with(&format!("signoff-{version}.oci.tar")), "{archive}");

    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let untar = Command::new("tar").args(["-C", layout.to_str().unwrap(), "-xf", &archive]).status().unwrap();
    assert!(untar.success());
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(tags, [version], "one image, tagged with the crate version");

    let bundle = dir.path().join("bundle");
    let image = format!("{}:{version}", layout.display());
    let unpack = Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image, bundle.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(unpack.status.success(), "{}", String::from_utf8_lossy(&unpack.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["user"]["uid"], 65532, "non-root");
    assert_eq!(config["process"]["user"]["gid"], 65532);
    assert_eq!(config["process"]["args"], serde_json::json!(["/usr/local/bin/signoff", "run"]));
    let rootfs = bundle.join("rootfs");
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file(), "CA certificates for HTTPS sinks");
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532"), "{passwd}");

    for binary in ["signoff", "kubectl-signoff"] {
        let path = rootfs.join("usr/local/bin").join(binary);
        // Static: nothing for a dynamic loader to find in a scratch image.
        let ldd = Command::new("ldd").arg(&path).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
        assert!(text.contains("statically linked") || text.contains("not a dynamic executable"), "{binary}: {text}");
    }
    // The entrypoint works on its own: it prints the CRDs the chart installs.
    let crds = Command::new(rootfs.join("usr/local/bin/signoff")).arg("crds").env_clear().output().unwrap();
    assert!(crds.status.success());
    assert_eq!(String::from_utf8(crds.stdout).unwrap(), signoff::crd::crds_yaml());
    let help = Command::new(rootfs.join("usr/local/bin/kubectl-signoff")).arg("--help").env_clear().output().unwrap();
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("approve"));
}
