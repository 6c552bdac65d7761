//! The standard kubectl connection flags, shared by every command that talks to
//! the API server: `--kubeconfig`, `--context`, `-n/--namespace`, and KUBECONFIG.

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
}

impl KubeArgs {
    /// A client and the namespace to use.
    pub async fn connect(&self) -> Result<(kube::Client, String), String> {
        let options = kube::config::KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let kubeconfig = match &self.kubeconfig {
            Some(path) => kube::config::Kubeconfig::read_from(path).map_err(|e| format!("{}: {e}", path.display()))?,
            None => kube::config::Kubeconfig::read().map_err(|e| format!("reading kubeconfig: {e}"))?,
        };
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| format!("kubeconfig: {e}"))?;
        let namespace = self.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config).map_err(|e| format!("connecting: {e}"))?;
        Ok((client, namespace))
    }
}
