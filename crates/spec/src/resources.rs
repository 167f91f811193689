//! `containers[0].resources`: what one instance reserves where it runs
//! (CPU in millicores, memory in bytes), read from Kubernetes quantities
//! (`500m`, `0.5`, `2`; `128Mi`, `1G`, `129e6`). `requests` is what the
//! placement reserves; a field given only under `limits` is its request
//! too, as in Kubernetes. Stratus does not enforce limits beyond that.

use crate::convert::{Ctx, MapView};
use crate::model::Resources;
use stratus_yaml::Node;

/// The largest CPU request: millicores must fit a `u32`.
const MAX_MILLICORES: u128 = u32::MAX as u128;
/// The largest memory request: 1 EiB.
const MAX_MEMORY: u128 = 1 << 60;

/// Why a quantity is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("expected a quantity such as {example}, found {found:?}")]
    Syntax {
        example: &'static str,
        found: String,
    },
    #[error("{found:?} is {what}; give at least {least}")]
    TooSmall {
        found: String,
        what: &'static str,
        least: &'static str,
    },
    #[error("{found:?} is more than {most}")]
    TooLarge { found: String, most: &'static str },
}

/// A Kubernetes quantity as an exact fraction `num / den` (den a power of
/// ten), or `None` when it is not one: digits with an optional fraction,
/// then a binary suffix (Ki…Ei), a decimal suffix (n u m k M G T P E) or an
/// exponent (`e3`). No sign: resources are never negative.
fn quantity(s: &str) -> Option<(u128, u128)> {
    let s = s.trim();
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || int.len() + frac.len() > 24 {
        return None;
    }
    let mut num: u128 = 0;
    for c in int.bytes().chain(frac.bytes()) {
        num = num * 10 + u128::from(c - b'0');
    }
    let mut den: u128 = 10u128.pow(frac.len() as u32);
    let pow = |base: u128, e: u32| base.checked_pow(e);
    let (mul, div): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (pow(10, 6)?, 1),
        "G" => (pow(10, 9)?, 1),
        "T" => (pow(10, 12)?, 1),
        "P" => (pow(10, 15)?, 1),
        "E" => (pow(10, 18)?, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp = &e[1..];
            let (neg, digits) = match exp.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, exp.strip_prefix('+').unwrap_or(exp)),
            };
            if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let n: u32 = digits.parse().ok()?;
            if n > 24 {
                return None;
            }
            if neg {
                (1, pow(10, n)?)
            } else {
                (pow(10, n)?, 1)
            }
        }
        _ => return None,
    };
    num = num.checked_mul(mul)?;
    den = den.checked_mul(div)?;
    Some((num, den))
}

/// CPU: cores (`0.5`, `2`) or millicores (`500m`) → millicores, rounded up
/// to a whole millicore as Kubernetes does; at least 1m.
pub fn parse_cpu(s: &str) -> Result<u32, QuantityError> {
    let (num, den) = quantity(s).ok_or_else(|| QuantityError::Syntax {
        example: "500m or 2",
        found: s.to_string(),
    })?;
    let milli = (num
        .checked_mul(1000)
        .ok_or_else(|| QuantityError::TooLarge {
            found: s.to_string(),
            most: "4294967295m",
        })?)
    .div_ceil(den);
    if milli == 0 {
        return Err(QuantityError::TooSmall {
            found: s.to_string(),
            what: "no CPU",
            least: "1m",
        });
    }
    if milli > MAX_MILLICORES {
        return Err(QuantityError::TooLarge {
            found: s.to_string(),
            most: "4294967295m",
        });
    }
    Ok(milli as u32)
}

/// Memory: bytes (`134217728`, `128Mi`, `1G`, `129e6`), rounded up to a
/// whole byte; at least 1.
pub fn parse_memory(s: &str) -> Result<u64, QuantityError> {
    let (num, den) = quantity(s).ok_or_else(|| QuantityError::Syntax {
        example: "128Mi or 1G",
        found: s.to_string(),
    })?;
    let bytes = num.div_ceil(den);
    if bytes == 0 {
        return Err(QuantityError::TooSmall {
            found: s.to_string(),
            what: "no memory",
            least: "1 byte",
        });
    }
    if bytes > MAX_MEMORY {
        return Err(QuantityError::TooLarge {
            found: s.to_string(),
            most: "1Ei",
        });
    }
    Ok(bytes as u64)
}

/// Reads `path` (`containers[0].resources`) into `out`.
pub(crate) fn read(ctx: &mut Ctx<'_>, node: &Node, path: &str, out: &mut Resources) {
    let Some(mut r) = MapView::new(ctx, node, path) else {
        return;
    };
    let requests = r
        .get("requests")
        .map(|n| section(ctx, n, &format!("{path}.requests")));
    let limits = r
        .get("limits")
        .map(|n| section(ctx, n, &format!("{path}.limits")));
    r.finish(ctx, &["claims"], &[]);
    let (requests, limits) = (requests.unwrap_or_default(), limits.unwrap_or_default());
    for (what, req, lim) in [
        (
            "cpu",
            requests.cpu.map(|(v, p)| (u128::from(v), p)),
            limits.cpu.map(|(v, _)| u128::from(v)),
        ),
        (
            "memory",
            requests.memory.map(|(v, p)| (u128::from(v), p)),
            limits.memory.map(|(v, _)| u128::from(v)),
        ),
    ] {
        if let (Some((r, pos)), Some(l)) = (req, lim) {
            if r > l {
                ctx.error(
                    pos,
                    format!("{path}.requests.{what} is more than {path}.limits.{what}; a request must fit its limit"),
                );
            }
        }
    }
    out.millicores = requests.cpu.or(limits.cpu).map(|(v, _)| v);
    out.memory_bytes = requests.memory.or(limits.memory).map(|(v, _)| v);
}

