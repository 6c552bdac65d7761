//! Monthly cost estimates from pod templates, PVCs and load balancers. Pure.
//!
//! A month is 730 hours. Each container costs its requests (or its limits when it
//! has no requests for that resource): CPU cores × cpuCoreHour, memory GiB ×
//! memoryGiBHour and GPUs (`nvidia.com/gpu`, `amd.com/gpu`) × gpuHour, for 730
//! hours. Init containers and ephemeral containers are not counted (they do not
//! run for the month). What is estimated per kind:
//!
//! - Pod: its containers.
//! - Deployment, ReplicaSet: `spec.replicas` (default 1) × the pod template.
//! - StatefulSet: replicas × (pod template + volumeClaimTemplates storage).
//! - DaemonSet: `pricing.daemonSetNodes` × the pod template.
//! - Job: `spec.parallelism` (default 1) × the pod template.
//! - CronJob: its job template as if it ran all month (an upper bound).
//! - PersistentVolumeClaim: `spec.resources.requests.storage` GiB × storageGiBMonth.
//! - Service of type LoadBalancer: loadBalancerMonth.
//! - The `scale` subresource: a Scale object carries only a replica count, not the
//!   pod template, so its per-replica cost is unknown and counted as 0. Rules that
//!   care about scaling should compare `object.spec.replicas` with
//!   `oldObject.spec.replicas` instead.
//! - Anything else: 0.

use serde::Serialize;
use serde_json::Value;

use super::quantity::Quantity;
use crate::crd::Pricing;

/// Hours in the month used by every estimate.
pub const HOURS_PER_MONTH: f64 = 730.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The estimate for one change, in `currency`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub monthly_before: f64,
    pub monthly_after: f64,
    pub monthly_delta: f64,
    pub currency: String,
}

impl Cost {
    pub fn zero(currency: &str) -> Cost {
        Cost { monthly_before: 0.0, monthly_after: 0.0, monthly_delta: 0.0, currency: currency.to_string() }
    }

    /// As recorded in an ApprovalRequest: decimal strings with two places.
    pub fn to_crd(&self) -> crate::crd::CostEstimate {
        crate::crd::CostEstimate {
            currency: self.currency.clone(),
            monthly_before: format!("{:.2}", self.monthly_before),
            monthly_after: format!("{:.2}", self.monthly_after),
            monthly_delta: format!("{:.2}", self.monthly_delta),
        }
    }
}

/// Estimates the change from `old` to `new` (either may be absent or null).
/// `sub_resource` is the request's subresource; see the module docs for `scale`.
pub fn estimate(old: Option<&Value>, new: Option<&Value>, sub_resource: &str, pricing: &Pricing) -> Cost {
    let before = monthly(old, sub_resource, pricing);
    let after = monthly(new, sub_resource, pricing);
    Cost {
        monthly_before: before,
        monthly_after: after,
        monthly_delta: after - before,
        currency: pricing.currency.clone(),
    }
}

/// The monthly cost of one object.
pub fn monthly(object: Option<&Value>, sub_resource: &str, pricing: &Pricing) -> f64 {
    let Some(object) = object.filter(|o| o.is_object()) else { return 0.0 };
    if !sub_resource.is_empty() {
        // Scale and other subresources carry no pod template: unknown, 0.
        return 0.0;
    }
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let template_pod = || spec.pointer("/template/spec");
    let replicas = |default: f64| spec.get("replicas").and_then(Value::as_f64).unwrap_or(default).max(0.0);
    let cost = match kind {
        "Pod" => pod_cost(Some(spec), pricing),
        "Deployment" | "ReplicaSet" => replicas(1.0) * pod_cost(template_pod(), pricing),
        "StatefulSet" => {
            let storage: f64 = spec
                .get("volumeClaimTemplates")
                .and_then(Value::as_array)
                .map(|ts| ts.iter().map(|t| storage_gib(t.get("spec"))).sum())
                .unwrap_or(0.0);
            replicas(1.0) * (pod_cost(template_pod(), pricing) + storage * pricing.storage_gib_month)
        }
        "DaemonSet" => f64::from(pricing.daemon_set_nodes) * pod_cost(template_pod(), pricing),
        "Job" => job_cost(Some(spec), pricing),
        "CronJob" => job_cost(spec.pointer("/jobTemplate/spec"), pricing),
        "PersistentVolumeClaim" => storage_gib(Some(spec)) * pricing.storage_gib_month,
        "Service" if spec.get("type").and_then(Value::as_str) == Some("LoadBalancer") => pricing.load_balancer_month,
        _ => 0.0,
    };
    if cost.is_finite() { cost } else { 0.0 }
}

