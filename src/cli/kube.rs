//! The standard kubectl connection flags, global (anywhere on the line, as
//! kubectl's persistent flags): `--kubeconfig`, `--context`, `--cluster`,
//! `--user`, `-n/--namespace`, `--as`, `--as-group`, `--request-timeout`, and
//! KUBECONFIG; in a pod without a kubeconfig, the in-cluster ServiceAccount.

use std::path::PathBuf;

/// Connection flags, as kubectl has them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig cluster to use.
    #[arg(long, global = true)]
    pub cluster: Option<String>,
    /// The kubeconfig user to use.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Username to impersonate (for `check`: the requester to evaluate as).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to impersonate, repeatable (for `check`: the requester's groups).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub as_group: Vec<String>,
    /// How long to wait for one API call, as kubectl has it (0: no limit), e.g. 30s, 1m.
    #[arg(long, global = true, value_name = "DURATION")]
    pub request_timeout: Option<String>,
}

/// `--request-timeout` as kubectl reads it: a bare number is seconds, 0 is no limit.
pub fn request_timeout(text: &str) -> Result<Option<std::time::Duration>, String> {
    let text = text.trim();
    let seconds = text.parse::<u64>().ok().map(std::time::Duration::from_secs);
    let duration = match seconds {
        Some(d) => d,
        None => {
            let d = crate::duration::parse(text).map_err(|e| format!("--request-timeout {text:?}: {e}"))?;
            std::time::Duration::try_from(d).map_err(|_| format!("--request-timeout {text:?}: must not be negative"))?
        }
    };
    Ok((!duration.is_zero()).then_some(duration))
}

impl KubeArgs {
    /// A client and the namespace to use: the kubeconfig (flag, KUBECONFIG or
    /// ~/.kube/config), else, in a pod, the in-cluster ServiceAccount.
    pub async fn connect(&self) -> Result<(kube::Client, String), String> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        };
        let kubeconfig = match &self.kubeconfig {
            Some(path) => {
                Some(kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => match kube::config::Kubeconfig::read() {
                Ok(k) => Some(k),
                // No kubeconfig at all: a CI pod with a ServiceAccount, as kubectl does.
                Err(_) if in_cluster() && std::env::var_os("KUBECONFIG").is_none() => None,
                Err(e) => return Err(format!("reading kubeconfig: {e}")),
            },
        };
        let mut config = match kubeconfig {
            Some(k) => {
                kube::Config::from_custom_kubeconfig(k, &options).await.map_err(|e| format!("kubeconfig: {e}"))?
            }
            None => kube::Config::incluster().map_err(|e| format!("in-cluster configuration: {e}"))?,
        };
        if let Some(user) = &self.as_user {
            config.auth_info.impersonate = Some(user.clone());
        }
        if !self.as_group.is_empty() {
            config.auth_info.impersonate_groups = Some(self.as_group.clone());
        }
        if let Some(text) = &self.request_timeout {
            let timeout = request_timeout(text)?;
            config.read_timeout = timeout;
            config.write_timeout = timeout;
            config.connect_timeout = timeout.or(config.connect_timeout);
        }
        let namespace = self.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| format!("connecting: {e}"))?;
        Ok((client, namespace))
    }
}

/// Inside a pod: the ServiceAccount token is mounted and the API server's
/// address is in the environment.
fn in_cluster() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        && std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists()
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_timeouts_read_as_kubectl_reads_them() {
        assert_eq!(super::request_timeout("30"), Ok(Some(std::time::Duration::from_secs(30))));
        assert_eq!(super::request_timeout("1m"), Ok(Some(std::time::Duration::from_secs(60))));
        assert_eq!(super::request_timeout("0"), Ok(None), "no limit");
        assert!(super::request_timeout("soon").unwrap_err().contains("--request-timeout"));
    }
}
