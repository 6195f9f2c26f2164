//! Pure: judges a shadow canary against its baseline. Metric samples and
//! `join` conditions in, a verdict per condition out. No I/O.
//!
//! A condition reads `[AGG(]METRIC[)] OP baseline [* K] [+|- C]`, for example
//! `error_rate <= baseline * 1.1` or `p95(p95_ms) <= baseline + 20`. The
//! aggregate (`mean`, the default, `p50`, `p95` or `max`) is taken of the
//! canary's samples and of the baseline's (the active members' samples over
//! the same window). A metric with no samples on either side fails.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Mean,
    P50,
    P95,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

/// `agg(metric) op baseline * scale + offset`. A plan carries it as the
/// text of the farm file; a saved plan whose text does not parse is refused
/// when it is read.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Condition {
    pub text: String,
    pub metric: String,
    pub agg: Agg,
    pub op: Op,
    pub scale: f64,
    pub offset: f64,
}

/// Kayenta-style: a metric also fails when the canary's samples are
/// significantly worse than the baseline's (one-sided Mann-Whitney U test).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    pub confidence: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub condition: String,
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    /// What the canary's value had to meet.
    pub bound: Option<f64>,
    pub pass: bool,
    pub why: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |v: Option<f64>| v.map_or("no samples".to_string(), |x| format!("{x:.4}"));
        write!(f, "`{}`: {}: canary {}, baseline {}", self.condition, if self.pass { "holds" } else { "FAILS" }, num(self.canary), num(self.baseline))?;
        if !self.why.is_empty() {
            write!(f, " ({})", self.why)?;
        }
        Ok(())
    }
}

fn number(s: &str) -> Result<f64, String> {
    s.trim().parse::<f64>().map_err(|_| format!("expected a number, found `{}`", s.trim()))
}

/// The two sides of a comparison and its operator; `example` goes into the error.
fn comparison<'t>(text: &'t str, example: &str) -> Result<(&'t str, Op, &'t str), String> {
    let ops = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)];
    ops.iter()
        .find_map(|(s, op)| text.split_once(s).map(|(l, r)| (l.trim(), *op, r.trim())))
        .ok_or_else(|| format!("expected a comparison such as `{example}`, found `{text}`"))
}

/// Parses one `join` condition.
pub fn parse(text: &str) -> Result<Condition, String> {
    let (left, op, right) = comparison(text, "error_rate <= baseline * 1.1")?;
    let (agg, metric) = match left.split_once('(') {
        Some((a, rest)) => {
            let m = rest.strip_suffix(')').ok_or_else(|| format!("expected `)` after the metric in `{left}`"))?;
            let agg = match a.trim() {
                "mean" => Agg::Mean,
                "p50" => Agg::P50,
                "p95" => Agg::P95,
                "max" => Agg::Max,
                other => return Err(format!("unknown aggregate `{other}`; expected mean, p50, p95 or max")),
            };
            (agg, m.trim())
        }
        None => (Agg::Mean, left),
    };
    if metric.is_empty() || !metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return Err(format!("expected a metric name, found `{metric}`"));
    }
    let rest = right.strip_prefix("baseline").ok_or_else(|| format!("expected the right side to start with `baseline`, found `{right}`"))?.trim();
    let (mut scale, mut offset) = (1.0, 0.0);
    let mut rest = rest;
    if let Some(r) = rest.strip_prefix('*') {
        let end = r.find(['+', '-']).unwrap_or(r.len());
        scale = number(&r[..end])?;
        rest = r[end..].trim();
    }
    if let Some(r) = rest.strip_prefix('+') {
        offset = number(r)?;
    } else if let Some(r) = rest.strip_prefix('-') {
        offset = -number(r)?;
    } else if !rest.is_empty() {
        return Err(format!("expected `* K` or `+ C` after baseline, found `{rest}`"));
    }
    Ok(Condition { text: text.trim().to_string(), metric: metric.to_string(), agg, op, scale, offset })
}

/// A gate's condition on each sample of each host: `METRIC OP NUMBER`, for
/// example `error_rate < 0.05`. A sample without the metric breaks it. A plan
/// carries it as its text, as [`Condition`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Limit {
    pub text: String,
    pub metric: String,
    pub op: Op,
    pub value: f64,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
        }
    }
}

/// Parses one gate condition.
pub fn parse_limit(text: &str) -> Result<Limit, String> {
    let (metric, op, value) = comparison(text, "error_rate < 0.05")?;
    if metric.is_empty() || !metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return Err(format!("expected a metric name on the left, found `{metric}`"));
    }
    let value = number(value)?;
    if !value.is_finite() {
        return Err(format!("expected a finite number on the right, found `{value}`"));
    }
    Ok(Limit { text: text.trim().to_string(), metric: metric.to_string(), op, value })
}

