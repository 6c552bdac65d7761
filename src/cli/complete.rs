//! `kubectl signoff <TAB>`: kubectl (1.26+) completes a plugin's arguments by
//! running `kubectl_complete-signoff ARGS… PARTIAL` and reading cobra's
//! `__complete` format: one candidate per line (`value\tdescription`), then
//! `:DIRECTIVE`. `plugins/kubectl_complete-signoff` runs `kubectl-signoff
//! __complete`, answered here from the clap command tree: commands, flags
//! (the global kubectl flags included) and the values of enumerated flags.

use clap::Command;

/// cobra's ShellCompDirectiveNoFileComp: do not fall back to file names.
const NO_FILES: u32 = 4;
/// cobra's ShellCompDirectiveDefault: the shell may complete file names.
const FILES: u32 = 0;

/// The candidates for the last of `words` (the partial word) and cobra's directive.
pub fn candidates(root: &Command, words: &[String]) -> (Vec<String>, u32) {
    let mut root = root.clone();
    root.build(); // propagates the global flags into every subcommand
    let (partial, before) = match words.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", &[][..]),
    };
    let mut cmd = &root;
    let mut pending_value: Option<&clap::Arg> = None;
    for word in before {
        if pending_value.take().is_some() {
            continue; // the flag's value: nothing to walk into
        }
        if let Some(name) = word.strip_prefix("--") {
            let name = name.split('=').next().unwrap_or_default();
            if !word.contains('=') {
                pending_value = cmd.get_arguments().find(|a| a.get_long() == Some(name)).filter(|a| takes_value(a));
            }
            continue;
        }
        if let Some(short) = word.strip_prefix('-').and_then(|s| s.chars().next()) {
            pending_value = cmd.get_arguments().find(|a| a.get_short() == Some(short)).filter(|a| takes_value(a));
            continue;
        }
        if let Some(sub) = cmd.find_subcommand(word) {
            cmd = sub;
        }
    }
    if let Some(arg) = pending_value {
        // A flag's value: its choices when it has a fixed set, else files for paths.
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| v.get_name().to_string())
            .filter(|v| v.starts_with(partial))
            .collect();
        return if values.is_empty() { (values, FILES) } else { (values, NO_FILES) };
    }
    if partial.starts_with('-') {
        let mut flags: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| described(&format!("--{l}"), a.get_help())))
            .filter(|f| f.starts_with(partial))
            .collect();
        flags.sort();
        return (flags, NO_FILES);
    }
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| described(s.get_name(), s.get_about()))
        .filter(|s| s.starts_with(partial))
        .collect();
    (subcommands, NO_FILES)
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values()) && !matches!(arg.get_action(), clap::ArgAction::SetTrue)
}

/// `value\tfirst line of help`, as cobra prints a described candidate.
fn described(value: &str, help: Option<&clap::builder::StyledStr>) -> String {
    match help.map(|h| h.to_string()).and_then(|h| h.lines().next().map(str::to_string)) {
        Some(line) if !line.is_empty() => format!("{value}\t{line}"),
        _ => value.to_string(),
    }
}

/// cobra's output: the candidates, then `:DIRECTIVE`.
pub fn render(candidates: &[String], directive: u32) -> String {
    let mut out: String = candidates.iter().map(|c| format!("{c}\n")).collect();
    out.push_str(&format!(":{directive}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn complete(words: &[&str]) -> (Vec<String>, u32) {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let (values, directive) = candidates(&crate::cli::Cli::command(), &words);
        (values.iter().map(|v| v.split('\t').next().unwrap().to_string()).collect(), directive)
    }

    #[test]
    fn commands_flags_and_choices_complete() {
        let (commands, directive) = complete(&[""]);
        assert!(commands.contains(&"list".to_string()) && commands.contains(&"approve".to_string()), "{commands:?}");
        assert_eq!(directive, NO_FILES);
        assert_eq!(complete(&["ap"]).0, ["approve"]);
        let (flags, _) = complete(&["list", "--"]);
        for flag in ["--context", "--namespace", "--phase", "--output", "--all-namespaces", "--as"] {
            assert!(flags.contains(&flag.to_string()), "{flag} in {flags:?}");
        }
        assert_eq!(complete(&["--context", "bob", "list", "--phase", "re"]).0, ["rejected"]);
        assert_eq!(complete(&["list", "-o", ""]).0, ["json", "yaml", "name", "wide"]);
        assert_eq!(complete(&["check", "-f", ""]).1, FILES, "a manifest path: files");
        assert_eq!(complete(&["quiet-hours", ""]).0, ["set", "clear"]);
        assert!(render(&["list\tList".into()], 4).ends_with("list\tList\n:4\n"));
    }
}