fn job_cost(job_spec: Option<&Value>, pricing: &Pricing) -> f64 {
    let Some(job_spec) = job_spec else { return 0.0 };
    let parallelism = job_spec.get("parallelism").and_then(Value::as_f64).unwrap_or(1.0).max(0.0);
    parallelism * pod_cost(job_spec.pointer("/template/spec"), pricing)
}

fn storage_gib(pvc_spec: Option<&Value>) -> f64 {
    pvc_spec
        .and_then(|s| s.pointer("/resources/requests/storage"))
        .and_then(quantity)
        .map(|q| q.as_f64() / GIB)
        .unwrap_or(0.0)
}

fn quantity(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => n.as_f64().and_then(|f| Quantity::parse(&f.to_string()).ok()),
        _ => None,
    }
}

/// One resource of one container: requests, else limits.
fn resource(container: &Value, name: &str) -> f64 {
    let get = |section: &str| container.get("resources")?.get(section)?.get(name).and_then(quantity);
    get("requests").or_else(|| get("limits")).map(Quantity::as_f64).unwrap_or(0.0).max(0.0)
}

/// Monthly cost of one pod spec's containers.
pub fn pod_cost(pod_spec: Option<&Value>, pricing: &Pricing) -> f64 {
    let Some(containers) = pod_spec.and_then(|s| s.get("containers")).and_then(Value::as_array) else {
        return 0.0;
    };
    containers
        .iter()
        .map(|c| {
            let cpu = resource(c, "cpu");
            let mem_gib = resource(c, "memory") / GIB;
            let gpus = resource(c, "nvidia.com/gpu") + resource(c, "amd.com/gpu");
            (cpu * pricing.cpu_core_hour + mem_gib * pricing.memory_gib_hour + gpus * pricing.gpu_hour)
                * HOURS_PER_MONTH
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pricing() -> Pricing {
        Pricing {
            currency: "USD".into(),
            cpu_core_hour: 0.04,
            memory_gib_hour: 0.005,
            gpu_hour: 2.0,
            storage_gib_month: 0.10,
            load_balancer_month: 18.0,
            daemon_set_nodes: 5,
        }
    }

    fn container(requests: Value, limits: Value) -> Value {
        json!({"name": "c", "image": "x", "resources": {"requests": requests, "limits": limits}})
    }

    fn deployment(replicas: i64, containers: Vec<Value>) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}})
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    // Hand-checked: 1 core × 0.04 × 730 = 29.20; 2 GiB × 0.005 × 730 = 7.30.
    // One replica of {1 cpu, 2Gi} = 36.50 / month.
    #[test]
    fn hand_checked_figures() {
        let p = pricing();
        let one = container(json!({"cpu": "1", "memory": "2Gi"}), json!({}));
        let cases: Vec<(&str, Value, f64)> = vec![
            ("pod 1cpu 2Gi", json!({"kind": "Pod", "spec": {"containers": [one.clone()]}}), 36.5),
            ("deployment ×3", deployment(3, vec![one.clone()]), 109.5),
            // 500m = 0.5 × 0.04 × 730 = 14.60; 512Mi = 0.5 GiB × 0.005 × 730 = 1.825.
            (
                "millicores",
                deployment(1, vec![container(json!({"cpu": "500m", "memory": "512Mi"}), json!({}))]),
                16.425,
            ),
            // No requests: limits 2 cores = 58.40.
            ("limits fallback", deployment(1, vec![container(json!(null), json!({"cpu": "2"}))]), 58.4),
            // Requests win over limits: cpu 1 (29.20), memory from limits 1Gi (3.65).
            (
                "requests first",
                deployment(1, vec![container(json!({"cpu": "1"}), json!({"cpu": "4", "memory": "1Gi"}))]),
                32.85,
            ),
            // 1 GPU × 2 × 730 = 1460.
            ("gpu", deployment(1, vec![container(json!({"nvidia.com/gpu": 1}), json!({}))]), 1460.0),
            ("amd gpu", deployment(2, vec![container(json!({}), json!({"amd.com/gpu": "1"}))]), 2920.0),
            ("two containers", deployment(1, vec![one.clone(), one.clone()]), 73.0),
            (
                "replicaset",
                json!({"kind": "ReplicaSet", "spec": {"replicas": 2, "template": {"spec": {"containers": [one.clone()]}}}}),
                73.0,
            ),
            // DaemonSet on 5 nodes.
            (
                "daemonset",
                json!({"kind": "DaemonSet", "spec": {"template": {"spec": {"containers": [one.clone()]}}}}),
                182.5,
            ),
            // StatefulSet: 2 × (36.50 + 10 GiB × 0.10 = 1.00) = 75.00.
            (
                "statefulset",
                json!({"kind": "StatefulSet", "spec": {"replicas": 2,
                "template": {"spec": {"containers": [one.clone()]}},
                "volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": "10Gi"}}}}]}}),
                75.0,
            ),
            (
                "job parallelism 4",
                json!({"kind": "Job", "spec": {"parallelism": 4, "template": {"spec": {"containers": [one.clone()]}}}}),
                146.0,
            ),
            (
                "cronjob",
                json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [one.clone()]}}}}}}),
                36.5,
            ),
            // 100Gi × 0.10 = 10.00.
            (
                "pvc",
                json!({"kind": "PersistentVolumeClaim", "spec": {"resources": {"requests": {"storage": "100Gi"}}}}),
                10.0,
            ),
            ("lb", json!({"kind": "Service", "spec": {"type": "LoadBalancer"}}), 18.0),
            ("clusterip", json!({"kind": "Service", "spec": {"type": "ClusterIP"}}), 0.0),
            ("configmap", json!({"kind": "ConfigMap", "data": {}}), 0.0),
            ("garbage quantities", deployment(1, vec![container(json!({"cpu": "lots"}), json!({}))]), 0.0),
            ("negative replicas", deployment(-3, vec![one.clone()]), 0.0),
        ];
        for (name, object, want) in cases {
            let got = monthly(Some(&object), "", &p);
            assert!(close(got, want), "{name}: got {got}, want {want}");
        }
    }

    #[test]
    fn delta_and_scale() {
        let p = pricing();
        let one = container(json!({"cpu": "1", "memory": "2Gi"}), json!({}));
        let c = estimate(Some(&deployment(2, vec![one.clone()])), Some(&deployment(10, vec![one.clone()])), "", &p);
        assert!(close(c.monthly_before, 73.0) && close(c.monthly_after, 365.0) && close(c.monthly_delta, 292.0));
        assert_eq!(c.to_crd().monthly_delta, "292.00");
        let create = estimate(None, Some(&deployment(1, vec![one.clone()])), "", &p);
        assert!(close(create.monthly_delta, 36.5));
        let delete = estimate(Some(&deployment(1, vec![one])), Some(&Value::Null), "", &p);
        assert!(close(delete.monthly_delta, -36.5));
        let scale = json!({"kind": "Scale", "spec": {"replicas": 50}});
        assert_eq!(estimate(None, Some(&scale), "scale", &p).monthly_delta, 0.0, "per-replica cost unknown");
    }
}
