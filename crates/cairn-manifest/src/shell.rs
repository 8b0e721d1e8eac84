//! `[shell]`: the optional break-glass shell on the console, protected by
//! an argon2 password hash (a PHC string such as
//! `$argon2id$v=19$m=7168,t=5,p=1$SALT$HASH`, made by `cairn
//! hash-password`).

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::diagnostic::{Located, Span};
use crate::runtime::ShellConfig;

/// The most memory a hash may ask for (KiB): PID 1 allocates it to verify
/// a password, and small appliances run in 32 MiB.
pub const MAX_HASH_MEMORY_KIB: u32 = 65536;

/// The most passes (`t`) a hash may ask for: PID 1 stops supervising
/// while it checks a password, and the time grows with `m` times `t`
/// (`cairn hash-password` uses 5).
pub const MAX_HASH_PASSES: u32 = 10;

/// The longest password the console prompt takes (bytes); what is typed
/// beyond it is dropped, so `cairn hash-password` refuses longer ones.
pub const PASSWORD_MAX: usize = 256;

/// Everything `[shell]` can get wrong.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShellInvalid {
    #[error(
        "[shell] `exec` must not be empty: give the shell's argv, like [\"/bin/busybox\", \"sh\"]"
    )]
    EmptyExec,
    #[error("[shell] `exec[0]` must be an absolute path inside the image; got `{0}`")]
    RelativeExec(String),
    #[error("[shell] `password_hash` is not an argon2 PHC string ({0}); make one with `cairn hash-password`")]
    Hash(String),
    #[error("[shell] `password_hash` asks for {0} KiB of memory; at most {MAX_HASH_MEMORY_KIB} KiB (PID 1 allocates it to check a password)")]
    HashMemory(u32),
    #[error("[shell] `password_hash` asks for {0} passes (t); at most {MAX_HASH_PASSES} (PID 1 stops supervising while it checks a password)")]
    HashPasses(u32),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShell {
    pub exec: Spanned<Vec<String>>,
    pub password_hash: Spanned<String>,
}

/// `[shell]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shell {
    /// `exec`: the shell's argv; `exec[0]` must be in the image (the
    /// builder checks).
    pub exec: Located<Vec<String>>,
    /// `password_hash`: an argon2 PHC string.
    pub password_hash: String,
}

impl Shell {
    pub fn config(&self) -> ShellConfig {
        ShellConfig {
            exec: self.exec.value.clone(),
            password_hash: self.password_hash.clone(),
        }
    }
}

/// Checks that `phc` is an argon2 (id, i or d) PHC string with a salt, a
/// hash and parameters argon2 accepts.
pub fn check_password_hash(phc: &str) -> Result<(), ShellInvalid> {
    let bad = |e: &dyn std::fmt::Display| ShellInvalid::Hash(e.to_string());
    let hash = argon2::PasswordHash::new(phc).map_err(|e| bad(&e))?;
    if argon2::Algorithm::try_from(hash.algorithm).is_err() {
        return Err(ShellInvalid::Hash(format!(
            "algorithm `{}` is not argon2id, argon2i or argon2d",
            hash.algorithm
        )));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(ShellInvalid::Hash("salt or hash missing".into()));
    }
    let params = argon2::Params::try_from(&hash).map_err(|e| bad(&e))?;
    if params.m_cost() > MAX_HASH_MEMORY_KIB {
        return Err(ShellInvalid::HashMemory(params.m_cost()));
    }
    if params.t_cost() > MAX_HASH_PASSES {
        return Err(ShellInvalid::HashPasses(params.t_cost()));
    }
    Ok(())
}

