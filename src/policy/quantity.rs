//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`), exact to the nano unit.

use std::fmt;

/// A parsed quantity, held exactly as a whole number of nano units (10^-9).
/// Kubernetes rounds anything finer than a nano unit up; so does this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    nanos: i128,
}

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityError(pub String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid quantity {:?}", self.0)
    }
}

impl std::error::Error for QuantityError {}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Parses the Kubernetes quantity syntax: an optionally signed decimal number,
    /// then a binary suffix (Ki Mi Gi Ti Pi Ei), a decimal suffix (n u m k M G T P E)
    /// or a decimal exponent (`e3`, `E-2`).
    pub fn parse(input: &str) -> Result<Quantity, QuantityError> {
        let err = || QuantityError(input.to_string());
        let s = input.trim();
        if s.is_empty() {
            return Err(err());
        }
        let (negative, s) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (number, suffix) = s.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let mut mantissa: i128 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa.checked_mul(10).and_then(|m| m.checked_add(i128::from(c - b'0'))).ok_or_else(err)?;
        }
        let mut exp10: i32 = -(frac_part.len() as i32);
        let mut exp2: u32 = 0;
        match suffix {
            "" => {}
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            other if other.starts_with(['e', 'E']) => {
                let e: i32 = other[1..].parse().map_err(|_| err())?;
                if !(-40..=40).contains(&e) {
                    return Err(err());
                }
                exp10 += e;
            }
            _ => return Err(err()),
        }
        // nanos = mantissa * 10^(exp10 + 9) * 2^exp2, rounded up (away from zero).
        let mut value = mantissa.checked_mul(1i128 << exp2).ok_or_else(err)?;
        let shift = exp10 + 9;
        if shift >= 0 {
            let factor = 10i128.checked_pow(shift as u32).ok_or_else(err)?;
            value = value.checked_mul(factor).ok_or_else(err)?;
        } else {
            let divisor = 10i128.checked_pow((-shift) as u32).ok_or_else(err)?;
            let rounded_up = value % divisor != 0;
            value = value / divisor + i128::from(rounded_up);
        }
        Ok(Quantity { nanos: if negative { -value } else { value } })
    }

    pub fn from_int(i: i64) -> Quantity {
        Quantity { nanos: i128::from(i) * NANO }
    }

    pub fn nanos(self) -> i128 {
        self.nanos
    }

    /// The value as a float (e.g. cores, bytes), possibly losing precision.
    pub fn as_f64(self) -> f64 {
        self.nanos as f64 / NANO as f64
    }

    pub fn is_integer(self) -> bool {
        self.nanos % NANO == 0 && i64::try_from(self.nanos / NANO).is_ok()
    }

    /// The value as an integer, when it is one and fits in an i64.
    pub fn as_i64(self) -> Option<i64> {
        if self.is_integer() { i64::try_from(self.nanos / NANO).ok() } else { None }
    }

    pub fn sign(self) -> i64 {
        self.nanos.signum() as i64
    }

    pub fn checked_add(self, other: Quantity) -> Option<Quantity> {
        self.nanos.checked_add(other.nanos).map(|nanos| Quantity { nanos })
    }

    pub fn checked_sub(self, other: Quantity) -> Option<Quantity> {
        self.nanos.checked_sub(other.nanos).map(|nanos| Quantity { nanos })
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos % NANO == 0 {
            write!(f, "{}", self.nanos / NANO)
        } else if self.nanos % 1_000_000 == 0 {
            write!(f, "{}m", self.nanos / 1_000_000)
        } else {
            write!(f, "{}n", self.nanos)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubernetes_syntax() {
        let cases: &[(&str, f64)] = &[
            ("1", 1.0),
            ("500m", 0.5),
            ("0.5", 0.5),
            ("1.5", 1.5),
            ("100n", 0.0000001),
            ("2k", 2000.0),
            ("1Ki", 1024.0),
            ("1Mi", 1048576.0),
            ("1.5Gi", 1610612736.0),
            ("2Ti", 2199023255552.0),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("-2", -2.0),
            ("+7", 7.0),
            ("128M", 128e6),
            (".5", 0.5),
        ];
        for (input, want) in cases {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert!((q.as_f64() - want).abs() <= want.abs() * 1e-12, "{input}: {} != {want}", q.as_f64());
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in
            ["", "abc", "1x", "1..2", "Gi", "1 Gi", "1e", "--1", ".", "1e999", "99999999999999999999999999999999Ei"]
        {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn compares_exactly() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Ki"), q("1024"));
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert_eq!(q("1n").nanos(), 1);
        assert_eq!(q("0.1n").nanos(), 1, "rounded up to a nano unit");
        assert!(q("2").is_integer() && !q("1500m").is_integer());
        assert_eq!(q("3").as_i64(), Some(3));
        assert_eq!(q("-1").sign(), -1);
        assert_eq!(q("1").checked_add(q("500m")), Some(q("1.5")));
        assert_eq!(q("1500m").to_string(), "1500m");
    }
}
