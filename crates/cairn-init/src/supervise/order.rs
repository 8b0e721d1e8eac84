//! Start ordering by `after`.
//!
//! A service may start once every name in its `after` list is satisfied: a
//! target that has been reached (this first cut treats `network-online` and
//! `mounts` as reached from the start) or a service that has been started
//! (its first start attempt is over, whether exec worked or not: `after` is
//! ordering, not a requirement). Among startable services, manifest order
//! wins.

use cairn_manifest::ServiceConfig;

/// Targets a service can name in `after`.
pub const TARGETS: [&str; 3] = ["network-online", "mounts", cairn_manifest::NODE_TARGET];

/// A name in some `after` list that no service or target has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAfter {
    pub service: String,
    pub name: String,
}

/// The `after` names that match neither a service nor a target. They are
/// ignored (with a warning) rather than blocking the service forever.
pub fn unknown_afters(services: &[ServiceConfig]) -> Vec<UnknownAfter> {
    let mut out = Vec::new();
    for s in services {
        for a in &s.after {
            let known = TARGETS.contains(&a.as_str()) || services.iter().any(|o| &o.name == a);
            if !known {
                out.push(UnknownAfter {
                    service: s.name.clone(),
                    name: a.clone(),
                });
            }
        }
    }
    out
}

/// The first service (manifest order) not yet `started` whose `after` names
/// are all satisfied. `target_reached` answers for targets; unknown names
/// count as satisfied.
pub fn next_startable(
    services: &[ServiceConfig],
    started: &[bool],
    target_reached: &dyn Fn(&str) -> bool,
) -> Option<usize> {
    (0..services.len()).find(|&i| {
        !started[i]
            && services[i].after.iter().all(|name| {
                match services.iter().position(|o| &o.name == name) {
                    Some(j) => started[j],
                    None => !TARGETS.contains(&name.as_str()) || target_reached(name),
                }
            })
    })
}

/// The order the services would start in if every start is immediate, and
/// the ones that never can (a cycle in `after`).
pub fn start_sequence(
    services: &[ServiceConfig],
    target_reached: &dyn Fn(&str) -> bool,
) -> (Vec<usize>, Vec<usize>) {
    let mut started = vec![false; services.len()];
    let mut order = Vec::new();
    while let Some(i) = next_startable(services, &started, target_reached) {
        started[i] = true;
        order.push(i);
    }
    let blocked = (0..services.len()).filter(|&i| !started[i]).collect();
    (order, blocked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_manifest::RestartPolicy;

    fn svc(name: &str, after: &[&str]) -> ServiceConfig {
        ServiceConfig {
            restart: RestartPolicy::Never,
            after: after.iter().map(|s| s.to_string()).collect(),
            ..ServiceConfig::new(name, &["/bin/true"])
        }
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn manifest_order_without_after() {
        let s = [svc("a", &[]), svc("b", &[]), svc("c", &[])];
        assert_eq!(start_sequence(&s, &all), (vec![0, 1, 2], vec![]));
    }

    #[test]
    fn after_moves_a_service_behind_its_dependency() {
        let s = [
            svc("web", &["db", "network-online"]),
            svc("db", &["mounts"]),
            svc("log", &[]),
        ];
        assert_eq!(start_sequence(&s, &all), (vec![1, 0, 2], vec![]));
    }

    #[test]
    fn chain_resolves_in_one_pass() {
        let s = [svc("c", &["b"]), svc("b", &["a"]), svc("a", &[])];
        assert_eq!(start_sequence(&s, &all), (vec![2, 1, 0], vec![]));
    }

    #[test]
    fn cycle_is_blocked_others_start() {
        let s = [svc("x", &["y"]), svc("y", &["x"]), svc("z", &[])];
        assert_eq!(start_sequence(&s, &all), (vec![2], vec![0, 1]));
    }

    #[test]
    fn unreached_target_waits() {
        let s = [svc("a", &["network-online"]), svc("b", &[])];
        let none = |_: &str| false;
        assert_eq!(start_sequence(&s, &none), (vec![1], vec![0]));
    }

    #[test]
    fn unknown_names_are_reported_and_ignored() {
        let s = [svc("a", &["nosuch", "mounts"]), svc("b", &["a"])];
        assert_eq!(
            unknown_afters(&s),
            vec![UnknownAfter {
                service: "a".into(),
                name: "nosuch".into()
            }]
        );
        assert_eq!(start_sequence(&s, &all), (vec![0, 1], vec![]));
    }
}
