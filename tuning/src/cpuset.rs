//! CPU numbers as a set, in the kernel's list syntax (`0-3,6`): parsed from config and
//! from `/sys/devices/system/cpu/online` and `/proc/irq/*/smp_affinity_list`, and printed
//! back the same way.

use std::collections::BTreeSet;
use std::fmt;

/// The largest CPU number accepted, Linux's `NR_CPUS` ceiling: a list naming more is a
/// typo, and bounding it bounds the set's size.
pub const CPU_MAX: usize = 8191;

/// A set of CPU numbers, kept sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSet(BTreeSet<usize>);

/// Why a CPU list did not parse; the caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuListError {
    #[error("{0:?} is not a CPU number or range (like 2-15)")]
    NotACpu(String),
    #[error("range {0:?} runs backwards")]
    Backwards(String),
    #[error("CPU {0} is above the largest CPU number {CPU_MAX}")]
    TooLarge(usize),
    #[error("no CPUs listed")]
    Empty,
}

impl CpuSet {
    pub fn new() -> CpuSet {
        CpuSet::default()
    }

    /// Parses `1,3,5-7`; blanks around items are allowed, an empty list is an error.
    pub fn parse_list(text: &str) -> Result<CpuSet, CpuListError> {
        let mut set = BTreeSet::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (cpu_number(a, part)?, cpu_number(b, part)?);
                    if a > b {
                        return Err(CpuListError::Backwards(part.to_string()));
                    }
                    (a, b)
                }
                None => {
                    let n = cpu_number(part, part)?;
                    (n, n)
                }
            };
            set.extend(first..=last);
        }
        if set.is_empty() {
            return Err(CpuListError::Empty);
        }
        Ok(CpuSet(set))
    }

    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    pub fn insert(&mut self, cpu: usize) {
        self.0.insert(cpu);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    pub fn to_vec(&self) -> Vec<usize> {
        self.0.iter().copied().collect()
    }
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> CpuSet {
        CpuSet(iter.into_iter().collect())
    }
}

fn cpu_number(text: &str, part: &str) -> Result<usize, CpuListError> {
    let n: usize = text
        .trim()
        .parse()
        .map_err(|_| CpuListError::NotACpu(part.to_string()))?;
    if n > CPU_MAX {
        return Err(CpuListError::TooLarge(n));
    }
    Ok(n)
}

/// Prints the kernel's list syntax: runs of consecutive CPUs as ranges (`0-3,6`), or
/// `none` for the empty set.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for cpu in self.iter() {
            match runs.last_mut() {
                Some((_, last)) if *last + 1 == cpu => *last = cpu,
                _ => runs.push((cpu, cpu)),
            }
        }
        let text: Vec<String> = runs
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        f.write_str(&text.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges() {
        let s = CpuSet::parse_list("1,3,5-7").unwrap();
        assert_eq!(s.to_vec(), vec![1, 3, 5, 6, 7]);
        assert_eq!(s.to_string(), "1,3,5-7");
        assert_eq!(CpuSet::parse_list(" 2-15 ").unwrap().len(), 14);
        assert_eq!(CpuSet::parse_list("0-1,1,0").unwrap().to_string(), "0-1");
        assert_eq!(CpuSet::new().to_string(), "none");
    }

    proptest::proptest! {
        /// Printing then parsing any set gives the set back, with runs as ranges.
        #[test]
        fn list_round_trips(cpus in proptest::collection::btree_set(0..=CPU_MAX, 1..64)) {
            let set: CpuSet = cpus.iter().copied().collect();
            let text = set.to_string();
            proptest::prop_assert_eq!(CpuSet::parse_list(&text), Ok(set.clone()));
            proptest::prop_assert!(text.split(',').count() <= set.len());
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            CpuSet::parse_list("x"),
            Err(CpuListError::NotACpu("x".into()))
        );
        assert_eq!(
            CpuSet::parse_list("3-1"),
            Err(CpuListError::Backwards("3-1".into()))
        );
        assert_eq!(
            CpuSet::parse_list("1-"),
            Err(CpuListError::NotACpu("1-".into()))
        );
        assert_eq!(CpuSet::parse_list(" , "), Err(CpuListError::Empty));
        assert_eq!(
            CpuSet::parse_list("0-99999"),
            Err(CpuListError::TooLarge(99999))
        );
        assert!(CpuSet::parse_list("-1").is_err());
    }
}