/// Validates `[shell]`.
pub(crate) fn shell(raw: Option<RawShell>) -> Result<Option<Shell>, (Span, ShellInvalid)> {
    let Some(raw) = raw else { return Ok(None) };
    let exec_span: Span = raw.exec.span().into();
    match raw.exec.get_ref().first() {
        None => return Err((exec_span, ShellInvalid::EmptyExec)),
        Some(p) if !p.starts_with('/') => {
            return Err((exec_span, ShellInvalid::RelativeExec(p.clone())))
        }
        Some(_) => {}
    }
    let hash_span: Span = raw.password_hash.span().into();
    check_password_hash(raw.password_hash.get_ref()).map_err(|e| (hash_span, e))?;
    Ok(Some(Shell {
        exec: Located::new(raw.exec.into_inner(), exec_span),
        password_hash: raw.password_hash.into_inner(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Well-formed (only its format matters here).
    const SECRET: &str =
        "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$Wz0J0F2b6b2l0ufTbrG9bUL8nV3iw+2g2yPNH2cUk1A";

    #[test]
    fn hashes() {
        check_password_hash(SECRET).unwrap();
        assert!(matches!(
            check_password_hash("hunter2"),
            Err(ShellInvalid::Hash(_))
        ));
        assert!(matches!(
            check_password_hash("$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"),
            Err(ShellInvalid::Hash(_))
        ));
        assert!(matches!(
            check_password_hash("$scrypt$ln=4,r=8,p=1$c2FsdA$aGFzaA"),
            Err(ShellInvalid::Hash(_))
        ));
        // No hash part.
        assert!(matches!(
            check_password_hash("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0"),
            Err(ShellInvalid::Hash(_))
        ));
        assert_eq!(
            check_password_hash(
                "$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHRzYWx0$Wz0J0F2b6b2l0ufTbrG9bUL8nV3iw+2g2yPNH2cUk1A"
            ),
            Err(ShellInvalid::HashMemory(1048576))
        );
        assert_eq!(
            check_password_hash(
                "$argon2id$v=19$m=64,t=11,p=1$c2FsdHNhbHRzYWx0$Wz0J0F2b6b2l0ufTbrG9bUL8nV3iw+2g2yPNH2cUk1A"
            ),
            Err(ShellInvalid::HashPasses(11))
        );
        check_password_hash(
            "$argon2id$v=19$m=64,t=10,p=1$c2FsdHNhbHRzYWx0$Wz0J0F2b6b2l0ufTbrG9bUL8nV3iw+2g2yPNH2cUk1A",
        )
        .unwrap();
    }

    fn manifest(shell: &str) -> Result<crate::Manifest, crate::Diagnostic> {
        let text = format!(
            "name = \"x\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n[shell]\n{shell}"
        );
        crate::Manifest::parse(&text, std::path::Path::new("cairn.toml"))
    }

    #[test]
    fn in_a_manifest() {
        let m = manifest(&format!(
            "exec = [\"/bin/busybox\", \"sh\"]\npassword_hash = '{SECRET}'\n"
        ))
        .unwrap();
        let sh = m.shell.as_ref().unwrap();
        assert_eq!(sh.exec.value, ["/bin/busybox", "sh"]);
        let sys = m.system_config(Vec::new());
        assert_eq!(sys.shell.as_ref().unwrap().password_hash, SECRET);
        let none = crate::Manifest::parse(
            "name = \"x\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n",
            std::path::Path::new("cairn.toml"),
        )
        .unwrap();
        assert!(none.shell.is_none() && none.system_config(Vec::new()).shell.is_none());
    }

    #[test]
    fn errors_point_at_the_key() {
        let d = manifest(&format!("exec = []\npassword_hash = '{SECRET}'\n")).unwrap_err();
        assert_eq!((d.line, d.col), (5, 8), "{}", d.message);
        assert!(d.message.contains("must not be empty"), "{}", d.message);
        let d = manifest(&format!("exec = [\"sh\"]\npassword_hash = '{SECRET}'\n")).unwrap_err();
        assert_eq!((d.line, d.col), (5, 8), "{}", d.message);
        assert!(d.message.contains("absolute path"), "{}", d.message);
        let d = manifest("exec = [\"/bin/sh\"]\npassword_hash = \"secret\"\n").unwrap_err();
        assert_eq!((d.line, d.col), (6, 17), "{}", d.message);
        assert!(d.message.contains("cairn hash-password"), "{}", d.message);
        let d = manifest("exec = [\"/bin/sh\"]\n").unwrap_err();
        assert!(d.message.contains("password_hash"), "{}", d.message);
        let d = manifest(&format!(
            "exec = [\"/bin/sh\"]\npassword_hash = '{SECRET}'\nuser = \"root\"\n"
        ))
        .unwrap_err();
        assert_eq!(d.line, 7, "{}", d.message);
        assert!(d.message.contains("user"), "{}", d.message);
    }
}
