//! `/etc/passwd` and `/etc/group`, parsed by cairn itself (a static glibc
//! must never go through NSS), and the resolution of a service's `user`,
//! `group` and `groups` into numbers.

#![forbid(unsafe_code)]

use std::path::Path;

pub const PASSWD_PATH: &str = "/etc/passwd";
pub const GROUP_PATH: &str = "/etc/group";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("{file}:{line}: malformed entry (expected {fields} `:`-separated fields)")]
    Malformed {
        file: String,
        line: usize,
        fields: usize,
    },
    #[error("{file}:{line}: invalid number `{value}`")]
    Number {
        file: String,
        line: usize,
        value: String,
    },
    #[error("cannot read {file}: {error}")]
    Read { file: String, error: String },
    #[error("no user `{0}` in /etc/passwd")]
    NoUser(String),
    #[error("no group `{0}` in /etc/group")]
    NoGroup(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

fn num(file: &str, line: usize, v: &str) -> Result<u32, AccountError> {
    v.parse().map_err(|_| AccountError::Number {
        file: file.into(),
        line,
        value: v.into(),
    })
}

/// Lines that are empty or start with `#` are skipped.
fn records<'a>(text: &'a str) -> impl Iterator<Item = (usize, &'a str)> + 'a {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
}

/// Parses passwd(5): `name:pw:uid:gid:gecos:home:shell`.
pub fn parse_passwd(file: &str, text: &str) -> Result<Vec<User>, AccountError> {
    records(text)
        .map(|(line, l)| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 7 || f[0].is_empty() {
                return Err(AccountError::Malformed {
                    file: file.into(),
                    line,
                    fields: 7,
                });
            }
            Ok(User {
                name: f[0].into(),
                uid: num(file, line, f[2])?,
                gid: num(file, line, f[3])?,
                home: f[5].into(),
            })
        })
        .collect()
}

/// Parses group(5): `name:pw:gid:member,member`.
pub fn parse_group(file: &str, text: &str) -> Result<Vec<Group>, AccountError> {
    records(text)
        .map(|(line, l)| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() != 4 || f[0].is_empty() {
                return Err(AccountError::Malformed {
                    file: file.into(),
                    line,
                    fields: 4,
                });
            }
            Ok(Group {
                name: f[0].into(),
                gid: num(file, line, f[2])?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(String::from)
                    .collect(),
            })
        })
        .collect()
}

/// The parsed account database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
}

/// What a service runs as, in numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: Option<String>,
}

impl Accounts {
    /// Reads `/etc/passwd` and `/etc/group` under `root`. A missing file
    /// is an empty database (numbers still work).
    pub fn load(root: &Path) -> Result<Accounts, AccountError> {
        let read = |p: &str| -> Result<String, AccountError> {
            let path = root.join(p.trim_start_matches('/'));
            match std::fs::read_to_string(&path) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(AccountError::Read {
                    file: p.into(),
                    error: e.to_string(),
                }),
            }
        };
        Ok(Accounts {
            users: parse_passwd(PASSWD_PATH, &read(PASSWD_PATH)?)?,
            groups: parse_group(GROUP_PATH, &read(GROUP_PATH)?)?,
        })
    }

    fn gid_of(&self, v: &str) -> Result<u32, AccountError> {
        if let Ok(n) = v.parse() {
            return Ok(n);
        }
        self.groups
            .iter()
            .find(|g| g.name == v)
            .map(|g| g.gid)
            .ok_or_else(|| AccountError::NoGroup(v.into()))
    }

    /// Resolves `user` (default root), `group` (default: the user's primary
    /// group) and supplementary `groups` (plus, for a named user, the
    /// groups that list it as a member).
    pub fn resolve(
        &self,
        user: Option<&str>,
        group: Option<&str>,
        groups: &[String],
    ) -> Result<Credentials, AccountError> {
        let (uid, mut gid, name, home) = match user {
            None => (0, 0, Some("root"), None),
            Some(u) => match self.users.iter().find(|x| x.name == u) {
                Some(x) => (x.uid, x.gid, Some(x.name.as_str()), Some(x.home.clone())),
                None => match u.parse::<u32>() {
                    Ok(n) => match self.users.iter().find(|x| x.uid == n) {
                        Some(x) => (n, x.gid, Some(x.name.as_str()), Some(x.home.clone())),
                        None => (n, n, None, None),
                    },
                    Err(_) => return Err(AccountError::NoUser(u.into())),
                },
            },
        };
        if let Some(g) = group {
            gid = self.gid_of(g)?;
        }
        let mut sup = Vec::new();
        for g in groups {
            let n = self.gid_of(g)?;
            if !sup.contains(&n) {
                sup.push(n);
            }
        }
        if let (Some(name), Some(_)) = (name, user) {
            for g in &self.groups {
                if g.members.iter().any(|m| m == name) && !sup.contains(&g.gid) {
                    sup.push(g.gid);
                }
            }
        }
        Ok(Credentials {
            uid,
            gid,
            groups: sup,
            home,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/false\n# comment\n\napp:x:1000:1000:app:/srv:/bin/false\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\naudio:x:29:app,other\nvideo:x:44:\n";

    fn db() -> Accounts {
        Accounts {
            users: parse_passwd("p", PASSWD).unwrap(),
            groups: parse_group("g", GROUP).unwrap(),
        }
    }

    #[test]
    fn parses_files() {
        let d = db();
        assert_eq!(d.users.len(), 2);
        assert_eq!(d.users[1].home, "/srv");
        assert_eq!(d.groups[2].members, ["app", "other"]);
        assert!(d.groups[0].members.is_empty());
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e =
            parse_passwd("/etc/passwd", "root:x:0:0:root:/root:/bin/false\nbad:x:1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/passwd:2: malformed entry (expected 7 `:`-separated fields)"
        );
        let e = parse_group("/etc/group", "a:x:zz:\n").unwrap_err();
        assert_eq!(e.to_string(), "/etc/group:1: invalid number `zz`");
        assert!(parse_group("g", ":x:1:\n").is_err());
        assert!(parse_passwd("p", "a:x:-1:0:::\n").is_err());
    }

    #[test]
    fn resolves_names_numbers_and_memberships() {
        let d = db();
        let c = d
            .resolve(Some("app"), None, &["video".into(), "44".into()])
            .unwrap();
        assert_eq!((c.uid, c.gid), (1000, 1000));
        assert_eq!(c.groups, [44, 29]);
        assert_eq!(c.home.as_deref(), Some("/srv"));
        let c = d.resolve(Some("4242"), Some("audio"), &[]).unwrap();
        assert_eq!((c.uid, c.gid, c.groups.len()), (4242, 29, 0));
        let c = d.resolve(None, None, &[]).unwrap();
        assert_eq!((c.uid, c.gid), (0, 0));
        assert_eq!(
            d.resolve(Some("ghost"), None, &[]),
            Err(AccountError::NoUser("ghost".into()))
        );
        assert_eq!(
            d.resolve(None, Some("wheel"), &[]),
            Err(AccountError::NoGroup("wheel".into()))
        );
    }

    #[test]
    fn missing_files_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Accounts::load(dir.path()).unwrap(), Accounts::default());
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        assert_eq!(Accounts::load(dir.path()).unwrap().users.len(), 2);
    }
}
