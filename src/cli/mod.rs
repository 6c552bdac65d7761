//! The `kubectl signoff` plugin: the command line ([`Cli`]) and its dispatch;
//! each command's clap arguments live next to the command, in its module, and
//! return their output (or one line of error) for [`main`] to print. The
//! binary only calls [`main`].

pub mod check;
pub mod complete;
pub mod decide;
pub mod impersonators;
pub mod kube;
pub mod me;
pub mod policytest;
pub mod requests;
pub mod ui;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use self::check::CheckArgs;
use self::decide::DecideArgs;
use self::impersonators::ImpersonatorsArgs;
use self::me::{AwayArgs, KubeOnly, QuietSetArgs, Reason};
use self::requests::{ListArgs, RequestArgs, ShowArgs, WaitArgs};
use crate::crd::{AwayReason, Verdict};

/// kubectl signoff: follow held changes, approve or reject them, wait for them in CI,
/// and manage your own availability.
#[derive(Parser)]
#[command(name = "kubectl-signoff", bin_name = "kubectl signoff", version, about)]
#[command(after_help = "Examples:
  kubectl signoff list                       # what is waiting for me
  kubectl signoff show -n payments-prod ar-3f9c2a1b
  kubectl signoff approve -n payments-prod ar-3f9c2a1b --comment \"reviewed the diff\"
  kubectl signoff wait -f deploy.yaml --timeout 30m

Exit status: 0 success, 1 error, 2 usage; wait: 0 approved, 3 rejected, 4 expired, 5 timeout.")]
pub struct Cli {
    /// kubectl's connection flags, anywhere on the line (before or after the command).
    #[command(flatten)]
    pub kube: self::kube::KubeArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    Check(CheckArgs),
    /// Prove policies on labelled cases: admitted, or held with the right routes and class.
    Test(policytest::TestArgs),
    /// List ApprovalRequests: those waiting for you first (marked *), then by tier deadline.
    #[command(after_help = "Columns: risk, routes, tier per lane, requester, age, and time left in the current tier.

Examples:
  kubectl signoff list                         # pending requests in the current namespace
  kubectl signoff list -A                      # in every namespace
  kubectl signoff list -n payments-prod --phase all
  kubectl signoff list -A --mine --phase rejected")]
    List(ListArgs),
    /// Show a request the way a reviewer needs it: action, reasons, object, cost, diff, escalation.
    #[command(after_help = "The diff is colored only when the output is a terminal.

Examples:
  kubectl signoff show -n payments-prod ar-3f9c2a1b
  kubectl signoff show -n payments-prod ar-3f9c2a1b -o yaml")]
    Show(ShowArgs),
    /// Approve a held change, as yourself.
    #[command(after_help = "Examples:
  kubectl signoff approve -n payments-prod ar-3f9c2a1b
  kubectl signoff approve --context bob -n payments-prod ar-3f9c2a1b --comment \"reviewed the diff\"")]
    Approve(DecideArgs),
    /// Reject a held change, as yourself. Any eligible rejection rejects the request.
    #[command(after_help = "Examples:
  kubectl signoff reject -n payments-prod ar-3f9c2a1b --comment \"not during the freeze\"")]
    Reject(DecideArgs),
    /// Wait until a request is approved (exit 0), rejected (3) or expired (4), or time out (5).
    #[command(after_help = "Prints each state change. With -f, the request is found by the digest of the change the
