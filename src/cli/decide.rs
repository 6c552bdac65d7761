//! `kubectl signoff approve|reject`: append the caller's decision to a request's
//! status, as the caller. The webhook enforces identity and eligibility; this
//! only makes the write well-formed and turns a refusal into one clear line.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::crd::{ApprovalRequest, Decision, Phase, Verdict};

#[derive(clap::Args)]
pub struct DecideArgs {
    /// The ApprovalRequest, e.g. ar-3f9c2a1b (as named in the denial message).
    pub request: String,
    /// Why: recorded with the decision and shown to the requester.
    #[arg(long)]
    pub comment: Option<String>,
    /// `-o name`: print only `approvalrequest.signoff.dev/NAME` (for scripts).
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<super::requests::NameFormat>,
}

/// Who the API server says the caller is.
pub async fn whoami(client: &kube::Client) -> Result<crate::policy::UserInfo, String> {
    let review = SelfSubjectReview::default();
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await.map_err(|e| one_line(&e))?;
    let info = answer.status.and_then(|s| s.user_info).unwrap_or_default();
    Ok(crate::policy::UserInfo {
        username: info.username.unwrap_or_default(),
        uid: info.uid.unwrap_or_default(),
        groups: info.groups.unwrap_or_default(),
    })
}

/// The message of an API error, with the webhook's prefix removed: the reason
/// signoff gave is what the user needs.
pub fn one_line(error: &kube::Error) -> String {
    let text = match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    };
    let text = match text.find("denied the request: ") {
        Some(i) => text[i + "denied the request: ".len()..].to_string(),
        None => text,
    };
    text.lines().next().unwrap_or_default().trim().to_string()
}

/// Approve or reject `namespace/name` as the caller. Returns a one-line summary.
pub async fn decide(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    verdict: Verdict,
    comment: Option<String>,
) -> Result<String, String> {
    let me = whoami(client).await?;
    let api: Api<ApprovalRequest> = Api::namespaced(client.clone(), namespace);
    // A concurrent decision makes our resourceVersion stale: re-read and retry.
    for _ in 0..5 {
        let ar = match api.get_opt(name).await.map_err(|e| one_line(&e))? {
            Some(ar) => ar,
            None => {
                return Err(format!(
                    "ApprovalRequest {namespace}/{name} not found (kubectl signoff list -n {namespace})"
                ));
            }
        };
        let status = ar.status.clone().unwrap_or_default();
        if status.phase != Phase::Pending {
            return Err(format!(
                "ApprovalRequest {namespace}/{name} is already {:?}; nothing left to decide",
                status.phase
            ));
        }
        let mut decisions = status.decisions.clone();
        decisions.push(Decision {
            approver: me.username.clone(),
            uid: Some(me.uid.clone()).filter(|u| !u.is_empty()),
            groups: me.groups.clone(),
            decision: verdict,
            routes: Vec::new(),
            comment: comment.clone(),
            // Whole seconds: the precision the API server keeps for timestamps.
            at: Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).expect("now is a valid time")),
            attempt: status.attempt,
        });
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": ar.metadata.resource_version },
            "status": { "decisions": decisions },
        });
        match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                let verb = if verdict == Verdict::Approve { "approved" } else { "rejected" };
                return Ok(format!("{verb} ApprovalRequest {namespace}/{name} as {}", me.username));
            }
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(one_line(&e)),
        }
    }
    Err(format!("ApprovalRequest {namespace}/{name} kept changing while deciding; try again"))
}
