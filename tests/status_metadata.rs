//! Which built-in kinds keep a metadata change sent through their `/status`
//! subresource (issue 23, item 3): nearly all. Such a change is out of sight of
//! a policy that matches only the main resource, which is why the gate also
//! sees `/status` writes that change metadata and judges them as updates of the
//! object (tests/bypass.rs). This test pins what the API server does, so
//! docs/security.md stays true (a Kubernetes upgrade that changes it fails
//! here). Plain API server behaviour: signoff is not running in this binary.

mod common;

use common::*;

/// (kind as kubectl names it, resource, manifest in namespace NS).
const OBJECTS: &[(&str, &str)] = &[
    (
        "pod",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probe, namespace: NS}\nspec: {containers: [{name: c, image: registry.k8s.io/pause:3.10}]}\n",
    ),
    ("service", "apiVersion: v1\nkind: Service\nmetadata: {name: probe, namespace: NS}\nspec: {ports: [{port: 80}]}\n"),
    (
        "persistentvolumeclaim",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: probe, namespace: NS}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    ),
    (
        "replicationcontroller",
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: probe, namespace: NS}\nspec: {replicas: 0, selector: {app: probe}, template: {metadata: {labels: {app: probe}}, spec: {containers: [{name: c, image: registry.k8s.io/pause:3.10}]}}}\n",
    ),
    (
        "resourcequota",
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: probe, namespace: NS}\nspec: {hard: {pods: \"10\"}}\n",
    ),
    (
        "deployment",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: probe, namespace: NS}\nspec: {replicas: 0, selector: {matchLabels: {app: probe}}, template: {metadata: {labels: {app: probe}}, spec: {containers: [{name: c, image: registry.k8s.io/pause:3.10}]}}}\n",
    ),
    (
        "statefulset",
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: probe, namespace: NS}\nspec: {replicas: 0, serviceName: probe, selector: {matchLabels: {app: probe}}, template: {metadata: {labels: {app: probe}}, spec: {containers: [{name: c, image: registry.k8s.io/pause:3.10}]}}}\n",
    ),
    (
        "daemonset",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: probe, namespace: NS}\nspec: {selector: {matchLabels: {app: probe}}, template: {metadata: {labels: {app: probe}}, spec: {containers: [{name: c, image: registry.k8s.io/pause:3.10}]}}}\n",
    ),
    (
        "replicaset",
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: probe, namespace: NS}\nspec: {replicas: 0, selector: {matchLabels: {app: probe}}, template: {metadata: {labels: {app: probe}}, spec: {containers: [{name: c, image: registry.k8s.io/pause:3.10}]}}}\n",
    ),
    (
        "job",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: probe, namespace: NS}\nspec: {suspend: true, template: {spec: {restartPolicy: Never, containers: [{name: c, image: registry.k8s.io/pause:3.10}]}}}\n",
    ),
    (
        "cronjob",
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: probe, namespace: NS}\nspec: {schedule: \"0 0 * * *\", suspend: true, jobTemplate: {spec: {template: {spec: {restartPolicy: Never, containers: [{name: c, image: registry.k8s.io/pause:3.10}]}}}}}\n",
    ),
    (
        "horizontalpodautoscaler",
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: probe, namespace: NS}\nspec: {maxReplicas: 2, scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: probe}}\n",
    ),
    (
        "ingress",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: probe, namespace: NS}\nspec: {defaultBackend: {service: {name: probe, port: {number: 80}}}}\n",
    ),
    (
        "poddisruptionbudget",
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: probe, namespace: NS}\nspec: {maxUnavailable: 1, selector: {matchLabels: {app: probe}}}\n",
    ),
];

#[test]
fn metadata_changes_through_status_are_kept_by_most_built_in_kinds() {
    let cp = cp();
    let ns = namespace(cp, "status-meta", &[]);
    let mut kept = Vec::new();
    for (kind, manifest) in OBJECTS {
        kubectl_ok(cp, ADMIN, &["create", "-f", "-"], Some(&manifest.replace("NS", &ns)));
        let patch = r#"{"metadata":{"labels":{"probe":"through-status"}}}"#;
        kubectl_ok(
            cp,
            ADMIN,
            &["patch", kind, "probe", "-n", &ns, "--subresource=status", "--type=merge", "-p", patch],
            None,
        );
        let label =
            kubectl_ok(cp, ADMIN, &["get", kind, "probe", "-n", &ns, "-o", "jsonpath={.metadata.labels.probe}"], None);
        eprintln!("{kind}/status: a label change is {}", if label.is_empty() { "dropped" } else { "KEPT" });
        if !label.is_empty() {
            kept.push(*kind);
        }
    }
    let mut namespace_kept = false;
    let patch = r#"{"metadata":{"labels":{"probe":"through-status"}}}"#;
    kubectl_ok(cp, ADMIN, &["patch", "namespace", &ns, "--subresource=status", "--type=merge", "-p", patch], None);
    if !kubectl_ok(cp, ADMIN, &["get", "namespace", &ns, "-o", "jsonpath={.metadata.labels.probe}"], None).is_empty() {
        namespace_kept = true;
    }
    eprintln!("kept through /status: {kept:?}; namespace: {namespace_kept}");
    assert!(namespace_kept, "namespaces/status keeps labels (why signoff guards its namespace labels there)");
    assert_eq!(kept, EXPECTED_KEPT, "update docs/security.md (trust anchors) with what /status keeps now");
}

/// Kinds whose `/status` keeps a label change (Kubernetes 1.35): all of the
/// above but Deployment, which resets metadata on status writes.
const EXPECTED_KEPT: &[&str] = &[
    "pod",
    "service",
    "persistentvolumeclaim",
    "replicationcontroller",
    "resourcequota",
    "statefulset",
    "daemonset",
    "replicaset",
    "job",
    "cronjob",
    "horizontalpodautoscaler",
    "ingress",
    "poddisruptionbudget",
];
