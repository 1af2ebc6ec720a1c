//! The aggregation functions of `aggregate`: their configuration and their
//! accumulators. Percentiles come from a DDSketch (`sketches-ddsketch`,
//! relative error 1 %), distinct counts from a HyperLogLog
//! (`cardinality-estimator`, Cloudflare's: exact for small sets, 2^14
//! registers past them, about 0.8 % standard error).

use crate::components::stateful::hash_value;
use crate::core::{Number, Value};
use crate::expr::Program;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

/// The word `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CountWord {
    /// The number of events in the window.
    Count,
}

/// One aggregation: `count`, or a function of a jq expression.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum AggregationConfig {
    /// `count`: the number of events in the (group, window).
    Count(CountWord),
    /// Exactly one of `sum`, `min`, `max`, `avg`, `percentile` (with `p`),
    /// `count_distinct`, `first`, `last`, naming a jq expression, e.g.
    /// `{sum: '.bytes'}`, `{percentile: '.latency_ms', p: 0.99}`.
    Of(Box<AggregationOf>),
}

/// A function of one jq expression. A value that is missing (null) or of
/// the wrong type (not a number for `sum`/`min`/`max`/`avg`/`percentile`)
/// is skipped for this aggregation only and counted in
/// `flowgate_errors_total{error_type="aggregation_skipped"}`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregationOf {
    /// Sum of the numbers (an integer while every value is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sum: Option<String>,
    /// Smallest number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    /// Largest number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// Mean of the numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg: Option<String>,
    /// The `p` quantile of the numbers (nearest rank: the smallest value with at least a
    /// fraction `p` of the values at or below it), relative error at most 1 % (DDSketch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<String>,
    /// With `percentile`: the quantile, between 0 and 1 (0.99 is p99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    /// Number of distinct values (any JSON), relative error at most 2 %
    /// (HyperLogLog; exact for small counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_distinct: Option<String>,
    /// The value of the first event (in arrival order) where it is not null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    /// The value of the last event (in arrival order) where it is not null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Percentile,
    CountDistinct,
    First,
    Last,
}

impl AggregationConfig {
    /// The function and its expression, or what is wrong with the entry.
    pub fn parts(&self) -> Result<(Kind, Option<&str>, f64), String> {
        let of = match self {
            Self::Count(_) => return Ok((Kind::Count, None, 0.0)),
            Self::Of(of) => of,
        };
        let named = [
            (Kind::Sum, &of.sum),
            (Kind::Min, &of.min),
            (Kind::Max, &of.max),
            (Kind::Avg, &of.avg),
            (Kind::Percentile, &of.percentile),
            (Kind::CountDistinct, &of.count_distinct),
            (Kind::First, &of.first),
            (Kind::Last, &of.last),
        ];
        let mut given = named
            .iter()
            .filter_map(|(k, e)| e.as_deref().map(|e| (*k, e)));
        let Some((kind, expr)) = given.next() else {
            return Err("names no function: give one of sum, min, max, avg, percentile, count_distinct, first, last (or the word count)".into());
        };
        if given.next().is_some() {
            return Err("names more than one function: use one entry per aggregation".into());
        }
        let p = match (kind, of.p) {
            (Kind::Percentile, Some(p)) if p > 0.0 && p <= 1.0 => p,
            (Kind::Percentile, Some(p)) => {
                return Err(format!(
                    "p: {p} is not a quantile: give a number in (0, 1], e.g. 0.99"
                ));
            }
            (Kind::Percentile, None) => {
                return Err("percentile needs p, the quantile (e.g. p: 0.99)".into());
            }
            (_, Some(_)) => return Err("p applies to percentile only".into()),
            (_, None) => 0.0,
        };
        Ok((kind, Some(expr), p))
    }
}

/// One compiled aggregation.
pub struct AggFn {
    pub field: String,
    pub kind: Kind,
    pub program: Option<Program>,
    pub p: f64,
}

/// Bins of a percentile sketch: with 1 % accuracy, 2048 bins span values
/// over 17 orders of magnitude before the lowest bins collapse.
const SKETCH_BINS: u32 = 2048;
type Distinct = cardinality_estimator::CardinalityEstimator<u64, Prehashed, 14, 6>;

/// The estimator's hasher type; values are hashed before they reach it
/// (`insert_hash`, SipHash with fixed keys: good bits for HyperLogLog's
/// leading-zero counts, the same in every run), so this one never runs
/// on data.
#[derive(Default)]
pub struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

/// The sketch's argument for the nearest-rank `p` quantile of `n` values
/// (the smallest value with at least a fraction `p` of the values at or
/// below it: p99 of 100 and 300 is 300): the sketch itself takes rank
/// floor(q * (n - 1)), the lower one.
pub(super) fn nearest_rank(p: f64, n: usize) -> f64 {
    if n <= 1 {
        return p;
    }
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    ((rank as f64 + 0.5) / (n - 1) as f64).min(1.0)
}

