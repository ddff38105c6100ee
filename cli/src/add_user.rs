//! `sessionwire add-user`: sets a principal's password in a users file
//! ([`sessionwire_server::users::add_user`]), the password read from stdin.

use std::io::{self, BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use sessionwire_server::users;

/// Arguments of `sessionwire add-user`.
#[derive(Debug, Args)]
pub struct AddUserArgs {
    /// The users file to create or update.
    #[arg(long, value_name = "FILE")]
    pub users: PathBuf,
    /// The principal to add (or whose password to replace).
    pub principal: String,
}

/// Runs `sessionwire add-user`: reads the password from the first line of
/// stdin, hashes it and writes the users file (atomically, by renaming).
pub fn run(args: &AddUserArgs) -> ExitCode {
    match try_add_user(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn try_add_user(args: &AddUserArgs) -> Result<(), String> {
    users::check_add_user(&args.users, &args.principal)?;
    if std::io::IsTerminal::is_terminal(&io::stdin()) {
        eprint!("password for {}: ", args.principal);
        let _ = io::stderr().flush();
    }
    let mut password = String::new();
    io::stdin()
        .lock()
        .read_line(&mut password)
        .map_err(|e| format!("reading the password: {e}"))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err("empty password (give it on the first line of stdin)".into());
    }
    users::add_user(&args.users, &args.principal, password)?;
    eprintln!("{}: user {} set", args.users.display(), args.principal);
    Ok(())
}
