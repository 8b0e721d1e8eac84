//! `cairn hash-password`: turns a password into the argon2id PHC string
//! that `[shell] password_hash` takes.
//!
//! On a terminal it asks twice with echo off; otherwise it reads the first
//! line of standard input.

use std::io::{BufRead, IsTerminal, Write};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, SaltString};

/// argon2id memory cost in KiB, passes and lanes: one of OWASP's
/// recommended settings, small enough for a 32 MiB appliance to check.
pub const PARAMS: (u32, u32, u32) = (7168, 5, 1);

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read the password: {0}")]
    Read(#[from] std::io::Error),
    #[error("cannot turn terminal echo off: {0}")]
    Echo(rustix::io::Errno),
    #[error("the password is empty")]
    Empty,
    #[error("the password is {0} bytes long; the appliance's console prompt takes at most {max}", max = cairn_manifest::shell::PASSWORD_MAX)]
    TooLong(usize),
    #[error("the passwords do not match")]
    Mismatch,
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// The argon2id PHC string of `password` with a fresh random salt.
pub fn hash(password: &[u8]) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > cairn_manifest::shell::PASSWORD_MAX {
        return Err(PasswordError::TooLong(password.len()));
    }
    let (m, t, p) = PARAMS;
    let params =
        argon2::Params::new(m, t, p, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut OsRng);
    a.hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// The first line of `input`, without its line ending.
pub fn first_line(input: &mut impl BufRead) -> Result<Vec<u8>, PasswordError> {
    let mut line = Vec::new();
    input.read_until(b'\n', &mut line)?;
    while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        line.pop();
    }
    Ok(line)
}

fn ask(prompt: &str) -> Result<Vec<u8>, PasswordError> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).map_err(PasswordError::Echo)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).map_err(PasswordError::Echo)?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let line = first_line(&mut stdin.lock());
    let _ = tcsetattr(&stdin, OptionalActions::Now, &saved);
    eprintln!();
    line
}

/// Reads the password (asking twice on a terminal) and returns its hash.
pub fn hash_from_stdin() -> Result<String, PasswordError> {
    let password = if std::io::stdin().is_terminal() {
        let a = ask("Password: ")?;
        let b = ask("Again: ")?;
        if a != b {
            return Err(PasswordError::Mismatch);
        }
        a
    } else {
        first_line(&mut std::io::stdin().lock())?
    };
    hash(&password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    #[test]
    fn hashes_verify_and_pass_the_manifest_check() {
        let h = hash(b"s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
        cairn_manifest::shell::check_password_hash(&h).unwrap();
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(argon2::Argon2::default()
            .verify_password(b"s3cret", &parsed)
            .is_ok());
        assert!(argon2::Argon2::default()
            .verify_password(b"other", &parsed)
            .is_err());
        // Salts differ.
        assert_ne!(hash(b"s3cret").unwrap(), h);
        assert!(matches!(hash(b""), Err(PasswordError::Empty)));
        // The console prompt keeps at most PASSWORD_MAX bytes: a longer
        // password could never be typed in, so it is refused here.
        let max = cairn_manifest::shell::PASSWORD_MAX;
        assert!(hash(&vec![b'a'; max]).is_ok());
        let e = hash(&vec![b'a'; max + 1]).unwrap_err();
        assert!(matches!(e, PasswordError::TooLong(n) if n == max + 1));
        assert!(e.to_string().contains("at most 256"), "{e}");
    }

    #[test]
    fn reads_the_first_line() {
        let mut r = std::io::Cursor::new(b"pw word\r\nsecond\n".to_vec());
        assert_eq!(first_line(&mut r).unwrap(), b"pw word");
        let mut r = std::io::Cursor::new(b"last".to_vec());
        assert_eq!(first_line(&mut r).unwrap(), b"last");
    }
}
