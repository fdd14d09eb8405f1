//! `interop-gateway proto export`: what an agency generates its client from
//! is exactly the contract in `proto/` and the descriptor set the binary serves.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use prost::Message;
use prost_types::FileDescriptorSet;

const BIN: &str = env!("CARGO_BIN_EXE_interop-gateway");

/// Every file under `root`, by path relative to it, with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn export(out: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["proto", "export", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn export_writes_the_repository_protos_and_a_descriptor_set_naming_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("contract");
    let run = export(&out);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let mut exported = tree(&out);
    let set_bytes = exported
        .remove(Path::new("interop.binpb"))
        .expect("interop.binpb is written");
    let repo = tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("proto"));
    let repo_protos: BTreeMap<_, _> = repo
        .into_iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    assert_eq!(
        exported.keys().collect::<Vec<_>>(),
        repo_protos.keys().collect::<Vec<_>>(),
        "the export holds exactly the .proto files of proto/"
    );
    for (path, bytes) in &repo_protos {
        assert!(exported[path] == *bytes, "{} differs", path.display());
    }

    let set = FileDescriptorSet::decode(set_bytes.as_slice()).unwrap();
    let files: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    for path in repo_protos.keys() {
        let name = path.to_str().unwrap();
        assert!(files.contains(&name), "{name} is missing from the set");
    }
    let mut services: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(|s| format!("{}.{}", f.package(), s.name()))
        })
        .collect();
    services.sort();
    assert_eq!(
        services,
        [
            "interop.audit.v1.AccessLogService",
            "interop.audit.v1.WitnessService",
            "interop.business.v1.BusinessRegistryService",
            "interop.catalog.v1.CatalogService",
            "interop.citizen.v1.CitizenRegistryService",
            "interop.land.v1.LandRegistryService",
        ]
    );
    // Every service declared in the exported sources is in the set.
    let declared = exported
        .values()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .filter_map(|l| l.strip_prefix("service ").map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .count();
    assert_eq!(declared, services.len());
    // The generated-code options reach protoc through the set as well.
    let citizen = set
        .file
        .iter()
        .find(|f| f.name() == "interop/citizen/v1/citizen.proto")
        .unwrap();
    assert_eq!(
        citizen.options.as_ref().unwrap().go_package(),
        "interop.gov.vn/gateway/genproto/interop/citizen/v1;citizenv1"
    );

    // A second export over the first replaces the files and succeeds.
    assert!(export(&out).status.success());
    assert_eq!(tree(&out).len(), repo_protos.len() + 1);
}

#[test]
fn export_onto_a_file_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, "not a folder").unwrap();
    let run = export(&file);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("is not a folder"), "{stderr}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a folder");
    assert_eq!(tree(dir.path()).len(), 1);
}