#[derive(Default)]
struct Section {
    cpu: Option<(u32, crate::model::Pos)>,
    memory: Option<(u64, crate::model::Pos)>,
}

fn section(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Section {
    let mut s = Section::default();
    let Some(mut m) = MapView::new(ctx, node, path) else {
        return s;
    };
    if let Some(n) = m.get("cpu") {
        if let Some(text) = ctx.string(n, &format!("{path}.cpu")) {
            match parse_cpu(&text) {
                Ok(v) => s.cpu = Some((v, n.pos)),
                Err(e) => ctx.error(n.pos, format!("{path}.cpu: {e}")),
            }
        }
    }
    if let Some(n) = m.get("memory") {
        if let Some(text) = ctx.string(n, &format!("{path}.memory")) {
            match parse_memory(&text) {
                Ok(v) => s.memory = Some((v, n.pos)),
                Err(e) => ctx.error(n.pos, format!("{path}.memory: {e}")),
            }
        }
    }
    m.finish(
        ctx,
        &["ephemeral-storage"],
        &[(
            "nvidia.com/gpu",
            "GPUs are not scheduled by Stratus (ignored)",
        )],
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        for (s, want) in [
            ("500m", 500),
            ("0.5", 500),
            ("2", 2000),
            ("1.0005", 1001),
            ("100000u", 100),
            ("1e3", 1_000_000),
            ("1e-3", 1),
            ("0.0001", 1),
            (" 250m ", 250),
            (".5", 500),
            ("1k", 1_000_000),
        ] {
            assert_eq!(parse_cpu(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn memory_quantities() {
        for (s, want) in [
            ("128Mi", 128 << 20),
            ("1G", 1_000_000_000),
            ("129e6", 129_000_000),
            ("134217728", 134_217_728),
            ("1.5Gi", 3 << 29),
            ("1Ei", 1 << 60),
            ("1500m", 2),
        ] {
            assert_eq!(parse_memory(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn nasty_quantities_are_refused_with_what_was_found() {
        for s in [
            "",
            " ",
            "m",
            "-1",
            "+1",
            "1..2",
            "1.2.3",
            "1 Mi",
            "1mi",
            "1MB",
            "0x10",
            "1e",
            "1e+",
            "1e999",
            "1e-99",
            "NaN",
            "inf",
            "1Zi",
            "１",
            "1ee3",
            "99999999999999999999999999",
        ] {
            let e = parse_memory(s).unwrap_err().to_string();
            assert!(e.contains(&format!("{:?}", s)), "{s}: {e}");
            assert!(parse_cpu(s).is_err(), "{s}");
        }
        assert!(parse_cpu("0")
            .unwrap_err()
            .to_string()
            .contains("at least 1m"));
        // Rounded up to a whole millicore, as Kubernetes does.
        assert_eq!(parse_cpu("0.0000000001"), Ok(1));
        assert!(parse_cpu("1e3m").is_err(), "an exponent and a suffix");
        assert!(parse_cpu("5000000")
            .unwrap_err()
            .to_string()
            .contains("more than"));
        assert!(parse_memory("0Mi")
            .unwrap_err()
            .to_string()
            .contains("at least 1 byte"));
        assert!(parse_memory("2Ei")
            .unwrap_err()
            .to_string()
            .contains("more than 1Ei"));
        assert!(parse_memory("1e24").is_err());
    }
}

#[cfg(test)]
mod yaml_tests {
    const HEAD: &str = "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: echo\nspec:\n  template:\n    spec:\n      containers:\n        - command: [echo]\n          resources:\n";

    fn service(resources: &str) -> Result<crate::Service, String> {
        let b = crate::parse("t.yaml", &format!("{HEAD}{resources}")).map_err(|e| e.to_string())?;
        Ok(b.services.into_iter().next().unwrap())
    }

    #[test]
    fn requests_are_read_and_limits_stand_in_for_missing_requests() {
        let s = service(
            "            requests: {cpu: 250m}\n            limits: {cpu: 1, memory: 256Mi}\n",
        )
        .unwrap();
        assert_eq!(s.resources.millicores, Some(250));
        assert_eq!(s.resources.memory_bytes, Some(256 << 20));
        let s = service("            claims: []\n").unwrap();
        assert!(s.resources.is_unset());
    }

    #[test]
    fn bad_resources_name_the_field_and_line() {
        let e = service("            requests:\n              cpu: lots\n").unwrap_err();
        assert!(
            e.contains("t.yaml:12:")
                && e.contains("containers[0].resources.requests.cpu: expected a quantity such as 500m or 2, found \"lots\""),
            "{e}"
        );
        let e =
            service("            requests: {memory: 1Gi}\n            limits: {memory: 512Mi}\n")
                .unwrap_err();
        assert!(
            e.contains("t.yaml:11:") && e.contains("requests.memory is more than"),
            "{e}"
        );
        let e = service("            requests: [1]\n").unwrap_err();
        assert!(e.contains("resources.requests: expected"), "{e}");
        let e = service("            requests: {cpu: \"0\"}\n").unwrap_err();
        assert!(e.contains("at least 1m"), "{e}");
    }
}