/// The running state of one aggregation in one (group, window).
pub enum Acc {
    Count(u64),
    Sum {
        int: i64,
        float: f64,
        all_int: bool,
        any: bool,
    },
    Min(Option<(f64, Number)>),
    Max(Option<(f64, Number)>),
    Avg {
        sum: f64,
        n: u64,
    },
    Percentile(Box<DDSketch>),
    CountDistinct(Distinct),
    /// (arrival sequence, value): merging sessions keeps the earliest.
    First(Option<(u64, Value)>),
    Last(Option<(u64, Value)>),
}

fn number(v: &Value) -> Option<(f64, &Number)> {
    match v {
        Value::Number(n) => n.as_f64().map(|f| (f, n)),
        _ => None,
    }
}

impl Acc {
    pub fn new(kind: Kind) -> Self {
        match kind {
            Kind::Count => Acc::Count(0),
            Kind::Sum => Acc::Sum {
                int: 0,
                float: 0.0,
                all_int: true,
                any: false,
            },
            Kind::Min => Acc::Min(None),
            Kind::Max => Acc::Max(None),
            Kind::Avg => Acc::Avg { sum: 0.0, n: 0 },
            Kind::Percentile => Acc::Percentile(Box::new(DDSketch::new(SketchConfig::new(
                0.01,
                SKETCH_BINS,
                1.0e-9,
            )))),
            Kind::CountDistinct => Acc::CountDistinct(Distinct::new()),
            Kind::First => Acc::First(None),
            Kind::Last => Acc::Last(None),
        }
    }

    /// Adds one event's value (`None` for `count`); false when the value
    /// was skipped (null or of the wrong type).
    pub fn add(&mut self, v: Option<&Value>, seq: u64) -> bool {
        let v = match (self, v) {
            (Acc::Count(n), _) => {
                *n += 1;
                return true;
            }
            (_, None | Some(Value::Null)) => return false,
            (acc, Some(v)) => (acc, v),
        };
        match v {
            (
                Acc::Sum {
                    int,
                    float,
                    all_int,
                    any,
                },
                v,
            ) => {
                let Some((f, n)) = number(v) else {
                    return false;
                };
                *any = true;
                *float += f;
                if *all_int {
                    match n.as_i64().and_then(|i| int.checked_add(i)) {
                        Some(sum) => *int = sum,
                        None => *all_int = false,
                    }
                }
            }
            (Acc::Min(m), v) => {
                let Some((f, n)) = number(v) else {
                    return false;
                };
                if m.as_ref().is_none_or(|(cur, _)| f < *cur) {
                    *m = Some((f, n.clone()));
                }
            }
            (Acc::Max(m), v) => {
                let Some((f, n)) = number(v) else {
                    return false;
                };
                if m.as_ref().is_none_or(|(cur, _)| f > *cur) {
                    *m = Some((f, n.clone()));
                }
            }
            (Acc::Avg { sum, n }, v) => {
                let Some((f, _)) = number(v) else {
                    return false;
                };
                *sum += f;
                *n += 1;
            }
            (Acc::Percentile(s), v) => {
                let Some((f, _)) = number(v) else {
                    return false;
                };
                s.add(f);
            }
            (Acc::CountDistinct(d), v) => {
                let mut h = std::hash::DefaultHasher::new();
                hash_value(v, &mut h);
                d.insert_hash(std::hash::Hasher::finish(&h));
            }
            (Acc::First(f), v) => {
                if f.is_none() {
                    *f = Some((seq, v.clone()));
                }
            }
            (Acc::Last(l), v) => *l = Some((seq, v.clone())),
            (Acc::Count(_), _) => unreachable!("handled above"),
        }
        true
    }

