//! The people (and robots) of the local control plane: the demo users of `make dev`
//! and the identities tests act as. Each authenticates as the API server would see
//! a real user: a static bearer token with groups, or (admin) a client certificate.

/// A user of the local control plane.
#[derive(Debug)]
pub struct DemoUser {
    /// Username as the API server authenticates it.
    pub name: &'static str,
    /// Groups the API server reports for the user.
    pub groups: &'static [&'static str],
    /// What the user is for in the walkthrough and the tests.
    pub role: &'static str,
}

impl DemoUser {
    /// UID reported by the token authenticator.
    pub fn uid(&self) -> String {
        format!("uid-{}", self.name.replace([':', '/'], "-"))
    }
    /// Name of the kubeconfig context for this user.
    pub fn context(&self) -> &'static str {
        context_of(self.name)
    }
}

/// Cluster admin, authenticated by client certificate (system:masters).
pub const ADMIN: &str = "admin";
/// signoff's own identity: the controller's ServiceAccount.
pub const CONTROLLER: &str = "system:serviceaccount:signoff-system:signoff";
/// A GitOps controller's ServiceAccount (never counts as an approver).
pub const GITOPS: &str = "system:serviceaccount:argocd:argocd-application-controller";

/// Flux's kustomize-controller and source-controller ServiceAccounts (tests run
/// the real controllers out of cluster as these).
pub const FLUX_KUSTOMIZE: &str = "system:serviceaccount:flux-system:kustomize-controller";
pub const FLUX_SOURCE: &str = "system:serviceaccount:flux-system:source-controller";

const SA_GROUPS_FLUX: &[&str] =
    &["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"];
const SA_GROUPS_SIGNOFF: &[&str] =
    &["system:serviceaccounts", "system:serviceaccounts:signoff-system", "system:authenticated"];
const SA_GROUPS_ARGOCD: &[&str] = &["system:serviceaccounts", "system:serviceaccounts:argocd", "system:authenticated"];

/// Every user, in walkthrough order.
pub const USERS: &[DemoUser] = &[
    DemoUser { name: ADMIN, groups: &["system:masters"], role: "cluster admin (client certificate)" },
    DemoUser { name: "alice", groups: &["team:payments", "signoff:requesters"], role: "requester, payments engineer" },
    DemoUser {
        name: "bob",
        groups: &["team:payments", "signoff:requesters"],
        role: "payments teammate who can approve",
    },
    DemoUser { name: "carol", groups: &["team:payments", "signoff:requesters"], role: "payments team lead" },
    DemoUser { name: "dave", groups: &["team:payments", "signoff:requesters"], role: "payments on-call" },
    DemoUser { name: "erin", groups: &["team:security"], role: "security owner" },
    DemoUser { name: "frank", groups: &["team:finance"], role: "finance owner" },
    DemoUser { name: "grace", groups: &["team:customer"], role: "customer-facing owner" },
    DemoUser { name: "heidi", groups: &["team:managers"], role: "engineering manager" },
    DemoUser {
        name: "ivan",
        groups: &["team:platform", "signoff:platform-admins"],
        role: "platform admin, secondary on-call",
    },
    DemoUser { name: "mallory", groups: &["signoff:requesters"], role: "outsider: in no team, approves nothing" },
    DemoUser {
        name: "breakglass",
        groups: &["signoff:break-glass"],
        role: "emergency identity in the break-glass group",
    },
    DemoUser { name: CONTROLLER, groups: SA_GROUPS_SIGNOFF, role: "signoff's controller ServiceAccount" },
    DemoUser { name: GITOPS, groups: SA_GROUPS_ARGOCD, role: "Argo CD's application controller" },
    DemoUser { name: FLUX_KUSTOMIZE, groups: SA_GROUPS_FLUX, role: "Flux's kustomize-controller" },
    DemoUser { name: FLUX_SOURCE, groups: SA_GROUPS_FLUX, role: "Flux's source-controller" },
];

/// Kubeconfig context name of a user: the username, with ServiceAccounts shortened
/// to `sa:NAMESPACE:NAME`.
pub fn context_of(user: &str) -> &str {
    match user {
        CONTROLLER => "sa:signoff-system:signoff",
        GITOPS => "sa:argocd:argocd-application-controller",
        FLUX_KUSTOMIZE => "sa:flux-system:kustomize-controller",
        FLUX_SOURCE => "sa:flux-system:source-controller",
        other => other,
    }
}