/// A condition's text, as the farm file and a plan hold it, and back.
macro_rules! as_text {
    ($t:ty, $parse:path) => {
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                $parse(&text)
            }
        }
        impl From<$t> for String {
            fn from(c: $t) -> String {
                c.text
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.text)
            }
        }
    };
}
as_text!(Condition, parse);
as_text!(Limit, parse_limit);

impl Limit {
    /// Whether a sample's value of the metric meets the condition; `Err` says
    /// the value and the bound.
    pub fn check(&self, value: Option<f64>) -> Result<(), String> {
        match value {
            None => Err(format!("`{}`: the sample has no `{}`: no data is never a pass", self.text, self.metric)),
            Some(v) if self.op.holds(v, self.value) => Ok(()),
            Some(v) => Err(format!("`{}` FAILS: {} is {v}, which must be {} {}", self.text, self.metric, self.op.symbol(), self.value)),
        }
    }
}

/// The aggregate of `v`, or `None` without samples. Percentiles are nearest-rank.
pub fn aggregate(agg: Agg, v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let rank = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Some(match agg {
        Agg::Mean => s.iter().sum::<f64>() / s.len() as f64,
        Agg::P50 => rank(0.5),
        Agg::P95 => rank(0.95),
        Agg::Max => s[s.len() - 1],
    })
}

/// One-sided Mann-Whitney U test: the probability of seeing the canary's
/// samples this much larger than the baseline's if they came from the same
/// distribution (normal approximation, ties averaged).
pub fn mann_whitney_greater(canary: &[f64], baseline: &[f64]) -> Option<f64> {
    let (n1, n2) = (canary.len() as f64, baseline.len() as f64);
    if canary.is_empty() || baseline.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = canary.iter().map(|v| (*v, true)).chain(baseline.iter().map(|v| (*v, false))).collect();
    all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut ranks = vec![0.0; all.len()];
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        ranks[i..=j].iter_mut().for_each(|x| *x = r);
        i = j + 1;
    }
    let r1: f64 = all.iter().zip(&ranks).filter(|((_, c), _)| *c).map(|(_, r)| r).sum();
    let u1 = r1 - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let sd = (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt();
    if sd == 0.0 {
        return Some(0.5);
    }
    let z = (u1 - mean - 0.5) / sd;
    Some(1.0 - normal_cdf(z))
}

fn normal_cdf(z: f64) -> f64 {
    // Abramowitz and Stegun 7.1.26, good to about 1e-7.
    let t = 1.0 / (1.0 + 0.3275911 * z.abs() / std::f64::consts::SQRT_2);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * (-(z * z) / 2.0).exp();
    if z >= 0.0 {
        0.5 * (1.0 + y)
    } else {
        0.5 * (1.0 - y)
    }
}

