#!/usr/bin/env python3
"""Writes the seed corpus of each fuzz target (fuzz/corpus/<target>/) from the
objects of examples/manifests, as the API server would send them: AdmissionReviews
of CREATE, UPDATE (with server-set fields on the stored object), DELETE, CONNECT,
dry runs and subresource writes. Run from the repository root: python3 fuzz/seeds.py
Each file is named after a hash of its content, so reruns do not duplicate."""

import copy
import hashlib
import json
import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

# kind -> (group, version, resource); mirrors RESOURCES in fuzz/src/lib.rs.
KINDS = {
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "ConfigMap": ("", "v1", "configmaps"),
    "Secret": ("", "v1", "secrets"),
    "Service": ("", "v1", "services"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims"),
    "Namespace": ("", "v1", "namespaces"),
    "Ingress": ("networking.k8s.io", "v1", "ingresses"),
    "Role": ("rbac.authorization.k8s.io", "v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
}
# classify header byte 0 picks RESOURCES[b % 17] and subresource index b // 17.
RESOURCE_INDEX = {
    "deployments": 0, "statefulsets": 1, "configmaps": 5, "secrets": 6, "services": 7,
    "persistentvolumeclaims": 8, "namespaces": 9, "pods": 10, "serviceaccounts": 11,
    "ingresses": 12, "roles": 13, "rolebindings": 14, "clusterrolebindings": 16,
}
OPS = {"CREATE": 0, "UPDATE": 1, "DELETE": 2, "CONNECT": 3}
NAMESPACES = {"payments-prod": 0, "payments-staging": 1, "payments-dev": 2, "kube-system": 3, "": 4}
ALICE = {"username": "alice", "uid": "u-alice", "groups": ["team:payments", "system:authenticated"]}
MALLORY = {"username": "mallory", "uid": "u-mallory", "groups": ["signoff:break-glass", "system:authenticated"]}


def manifests():
    for path in sorted((ROOT / "examples" / "manifests").rglob("*.yaml")):
        if path.name == "namespaces.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield doc


def stored(obj, rv="4711"):
    """The object as the API server stores it."""
    obj = copy.deepcopy(obj)
    meta = obj.setdefault("metadata", {})
    meta.update({
        "uid": "0b4e5e4c-2a47-4c4f-9f59-1f7c1ffde0a1", "resourceVersion": rv, "generation": 3,
        "creationTimestamp": "2026-11-20T09:00:00Z",
        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": obj.get("apiVersion", "v1")}],
    })
    meta.setdefault("annotations", {})["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(obj, sort_keys=True)
    return obj


def review(op, gvr, kind, obj, old, user=ALICE, sub=None, dry_run=False):
    group, version, resource = gvr
    meta = (obj or old or {}).get("metadata", {})
    request = {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "name": meta.get("name", ""),
        "operation": op,
        "userInfo": user,
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
    }
    namespace = meta.get("namespace") or (meta.get("name") if resource == "namespaces" else None)
    if namespace:
        request["namespace"] = namespace
    if sub:
        request["subResource"] = sub
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def write(target, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def classify_seed(resource, sub_index, op, namespace, user_index, dry_run, obj, old):
    header = bytes([RESOURCE_INDEX[resource] + 17 * sub_index, OPS[op], NAMESPACES.get(namespace, 4), user_index, int(dry_run)])
    body = {"object": obj, "oldObject": old}
    return header + json.dumps(body, separators=(",", ":")).encode()


def main():
    objects = list(manifests())
    seen_kinds = set()
    for obj in objects:
        kind = obj["kind"]
        if kind == "PodExecOptions":
            gvr = ("", "v1", "pods")
            write("admission_review", json.dumps(review("CONNECT", gvr, kind, obj, None, sub="exec")).encode())
            write("classify", classify_seed("pods", 0, "CONNECT", "payments-prod", 0, False, obj, None))
            continue
        if kind == "TokenRequest":
            gvr = ("", "v1", "serviceaccounts")
            write("admission_review", json.dumps(review("CREATE", gvr, kind, obj, None, sub="token")).encode())
            write("classify", classify_seed("serviceaccounts", 0, "CREATE", "payments-prod", 0, False, obj, None))
            continue
        gvr = KINDS[kind]
        ns = obj.get("metadata", {}).get("namespace", "")
        old = stored(obj)
        # Every object is created; the first of each kind is also updated and
        # deleted, which keeps each target's corpus to a few dozen files.
        write("admission_review", json.dumps(review("CREATE", gvr, kind, obj, None)).encode())
        write("classify", classify_seed(gvr[2], 0, "CREATE", ns, 0, False, obj, None))
        write("digest", bytes([OPS["CREATE"]]) + json.dumps(obj, separators=(",", ":")).encode())
        if kind in seen_kinds:
            continue
        seen_kinds.add(kind)
        write("admission_review", json.dumps(review("UPDATE", gvr, kind, stored(obj, "4712"), old)).encode())
        write("admission_review", json.dumps(review("DELETE", gvr, kind, None, old)).encode())
        for op, new, prev in [("UPDATE", obj, old), ("DELETE", None, old)]:
            write("classify", classify_seed(gvr[2], 0, op, ns, 0, False, new, prev))
        write("digest", bytes([OPS["UPDATE"]]) + json.dumps(old, separators=(",", ":")).encode())
    # A break-glass requester's dry run.
    dep = next(o for o in objects if o["kind"] == "Deployment")
    write("admission_review", json.dumps(review("UPDATE", KINDS["Deployment"], "Deployment", dep, stored(dep), user=MALLORY, dry_run=True)).encode())
    # Scaling a production Deployment to zero through the scale subresource.
    scale = lambda n: {"apiVersion": "autoscaling/v1", "kind": "Scale",
                       "metadata": {"name": "web", "namespace": "payments-prod"}, "spec": {"replicas": n}}
    write("admission_review", json.dumps(review("UPDATE", ("apps", "v1", "deployments"), "Scale", scale(0), scale(3), sub="scale")).encode())
    write("classify", classify_seed("deployments", 1, "UPDATE", "payments-prod", 0, False, scale(0), scale(3)))
    # A status write: status is the change.
    with_status = dict(stored(dep), status={"replicas": 3, "readyReplicas": 2})
    write("digest", bytes([OPS["UPDATE"] + 4]) + json.dumps(with_status, separators=(",", ":")).encode())
    write("digest", bytes([OPS["DELETE"]]) + json.dumps(stored(dep), separators=(",", ":")).encode())


if __name__ == "__main__":
    main()
