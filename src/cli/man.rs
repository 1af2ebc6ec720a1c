//! `flowgate man`: manual pages generated from the clap definition, with
//! the sections clap does not know (files, environment, exit status).
//! `flowgate(1)` goes to stdout; `--out-dir` writes it and one page per
//! subcommand (`flowgate-run(1)`, `flowgate-buffer-check(1)`, ...), which
//! the top page's COMMANDS section refers to.

use anyhow::Context;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// roff for the top page, after the generated sections. Kept beside the
/// code that it describes: the default directory and the exit codes.
const EXTRA: &str = r#".SH FILES
.TP
\fI/etc/flowgate/pipelines/\fR
The pipeline files \fBflowgate run\fR reads when it is given no path
(\fBFLOWGATE_PIPELINES_DIR\fR overrides it); the packaged systemd unit
runs them and \fBsystemctl reload flowgate\fR applies changes.
.TP
\fI/var/lib/flowgate/\fR
The packaged service's \fB\-\-data\-dir\fR (systemd's StateDirectory):
file checkpoints and disk buffers, one directory per pipeline.
.SH ENVIRONMENT
.TP
\fBRUST_LOG\fR
Log level and filters, as tracing-subscriber reads them (default \fBinfo\fR).
.TP
\fBFLOWGATE_PIPELINES_DIR\fR
The directory \fBflowgate run\fR reads when it is given no path (default
\fI/etc/flowgate/pipelines\fR).
.SH "EXIT STATUS"
.TP
\fB0\fR
Success: the pipelines finished or drained cleanly.
.TP
\fB1\fR
Runtime failure: on_error: stop, a panic, an I/O error, the shutdown deadline.
.TP
\fB2\fR
Command-line usage error, or nothing to run.
.TP
\fB78\fR
Invalid configuration.
.TP
\fB130\fR
A second SIGINT or SIGTERM during shutdown.
.SH SIGNALS
\fBSIGHUP\fR re-reads, validates and applies the pipeline files by
difference; \fBSIGINT\fR and \fBSIGTERM\fR drain and stop.
.SH "SEE ALSO"
\fBsystemctl\fR(1), \fBjq\fR(1)
"#;

/// `flowgate man [--out-dir DIR]`.
pub fn print(command: clap::Command, out_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    // build() names the subcommands `flowgate-run` etc., the pages' titles.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    match out_dir {
        None => std::io::stdout().lock().write_all(&top_page(&command)?)?,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            write_page(dir, "flowgate.1", &top_page(&command)?)?;
            write_subcommand_pages(dir, &command)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn top_page(command: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    man.render_subcommands_section(&mut page)?;
    page.extend_from_slice(EXTRA.as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

fn write_subcommand_pages(dir: &Path, command: &clap::Command) -> anyhow::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = clap_mangen::Man::new(sub.clone());
        let mut page = Vec::new();
        man.render(&mut page)?;
        write_page(dir, &man.get_filename(), &page)?;
        write_subcommand_pages(dir, sub)?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, page: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    println!("{}", path.display());
    Ok(())
}