/// Judges one condition on the canary's and the baseline's samples of its metric.
pub fn judge(c: &Condition, canary: &[f64], baseline: &[f64], test: Option<MannWhitney>) -> Verdict {
    let (cv, bv) = (aggregate(c.agg, canary), aggregate(c.agg, baseline));
    let (Some(cv), Some(bv)) = (cv, bv) else {
        let side = if canary.is_empty() { "the canary" } else { "the baseline" };
        return Verdict { condition: c.text.clone(), canary: cv, baseline: bv, bound: None, pass: false, why: format!("no `{}` samples from {side}: no data is never a pass", c.metric) };
    };
    let bound = bv * c.scale + c.offset;
    let holds = c.op.holds(cv, bound);
    let mut why = format!("must be {} {bound:.4}", c.op.symbol());
    let mut pass = holds;
    if let Some(t) = test {
        // Worse means larger for `<`/`<=` conditions, smaller for `>`/`>=`.
        let p = match c.op {
            Op::Lt | Op::Le => mann_whitney_greater(canary, baseline),
            Op::Gt | Op::Ge => mann_whitney_greater(&canary.iter().map(|x| -x).collect::<Vec<_>>(), &baseline.iter().map(|x| -x).collect::<Vec<_>>()),
        };
        if let Some(p) = p {
            if p < 1.0 - t.confidence {
                pass = false;
                why.push_str(&format!("; significantly worse than the baseline (Mann-Whitney p = {p:.4})"));
            }
        }
    }
    Verdict { condition: c.text.clone(), canary: Some(cv), baseline: Some(bv), bound: Some(bound), pass, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse() {
        let c = parse("error_rate <= baseline * 1.1").unwrap();
        assert_eq!((c.metric.as_str(), c.agg, c.op, c.scale, c.offset), ("error_rate", Agg::Mean, Op::Le, 1.1, 0.0));
        let c = parse("p95(p95_ms) <= baseline + 20").unwrap();
        assert_eq!((c.metric.as_str(), c.agg, c.op, c.scale, c.offset), ("p95_ms", Agg::P95, Op::Le, 1.0, 20.0));
        let c = parse("max(qps) > baseline * 0.9 - 5").unwrap();
        assert_eq!((c.agg, c.op, c.scale, c.offset), (Agg::Max, Op::Gt, 0.9, -5.0));
        assert!(parse("error_rate <= 0.1").unwrap_err().contains("baseline"));
        assert!(parse("p99(x) < baseline").unwrap_err().contains("aggregate"));
        assert!(parse("error_rate").is_err());
    }

    #[test]
    fn aggregates_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(aggregate(Agg::Mean, &v), Some(10.5));
        assert_eq!(aggregate(Agg::P50, &v), Some(10.0));
        assert_eq!(aggregate(Agg::P95, &v), Some(19.0));
        assert_eq!(aggregate(Agg::Max, &v), Some(20.0));
        assert_eq!(aggregate(Agg::Mean, &[]), None);
    }

    #[test]
    fn verdicts_on_fixed_samples() {
        let c = parse("error_rate <= baseline * 1.1").unwrap();
        let baseline = [0.010, 0.012, 0.011, 0.009, 0.010, 0.011];
        let good = judge(&c, &[0.010, 0.011, 0.010], &baseline, None);
        assert!(good.pass, "{good}");
        let bad = judge(&c, &[0.05, 0.06, 0.055], &baseline, None);
        assert!(!bad.pass, "{bad}");
        assert_eq!(bad.canary, Some(0.055));
        let none = judge(&c, &[], &baseline, None);
        assert!(!none.pass && none.why.contains("no data is never a pass"), "{none}");
        let none = judge(&c, &[0.01], &[], None);
        assert!(!none.pass, "{none}");
        let lat = parse("p95(p95_ms) <= baseline + 20").unwrap();
        assert!(judge(&lat, &[40.0, 45.0, 50.0], &[40.0, 42.0, 44.0, 41.0], None).pass);
        assert!(!judge(&lat, &[70.0, 80.0, 90.0], &[40.0, 42.0, 44.0, 41.0], None).pass);
    }

    #[test]
    fn mann_whitney_matches_known_values() {
        // Identical samples: nothing to see.
        let p = mann_whitney_greater(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(p > 0.4, "{p}");
        // Every canary sample above every baseline sample, 10 and 10: U = 100, z = 3.74, p ~ 0.0001.
        let canary: Vec<f64> = (11..=20).map(f64::from).collect();
        let base: Vec<f64> = (1..=10).map(f64::from).collect();
        let p = mann_whitney_greater(&canary, &base).unwrap();
        assert!(p < 0.001, "{p}");
        // A threshold that holds can still fail the test when the canary is consistently worse.
        let c = parse("error_rate <= baseline * 3").unwrap();
        let v = judge(&c, &canary.iter().map(|x| x / 1000.0).collect::<Vec<_>>(), &base.iter().map(|x| x / 1000.0).collect::<Vec<_>>(), Some(MannWhitney { confidence: 0.95 }));
        assert!(!v.pass && v.why.contains("Mann-Whitney"), "{v}");
        let v = judge(&c, &canary.iter().map(|x| x / 1000.0).collect::<Vec<_>>(), &base.iter().map(|x| x / 1000.0).collect::<Vec<_>>(), None);
        assert!(v.pass, "{v}");
    }

    #[test]
    fn a_gate_limit_says_the_value_and_the_bound() {
        let l = parse_limit("error_rate < 0.05").unwrap();
        assert_eq!(l.check(Some(0.01)), Ok(()));
        let e = l.check(Some(0.2)).unwrap_err();
        assert!(e.contains("error_rate is 0.2") && e.contains("< 0.05"), "{e}");
        assert!(l.check(None).unwrap_err().contains("no data is never a pass"));
        assert_eq!(parse_limit("p95_ms >= 10").unwrap().check(Some(10.0)), Ok(()));
        assert!(parse_limit("error_rate < baseline").is_err());
        assert!(parse_limit("rate(x) < 1").is_err());
        assert!(parse_limit("error_rate 0.05").is_err());
    }

    #[test]
    fn a_plan_carries_conditions_as_their_text_and_refuses_text_that_does_not_parse() {
        let l: Vec<Limit> = serde_json::from_str(r#"["error_rate < 0.05"]"#).unwrap();
        assert_eq!((l[0].metric.as_str(), l[0].op, l[0].value), ("error_rate", Op::Lt, 0.05));
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"["error_rate < 0.05"]"#);
        let c: Condition = serde_json::from_str(r#""p95(p95_ms) <= baseline + 20""#).unwrap();
        assert_eq!((c.agg, c.offset), (Agg::P95, 20.0));
        let bad = serde_json::from_str::<Vec<Limit>>(r#"["error_rate <> 0.05"]"#).unwrap_err().to_string();
        assert!(bad.contains("expected a number, found `> 0.05`"), "{bad}");
        assert!(serde_json::from_str::<Condition>(r#""error_rate <= 0.1""#).is_err());
    }
}
