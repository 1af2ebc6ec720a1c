//! `flowgate completions SHELL`: the shell completion script, generated from
//! the same clap definition the binary parses with, so it cannot fall
//! behind a new subcommand or flag.

use clap::ValueEnum;
use std::io::Write;
use std::process::ExitCode;

/// The shells a script is offered for: the ones CI loads the script in.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Writes the script for `shell` to stdout.
pub fn print(shell: Shell, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(shell.generator(), &mut command, "flowgate", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(ExitCode::SUCCESS)
}
