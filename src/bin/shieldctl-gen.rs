//! shieldctl-gen DIR: writes shieldctl's man page and shell completions, made from the same
//! clap definition as shieldctl itself (`mod_shield::cli`), so they always match it:
//! `DIR/shieldctl.8`, `DIR/completions/shieldctl.bash` and `DIR/completions/_shieldctl`
//! (zsh). The packages run it after the build and install the three files.

use clap::Command;
use clap_complete::{generate_to, Shell};
use clap_mangen::Man;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Text for roff: backslashes and hyphens escaped, and no line may start with a control
/// character (`.` or `'`).
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    escaped
        .lines()
        .map(|l| {
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One page for the tool and all its commands (clap_mangen would point to a page per
/// command, which nobody installs): each command with its arguments and its own options.
fn commands_section(cmd: &Command, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(w, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut usage = format!("\\fB{}\\fR", roff(sub.get_name()));
        for arg in sub.get_positionals() {
            for name in arg.get_value_names().into_iter().flatten() {
                usage += &format!(" \\fI{}\\fR", roff(name));
            }
        }
        for opt in sub.get_opts().chain(
            sub.get_arguments()
                .filter(|a| !a.is_positional() && a.get_long().is_some()),
        ) {
            if let Some(long) = opt.get_long() {
                let flag = format!(" [\\fB\\-\\-{}\\fR]", roff(long));
                if !usage.contains(&flag) {
                    usage += &flag;
                }
            }
        }
        writeln!(w, ".TP\n{usage}")?;
        let about = sub.get_long_about().or(sub.get_about());
        writeln!(
            w,
            "{}",
            roff(&about.map(|a| a.to_string()).unwrap_or_default())
        )?;
        let args: Vec<_> = sub
            .get_arguments()
            .filter(|a| a.get_id() != "help")
            .collect();
        if args.is_empty() {
            continue;
        }
        writeln!(w, ".RS")?;
        for arg in args {
            let name = match arg.get_long() {
                Some(long) => format!("\\fB\\-\\-{}\\fR", roff(long)),
                None => arg
                    .get_value_names()
                    .into_iter()
                    .flatten()
                    .map(|n| format!("\\fI{}\\fR", roff(n)))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            let help = arg.get_long_help().or(arg.get_help());
            writeln!(
                w,
                ".TP\n{name}\n{}",
                roff(&help.map(|h| h.to_string()).unwrap_or_default())
            )?;
        }
        writeln!(w, ".RE")?;
    }
    Ok(())
}

fn man_page(cmd: &Command) -> std::io::Result<Vec<u8>> {
    let man = Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("mod_shield {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    commands_section(cmd, &mut page)?;
    writeln!(
        page,
        ".SH \"EXIT STATUS\"\n{}",
        roff(mod_shield::cli::EXIT_STATUS)
    )?;
    writeln!(
        page,
        ".SH FILES\n.TP\n{}\nThe store file of the shipped configuration (\\fB\\-\\-store\\fR).",
        roff(mod_shield::cli::DEFAULT_STORE)
    )?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let cmd = mod_shield::cli::command();
    std::fs::create_dir_all(dir)?;
    let man = dir.join("shieldctl.8");
    std::fs::write(&man, man_page(&cmd)?)?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    let mut written = vec![man];
    for shell in [Shell::Bash, Shell::Zsh] {
        written.push(generate_to(
            shell,
            &mut cmd.clone(),
            "shieldctl",
            &completions,
        )?);
    }
    Ok(written)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: shieldctl-gen DIR (writes DIR/shieldctl.8 and DIR/completions/)");
        return ExitCode::from(2);
    };
    match write_all(Path::new(&dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "shieldctl-gen: cannot write to {}: {e}",
                Path::new(&dir).display()
            );
            ExitCode::FAILURE
        }
    }
}