    /// Takes in `other`, an accumulator of the same function (two session
    /// windows an event joined).
    pub fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (
                Acc::Sum {
                    int,
                    float,
                    all_int,
                    any,
                },
                Acc::Sum {
                    int: i2,
                    float: f2,
                    all_int: a2,
                    any: any2,
                },
            ) => {
                *float += f2;
                *any |= any2;
                match int.checked_add(i2) {
                    Some(s) if *all_int && a2 => *int = s,
                    _ => *all_int = false,
                }
            }
            (Acc::Min(a), Acc::Min(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|(x, _)| b.0 < *x)
                {
                    *a = Some(b);
                }
            }
            (Acc::Max(a), Acc::Max(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|(x, _)| b.0 > *x)
                {
                    *a = Some(b);
                }
            }
            (Acc::Avg { sum, n }, Acc::Avg { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Percentile(a), Acc::Percentile(b)) => {
                // Same configuration on both sides: merging cannot fail.
                let _ = a.merge(&b);
            }
            (Acc::CountDistinct(a), Acc::CountDistinct(b)) => a.merge(&b),
            (Acc::First(a), Acc::First(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|(s, _)| b.0 < *s)
                {
                    *a = Some(b);
                }
            }
            (Acc::Last(a), Acc::Last(b)) => {
                if let Some(b) = b
                    && a.as_ref().is_none_or(|(s, _)| b.0 > *s)
                {
                    *a = Some(b);
                }
            }
            _ => unreachable!("accumulators of one aggregation have one kind"),
        }
    }

    /// The output value; null when no value was aggregated.
    pub fn finish(self, p: f64) -> Value {
        let float = |f: f64| Number::from_f64(f).map_or(Value::Null, Value::Number);
        match self {
            Acc::Count(n) => Value::Number(n.into()),
            Acc::Sum { any: false, .. } => Value::Null,
            Acc::Sum {
                int, all_int: true, ..
            } => Value::Number(int.into()),
            Acc::Sum { float: f, .. } => float(f),
            Acc::Min(m) | Acc::Max(m) => m.map_or(Value::Null, |(_, n)| Value::Number(n)),
            Acc::Avg { n: 0, .. } => Value::Null,
            Acc::Avg { sum, n } => float(sum / n as f64),
            // The sketch answers within 1 %; the true quantile lies within
            // the values seen, so a lone value comes back exactly.
            Acc::Percentile(s) => match (
                s.quantile(nearest_rank(p, s.count())).ok().flatten(),
                s.min(),
                s.max(),
            ) {
                (Some(q), Some(lo), Some(hi)) => float(q.clamp(lo, hi)),
                _ => Value::Null,
            },
            Acc::CountDistinct(d) => Value::Number((d.estimate() as u64).into()),
            Acc::First(v) | Acc::Last(v) => v.map_or(Value::Null, |(_, v)| v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ev;

    fn agg(kind: Kind, values: &[Value]) -> Value {
        let mut acc = Acc::new(kind);
        for (i, v) in values.iter().enumerate() {
            acc.add(Some(v), i as u64);
        }
        acc.finish(0.5)
    }

    #[test]
    fn small_aggregations_are_exact() {
        let vals = [ev!(3), ev!(1), ev!(null), ev!("x"), ev!(2)];
        assert_eq!(agg(Kind::Sum, &vals), ev!(6));
        assert_eq!(agg(Kind::Sum, &[ev!(1), ev!(0.5)]), ev!(1.5));
        assert_eq!(agg(Kind::Sum, &[ev!(null)]), ev!(null));
        assert_eq!(agg(Kind::Min, &vals), ev!(1));
        assert_eq!(agg(Kind::Max, &vals), ev!(3));
        assert_eq!(agg(Kind::Avg, &vals), ev!(2.0));
        assert_eq!(agg(Kind::CountDistinct, &vals), ev!(4));
        assert_eq!(agg(Kind::First, &vals), ev!(3));
        assert_eq!(agg(Kind::Last, &vals), ev!(2));
        let mut a = Acc::new(Kind::Sum);
        assert!(!a.add(Some(&ev!("x")), 0), "a string is skipped");
        assert!(!a.add(None, 0), "a missing value is skipped");
    }

    #[test]
    fn merged_accumulators_equal_one_over_all_values() {
        for kind in [
            Kind::Count,
            Kind::Sum,
            Kind::Min,
            Kind::Max,
            Kind::Avg,
            Kind::First,
            Kind::Last,
            Kind::CountDistinct,
        ] {
            let (mut a, mut b, mut whole) = (Acc::new(kind), Acc::new(kind), Acc::new(kind));
            for i in 0..10u64 {
                let v = ev!(i * 7 % 5);
                if i % 3 == 0 {
                    a.add(Some(&v), i)
                } else {
                    b.add(Some(&v), i)
                };
                whole.add(Some(&v), i);
            }
            b.merge(a);
            assert_eq!(b.finish(0.5), whole.finish(0.5), "{kind:?}");
        }
    }

    #[test]
    fn config_entries_name_one_function() {
        let c: AggregationConfig = serde_yaml::from_str("{percentile: .x, p: 0.99}").unwrap();
        assert_eq!(c.parts().unwrap(), (Kind::Percentile, Some(".x"), 0.99));
        let c: AggregationConfig = serde_yaml::from_str("count").unwrap();
        assert_eq!(c.parts().unwrap().0, Kind::Count);
        for bad in [
            "{sum: .x, max: .x}",
            "{percentile: .x}",
            "{percentile: .x, p: 2}",
            "{sum: .x, p: 0.5}",
        ] {
            let c: AggregationConfig = serde_yaml::from_str(bad).unwrap();
            assert!(c.parts().is_err(), "{bad}");
        }
        assert!(serde_yaml::from_str::<AggregationConfig>("cnt").is_err());
    }
}
