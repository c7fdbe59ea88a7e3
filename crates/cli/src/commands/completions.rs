//! `agentbus completions SHELL`: a completion script for the shell, from the same definition
//! of the commands that parses them.

use clap::Args;
use clap_complete::Shell;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub fn run(args: &CompletionsArgs, cmd: &mut clap::Command) {
    write(args.shell, cmd, &mut std::io::stdout());
}

pub fn write(shell: Shell, cmd: &mut clap::Command, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, cmd, "agentbus", out);
}
