//! shieldctl-gen DIR: writes shieldctl's man page and shell completions, made from the same
//! clap definition as shieldctl itself (`mod_shield::cli`), so they always match it:
//! `DIR/shieldctl.8`, `DIR/completions/shieldctl.bash` and `DIR/completions/_shieldctl`
//! (zsh). The packages run it after the build and install the three files.

use clap_complete::{generate_to, Shell};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let cmd = mod_shield::cli::command();
    let man = dir.join("shieldctl.8");
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("mod_shield {}", env!("CARGO_PKG_VERSION")))
        .render(&mut page)?;
    std::fs::write(&man, page)?;
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