manifest makes: CREATE when the object does not exist yet, else UPDATE, computed from a server-side dry
run of the manifest. Limits: one object per manifest; the object must be applied as written (a later
edit, or a different field manager's defaults, makes another change and another request); and for a
cluster-scoped object the request lives in --controller-namespace. Other errors exit 1.

Examples:
  kubectl signoff wait -n payments-prod ar-3f9c2a1b --timeout 1h
  kubectl apply -f deploy.yaml || kubectl signoff wait -f deploy.yaml --timeout 30m && kubectl apply -f deploy.yaml")]
    Wait(WaitArgs),
    /// Ask again after a rejection or expiry: a new attempt starts at tier 1. Requester or admin only.
    #[command(after_help = "Earlier decisions stay in the record but no longer count.

Examples:
  kubectl signoff reopen -n payments-prod ar-3f9c2a1b")]
    Reopen(RequestArgs),
    /// Mark yourself away (vacation, leave, conference): escalation skips you meanwhile.
    #[command(after_help = "Edits your own Approver (named after you; created if missing). Times are RFC 3339,
a date (YYYY-MM-DD, UTC), now, or a duration from now (2h, 3d).

Examples:
  kubectl signoff away --until 2026-12-28 --reason vacation --note \"carol covers\"
  kubectl signoff away --from 2026-12-01T09:00:00Z --until 2026-12-03T18:00:00Z --reason conference
  kubectl signoff away --clear")]
    Away(AwayArgs),
    /// Set your weekly quiet hours: escalation does not page you in them.
    #[command(subcommand)]
    QuietHours(QuietHoursCommand),
    /// List who can approve as someone else by impersonating an approver (RBAC `impersonate`).
    #[command(after_help = "The API server tells admission only whom a request impersonates, not who sent it, so
signoff cannot refuse a decision written through impersonation. This lists every subject whose
ClusterRoles let it impersonate a user or group that can approve (Team members, leads, on-call
people and groups, Approvers). Needs read access to Teams, Approvers, ClusterRoles and
ClusterRoleBindings (a platform admin's).

Examples:
  kubectl signoff impersonators")]
    Impersonators(ImpersonatorsArgs),
    /// Open the approval queue in your browser: the queue, each request's page, approve or reject.
    #[command(after_help = "Serves the page on 127.0.0.1 and calls the API server with your kubeconfig's
credentials, exactly as the other commands do. The first URL carries a one-time token that signs
this browser in; the server answers only to 127.0.0.1 and localhost at its port.

Examples:
  kubectl signoff ui
  kubectl signoff ui --context bob --port 8765 --no-browser")]
    Ui(ui::UiArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:
  source <(kubectl-signoff completion bash)
  kubectl-signoff completion zsh > \"${fpath[1]}/_kubectl-signoff\"
  kubectl-signoff completion fish > ~/.config/fish/completions/kubectl-signoff.fish")]
    Completion(CompletionArgs),
    /// Candidates for `kubectl signoff <TAB>` in cobra's format (kubectl runs
    /// plugins/kubectl_complete-signoff, which runs this).
    #[command(name = "__complete", hide = true)]
    Complete(CompleteArgs),
}

#[derive(Args)]
pub struct CompleteArgs {
    /// The words after `kubectl signoff`, the last one being completed.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub words: Vec<String>,
}

#[derive(Subcommand)]
pub enum QuietHoursCommand {
    /// Replace your quiet hours with one weekly window (start after end crosses midnight).
    #[command(after_help = "Examples:
  kubectl signoff quiet-hours set --start 22:00 --end 07:00 --time-zone Europe/Berlin
  kubectl signoff quiet-hours set --start 12:00 --end 13:00 --days Mon,Tue,Wed,Thu,Fri")]
    Set(QuietSetArgs),
    /// Remove your quiet hours.
    #[command(after_help = "Examples:
  kubectl signoff quiet-hours clear")]
    Clear(KubeOnly),
}

#[derive(Args)]
pub struct CompletionArgs {
    /// The shell.
    pub shell: Shell,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Run an async command; an error is one line on stderr and exit 1.
fn run<F: std::future::Future<Output = Result<i32, String>>>(f: impl FnOnce() -> F) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting: {e}");
            return 1;
        }
    };
    match runtime.block_on(f()) {
        Ok(code) => code,
        Err(message) => {
            let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("error: {line}");
            1
        }
    }
}

fn print(text: String) -> i32 {
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    0
}

fn decide(kube: &self::kube::KubeArgs, args: DecideArgs, verdict: Verdict) -> i32 {
    run(|| async move {
        let (client, namespace) = kube.connect().await?;
        let summary = decide::decide(&client, &namespace, &args.request, verdict, args.comment).await?;
        Ok(print(match args.output {
            Some(_) => requests::kubectl_name(&args.request),
            None => summary,
        }))
    })
}

fn read_manifest(path: &str) -> Result<String, String> {
    if path == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| format!("reading stdin: {e}"))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
    }
}

