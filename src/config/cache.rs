//! `DOSCache`: which shared store holds the three areas.

use super::{DEFAULT_CACHE_BYTES, MAX_CACHE_BYTES, MIN_CACHE_BYTES};
use std::fmt;

/// The store behind the site, page and block areas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheSpec {
    /// The built-in shmcb-style tables, `bytes` per area, in anonymous shared memory
    /// (`shmcb`, `shmcb:none(BYTES)`).
    Shmcb { bytes: usize },
    /// The same tables in a file mapped shared (`shmcb:/abs/path(BYTES)`), so they outlive
    /// the server.
    File { path: String, bytes: usize },
    /// Several servers sharing counts and blocks through Redis or memcached
    /// (`redis:HOST:PORT`, `memcache:HOST:PORT`; see `crate::farm`), with the built-in tables
    /// of the default size in front.
    Farm(crate::farm::FarmSpec),
}

impl Default for CacheSpec {
    fn default() -> Self {
        CacheSpec::Shmcb {
            bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl fmt::Display for CacheSpec {
    /// As it is written in a configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheSpec::Shmcb { bytes } => write!(f, "shmcb:none({bytes})"),
            CacheSpec::File { path, bytes } => write!(f, "shmcb:{path}({bytes})"),
            CacheSpec::Farm(spec) => f.write_str(&spec.label),
        }
    }
}

/// Parses a `DOSCache` value. The error says why (the caller adds directive and value).
pub(crate) fn parse_cache(v: &str) -> Result<CacheSpec, String> {
    let (name, args) = v.split_once(':').unwrap_or((v, ""));
    if name.eq_ignore_ascii_case("shmcb") {
        let bytes = shmcb_size(args)?;
        let path = args.split_once('(').map_or(args, |(p, _)| p);
        if path.is_empty() || path.eq_ignore_ascii_case("none") {
            return Ok(CacheSpec::Shmcb { bytes });
        }
        if !path.starts_with('/') {
            return Err(format!(
                "has the relative path '{path}' (expected an absolute path, e.g. \
                 shmcb:/var/lib/mod_shield/shield.store(BYTES), or shmcb:none(BYTES))"
            ));
        }
        if path.ends_with('/') || path.chars().any(|c| c.is_control()) {
            return Err(format!("has the path '{path}', which does not name a file"));
        }
        return Ok(CacheSpec::File {
            path: path.to_string(),
            bytes,
        });
    }
    if ["redis", "valkey", "memcache"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
    {
        return crate::farm::FarmSpec::parse(name, args).map(CacheSpec::Farm);
    }
    Err(format!(
        "is not shmcb[:none|:/path](BYTES), redis:HOST:PORT[,HOST:PORT...], \
         redis://[user:pass@]HOST:PORT or memcache:HOST:PORT[,HOST:PORT...] \
         (Apache's socache providers are not used: '{name}' is not an engine mod_shield speaks)"
    ))
}

/// shmcb's argument: `[path][(BYTES)]`, as mod_socache_shmcb reads it.
fn shmcb_size(args: &str) -> Result<usize, String> {
    let Some(open) = args.find('(') else {
        if args.contains(')') {
            return Err("has a ')' without '('".to_string());
        }
        return Ok(DEFAULT_CACHE_BYTES);
    };
    let Some(inner) = args[open + 1..].strip_suffix(')') else {
        return Err("has an unclosed '(' (expected shmcb:none(BYTES))".to_string());
    };
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "has size '{inner}', which is not a number of bytes"
        ));
    }
    let bytes: usize = inner
        .parse()
        .map_err(|_| format!("has size {inner}, above the maximum of {MAX_CACHE_BYTES} bytes"))?;
    if bytes < MIN_CACHE_BYTES {
        return Err(format!(
            "has size {bytes}, below the minimum of {MIN_CACHE_BYTES} bytes"
        ));
    }
    if bytes > MAX_CACHE_BYTES {
        return Err(format!(
            "has size {bytes}, above the maximum of {MAX_CACHE_BYTES} bytes"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm(bytes: usize) -> CacheSpec {
        CacheSpec::Shmcb { bytes }
    }

    #[test]
    fn shmcb_forms() {
        assert_eq!(parse_cache("shmcb"), Ok(shm(DEFAULT_CACHE_BYTES)));
        assert_eq!(parse_cache("shmcb:"), Ok(shm(DEFAULT_CACHE_BYTES)));
        assert_eq!(parse_cache("shmcb:none"), Ok(shm(DEFAULT_CACHE_BYTES)));
        assert_eq!(parse_cache("shmcb:none(524288)"), Ok(shm(524_288)));
        assert_eq!(parse_cache("shmcb:(1048576)"), Ok(shm(1_048_576)));
        assert_eq!(parse_cache("shmcb:NONE(8192)"), Ok(shm(8192)));
    }

    #[test]
    fn shmcb_file_forms() {
        let file = |path: &str, bytes| CacheSpec::File {
            path: path.into(),
            bytes,
        };
        assert_eq!(
            parse_cache("SHMCB:/run/x/shield(8192)"),
            Ok(file("/run/x/shield", 8192))
        );
        assert_eq!(
            parse_cache("shmcb:/var/lib/mod_shield/shield.store"),
            Ok(file(
                "/var/lib/mod_shield/shield.store",
                DEFAULT_CACHE_BYTES
            ))
        );
        for bad in ["shmcb:shield.store(8192)", "shmcb:/tmp/(8192)", "shmcb:rel"] {
            assert!(parse_cache(bad).is_err(), "{bad}");
        }
        assert!(parse_cache("shmcb:rel(9000)")
            .unwrap_err()
            .contains("'rel'"));
    }

    #[test]
    fn shmcb_errors() {
        for bad in [
            "shmcb:none(100)",
            "shmcb:none(8191)",
            "shmcb:none(",
            "shmcb:none(524288",
            "shmcb:none(abc)",
            "shmcb:none()",
            "shmcb:none(-1)",
            "shmcb:none(524288)x",
            "shmcb:none)",
            "shmcb:none(99999999999999999999999)",
            "shmcb:none(1073741825)",
        ] {
            assert!(parse_cache(bad).is_err(), "{bad}");
        }
        assert!(parse_cache("shmcb:none(100)").unwrap_err().contains("100"));
    }

    #[test]
    fn engines() {
        match parse_cache("memcache:10.0.0.1:11211,10.0.0.2:11211") {
            Ok(CacheSpec::Farm(f)) => {
                assert_eq!(f.engine, crate::farm::Engine::Memcache);
                assert_eq!(f.nodes, ["10.0.0.1:11211", "10.0.0.2:11211"]);
            }
            other => panic!("{other:?}"),
        }
        match parse_cache("redis:127.0.0.1:6379") {
            Ok(CacheSpec::Farm(f)) => assert_eq!(f.engine, crate::farm::Engine::Redis),
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            ":x",
            "redis",
            "memcache:",
            "a b:c",
            "re/dis:x",
            "dbm",
            "dbm:/tmp/x",
        ] {
            assert!(parse_cache(bad).is_err(), "{bad}");
        }
        assert!(parse_cache("dbm").unwrap_err().contains("'dbm'"));
    }

    #[test]
    fn display_parses_back() {
        for v in [
            "shmcb:none(9000)",
            "shmcb:/var/lib/s.store(9000)",
            "redis:h:1",
            "memcache:a:1,b:2",
            "redis:a:1,b:2,c:3",
        ] {
            let c = parse_cache(v).unwrap();
            assert_eq!(parse_cache(&c.to_string()), Ok(c));
        }
    }
}
