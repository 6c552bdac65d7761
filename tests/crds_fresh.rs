//! `crds/` and `charts/signoff/files/crds/` are generated from the Rust types; this fails
//! when either copy is stale.

#[test]
fn generated_crds_are_up_to_date() {
    let root = signoff_testenv::checkout().unwrap_or_else(|e| panic!("{e}"));
    let expected = signoff::crd::crd_files();
    assert_eq!(expected.len(), 4, "four resource types");
    for dir in ["crds", "charts/signoff/files/crds"] {
        for (file, yaml) in &expected {
            let path = root.join(dir).join(file);
            let actual = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(actual == *yaml, "{} is stale or missing: run `make crds`", path.display());
        }
        let mut present: Vec<String> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}: run `make crds`"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        present.sort();
        let mut wanted: Vec<String> = expected.iter().map(|(f, _)| f.clone()).collect();
        wanted.sort();
        assert_eq!(present, wanted, "{dir} holds files that are not generated: run `make crds`");
    }
}

#[test]
fn every_schema_property_has_a_description() {
    // Doc comments become `kubectl explain` text; a field without one is a defect.
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let here = format!("{path}.{name}");
                let top_level =
                    path.matches('.').count() == 0 && ["apiVersion", "kind", "metadata"].contains(&name.as_str());
                if prop.get("description").is_none() && !top_level {
                    missing.push(here.clone());
                }
                walk(&here, prop, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in signoff::crd::all_crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        walk(&crd.spec.names.kind, &schema["openAPIV3Schema"], &mut missing);
    }
    assert!(missing.is_empty(), "fields without a doc comment:\n{}", missing.join("\n"));
}