fn dispatch(kube: &self::kube::KubeArgs, command: Command) -> i32 {
    match command {
        Command::Check(args) => check::run(&args, kube, &mut std::io::stdout(), &mut std::io::stderr()),
        Command::Test(args) => policytest::run(&args, &mut std::io::stdout(), &mut std::io::stderr()),
        Command::Approve(args) => decide(kube, args, Verdict::Approve),
        Command::Reject(args) => decide(kube, args, Verdict::Reject),
        Command::List(args) => run(|| async move {
            let (client, namespace) = kube.connect().await?;
            let scope = if args.all_namespaces { None } else { Some(namespace.as_str()) };
            Ok(print(requests::list(&client, scope, args.mine, args.phase, args.output).await?))
        }),
        Command::Show(args) => run(|| async move {
            let (client, namespace) = kube.connect().await?;
            let ar = requests::get(&client, &namespace, &args.request).await?;
            Ok(print(match args.output {
                Some(format) => requests::serialize(&ar, format)?,
                None => requests::render(&ar, jiff::Timestamp::now(), std::io::stdout().is_terminal()),
            }))
        }),
        Command::Wait(args) => run(|| async move {
            let timeout = match &args.timeout {
                Some(t) => Some(crate::duration::parse(t).map_err(|e| format!("--timeout: {e}"))?),
                None => None,
            };
            let (client, namespace) = kube.connect().await?;
            let (ns, name, digest) = match (&args.request, &args.filename) {
                (Some(name), _) => (namespace, name.clone(), None),
                (None, Some(path)) => {
                    let manifest = read_manifest(path)?;
                    let (ns, name, digest) =
                        requests::request_for_manifest(&client, &manifest, &namespace, &args.controller_namespace)
                            .await?;
                    (ns, name, Some(digest))
                }
                (None, None) => return Err("give an ApprovalRequest name or -f MANIFEST".into()),
            };
            let must_exist = digest.is_none();
            requests::wait(&client, &ns, &name, digest.as_deref(), must_exist, timeout, &mut std::io::stdout()).await
        }),
        Command::Ui(args) => run(|| async move {
            let (client, namespace) = kube.connect().await?;
            ui::run(client, namespace, &args).await
        }),
        Command::Impersonators(_) => run(|| async move {
            let (client, _) = kube.connect().await?;
            Ok(print(impersonators::run(&client).await?))
        }),
        Command::Reopen(args) => run(|| async move {
            let (client, namespace) = kube.connect().await?;
            let summary = requests::reopen(&client, &namespace, &args.request).await?;
            Ok(print(match args.output {
                Some(_) => requests::kubectl_name(&args.request),
                None => summary,
            }))
        }),
        Command::Away(args) => run(|| async move {
            let (client, _) = kube.connect().await?;
            let reason = match args.reason {
                Reason::Vacation => AwayReason::Vacation,
                Reason::Leave => AwayReason::Leave,
                Reason::Conference => AwayReason::Conference,
                Reason::Other => AwayReason::Other,
            };
            let summary =
                me::away(&client, args.from.as_deref(), args.until.as_deref(), reason, args.note, args.clear).await?;
            Ok(print(summary))
        }),
        Command::QuietHours(QuietHoursCommand::Set(args)) => run(|| async move {
            let days = args.days.iter().map(|d| me::parse_day(d)).collect::<Result<Vec<_>, _>>()?;
            let (client, _) = kube.connect().await?;
            Ok(print(me::quiet_hours_set(&client, &args.start, &args.end, days, args.time_zone).await?))
        }),
        Command::QuietHours(QuietHoursCommand::Clear(_)) => run(|| async move {
            let (client, _) = kube.connect().await?;
            Ok(print(me::quiet_hours_clear(&client).await?))
        }),
        Command::Complete(args) => {
            let words = if args.words.is_empty() { vec![String::new()] } else { args.words };
            let (candidates, directive) = complete::candidates(&Cli::command(), &words);
            print!("{}", complete::render(&candidates, directive));
            0
        }
        Command::Completion(args) => {
            let shell = match args.shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-signoff", &mut std::io::stdout());
            0
        }
    }
}

/// Parse the command line, run the command, and return its exit status: 0
/// success, 1 error (one line on stderr), 2 usage; `wait` has its own.
pub fn main() -> ExitCode {
    let code = match Cli::try_parse() {
        Ok(cli) => dispatch(&cli.kube, cli.command),
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            0
        }
        Err(e) => {
            // One line: clap's own message, without the usage block.
            let text = e.render().to_string();
            let message = text.split("\n\nUsage:").next().unwrap_or_default();
            let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("{message} (see --help)");
            2
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
