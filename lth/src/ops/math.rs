//! `exp`, `ln` and `sin` from +, −, ×, ÷ and rounding only, so they give the same bits on every
//! machine. Rust's `f64::exp` and friends call the platform's libm, whose results may differ
//! in the last bit between implementations, versions and CPU-specific variants (glibc picks an
//! FMA variant at load time on CPUs that have FMA); a last-bit difference in one logit or one
//! initial weight is enough to make two training runs part company. The basic operations are
//! exactly rounded (IEEE 754) everywhere, and Rust never fuses them on its own.
//!
//! Accuracy: within a few units in the last place of f64 over the ranges used here (softmax
//! arguments, the Gaussian sampler, the synthetic images), far below what f32 results can show.

/// ln 2 split so that `n · LN2_HI` is exact for |n| < 2^11.
const LN2_HI: f64 = 6.931_471_803_691_238_2e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;

/// e^x.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.78 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    // x = n ln 2 + r with |r| ≤ ln 2 / 2; e^r by its Taylor series (the 14th term is below
    // 2^-53 · e^r for |r| ≤ 0.35).
    let n = (x * std::f64::consts::LOG2_E).round();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Horner: 1 + r (1 + r/2 (1 + r/3 (… (1 + r/14)))).
    let mut series = 1.0;
    for i in (1..=14).rev() {
        series = 1.0 + r / i as f64 * series;
    }
    scale_by_power_of_two(series, n as i32)
}

/// `value · 2^n`, exact unless the result is subnormal.
fn scale_by_power_of_two(value: f64, n: i32) -> f64 {
    let power = |e: i32| f64::from_bits(((e + 1023) as u64) << 52);
    if n > 1023 {
        value * power(1023) * power(n - 1023)
    } else if n < -1022 {
        value * power(-1022) * power((n + 1022).max(-1022))
    } else {
        value * power(n)
    }
}

/// The natural logarithm of a positive `x` (NaN below 0, −∞ at 0).
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    // x = m · 2^e with m in [√½, √2); ln m = 2 atanh(t), t = (m − 1)/(m + 1), |t| ≤ 0.172.
    let (mut x, mut e) = (x, 0i64);
    if x < f64::MIN_POSITIVE {
        x *= 2f64.powi(54);
        e -= 54;
    }
    let bits = x.to_bits();
    e += ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & !(0x7ff << 52)) | (1023 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let mut series = 0.0;
    for i in (0..12).rev() {
        series = series * t2 + 1.0 / (2 * i + 1) as f64;
    }
    let e = e as f64;
    e * LN2_HI + (e * LN2_LO + 2.0 * t * series)
}

/// sin x, for the moderate arguments of the synthetic images (|x| up to about 10^4).
pub fn sin(x: f64) -> f64 {
    use std::f64::consts::PI;
    // 2π split: TAU_HI is 2π rounded to f64, TAU_LO the rest.
    const TAU_HI: f64 = std::f64::consts::TAU;
    const TAU_LO: f64 = 2.449_293_598_294_706_4e-16;
    let k = (x / (2.0 * PI)).round();
    let r = (x - k * TAU_HI) - k * TAU_LO;
    // Taylor series on [−π, π]: the term of degree 31 is below 2^-53.
    let r2 = r * r;
    let mut series = 0.0;
    for i in (0..16).rev() {
        // 1 / (2i + 1)! with alternating signs, by Horner: r (1 − r²/(2·3) (1 − r²/(4·5) (…))).
        series = 1.0 - r2 / ((2 * i + 2) * (2 * i + 3)) as f64 * series;
    }
    r * series
}

/// cos x = sin(x + π/2).
pub fn cos(x: f64) -> f64 {
    sin(x + std::f64::consts::FRAC_PI_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, what: &str) {
        assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1e-300), "{what}: {a} vs {b}");
    }

    #[test]
    fn agree_with_the_platform_to_a_few_ulps() {
        for i in -2000..2000 {
            let x = i as f64 * 0.173;
            close(exp(x), x.exp(), &format!("exp({x})"));
            if x > 0.0 {
                close(ln(x), x.ln(), &format!("ln({x})"));
            }
            if x.abs() < 50.0 {
                assert!((sin(x) - x.sin()).abs() < 1e-13, "sin({x}): {} vs {}", sin(x), x.sin());
                assert!((cos(x) - x.cos()).abs() < 1e-13, "cos({x})");
            }
        }
        for x in [1e-300, 3e-310, 0.5, 1.0, 2.0, 1e300] {
            close(ln(x), x.ln(), &format!("ln({x})"));
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(exp(-800.0), 0.0);
        assert!(ln(-1.0).is_nan() && exp(f64::NAN).is_nan());
    }
}
