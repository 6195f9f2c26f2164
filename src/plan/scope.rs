//! `--limit`: which hosts a run covers. Pure.

use crate::farm::{glob, Farm};

/// Selects hosts by names, roles or `*` globs; a leading `!` excludes. With
/// only exclusions (or nothing), the rest of the farm is selected. Every
/// pattern must match something: a typo is an error, not an empty run.
pub fn select(farm: &Farm, limit: &[String]) -> Result<Vec<String>, String> {
    // `--limit "$HOSTS"` with `$HOSTS` unset must not mean the whole farm.
    if !limit.is_empty() && limit.iter().all(|s| s.trim().is_empty()) {
        return Err("--limit is empty, which would select nothing; leave --limit out to mean the whole farm".to_string());
    }
    let (exclude, include): (Vec<&str>, Vec<&str>) =
        limit.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).partition(|s| s.starts_with('!'));
    let matches = |p: &str, name: &str| glob(p, name) || farm.hosts[name].role == p;
    for p in include.iter().copied().chain(exclude.iter().map(|e| &e[1..])) {
        if !farm.hosts.keys().any(|h| matches(p, h)) {
            let names = farm.hosts.keys().map(String::as_str).chain(farm.roles.keys().map(String::as_str));
            return Err(format!("--limit `{p}` matches no host or role in the farm{}", crate::farm::did_you_mean(p, names)));
        }
    }
    Ok(farm
        .hosts
        .keys()
        .filter(|h| include.is_empty() || include.iter().any(|p| matches(p, h)))
        .filter(|h| !exclude.iter().any(|p| matches(&p[1..], h)))
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob("ivr-*", "ivr-1"));
        assert!(glob("*-1", "ivr-1"));
        assert!(!glob("ivr-*", "web-1"));
        assert!(glob("*", ""));
    }
}
