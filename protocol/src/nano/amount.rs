//! Raw amounts (u128; 1 XNO = 10^30 raw) and their strict decimal spellings.

use thiserror::Error;

pub const RAW_PER_XNO: u128 = 1_000_000_000_000_000_000_000_000_000_000;
const DECIMALS: usize = 30;

/// Why an amount string was refused, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AmountError {
    #[error("amount is empty")]
    Empty,
    #[error("amount contains white space")]
    Whitespace,
    #[error("amount must not carry a sign")]
    Sign,
    #[error("amount must be decimal, not hex")]
    HexPrefix,
    #[error("amount must not use an exponent")]
    Exponent,
    #[error("amount is not a plain decimal number")]
    Malformed,
    #[error("amount has a leading zero")]
    LeadingZero,
    #[error("amount has more than 30 decimals")]
    TooManyDecimals,
    #[error("amount exceeds 2^128-1 raw")]
    Overflow,
}

impl AmountError {
    /// Stable machine-readable name (matches the conformance vectors' `error`).
    pub fn code(self) -> &'static str {
        match self {
            AmountError::Empty => "empty",
            AmountError::Whitespace => "whitespace",
            AmountError::Sign => "sign",
            AmountError::HexPrefix => "hex_prefix",
            AmountError::Exponent => "exponent",
            AmountError::Malformed => "malformed",
            AmountError::LeadingZero => "leading_zero",
            AmountError::TooManyDecimals => "too_many_decimals",
            AmountError::Overflow => "overflow",
        }
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `^[0-9.]+[eE][+-]?[0-9]+$`: something a float formatter would print.
fn looks_exponential(s: &str) -> bool {
    let Some(pos) = s.find(['e', 'E']) else {
        return false;
    };
    let (mantissa, exp) = (&s[..pos], &s[pos + 1..]);
    let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    !mantissa.is_empty()
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && all_digits(exp)
}

/// The checks shared by both spellings, up to the shape check.
fn precheck(s: &str) -> Result<(), AmountError> {
    if s.is_empty() {
        return Err(AmountError::Empty);
    }
    if s.chars().any(char::is_whitespace) {
        return Err(AmountError::Whitespace);
    }
    if s.starts_with(['+', '-']) {
        return Err(AmountError::Sign);
    }
    if s.starts_with("0x") || s.starts_with("0X") {
        return Err(AmountError::HexPrefix);
    }
    if looks_exponential(s) {
        return Err(AmountError::Exponent);
    }
    Ok(())
}

fn check_leading_zero(int: &str) -> Result<(), AmountError> {
    if int.len() > 1 && int.starts_with('0') {
        return Err(AmountError::LeadingZero);
    }
    Ok(())
}

fn accumulate(acc: u128, digits: &str) -> Result<u128, AmountError> {
    digits.bytes().try_fold(acc, |acc, b| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(b - b'0')))
            .ok_or(AmountError::Overflow)
    })
}

/// Parses a raw amount: `^(0|[1-9][0-9]*)$`, at most 2^128-1.
pub fn parse_raw(s: &str) -> Result<u128, AmountError> {
    precheck(s)?;
    if !all_digits(s) {
        return Err(AmountError::Malformed);
    }
    check_leading_zero(s)?;
    accumulate(0, s)
}

/// Parses an XNO amount: `^(0|[1-9][0-9]*)(\.[0-9]{1,30})?$`, at most 2^128-1 raw.
pub fn parse_xno(s: &str) -> Result<u128, AmountError> {
    precheck(s)?;
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return Err(AmountError::Malformed);
    }
    check_leading_zero(int)?;
    let frac = frac.unwrap_or("");
    if frac.len() > DECIMALS {
        return Err(AmountError::TooManyDecimals);
    }
    let mut raw = accumulate(0, int)?;
    raw = accumulate(raw, frac)?;
    raw.checked_mul(10u128.pow((DECIMALS - frac.len()) as u32))
        .ok_or(AmountError::Overflow)
}

/// Canonical XNO spelling: no trailing zeros, no trailing dot.
pub fn format_xno(raw: u128) -> String {
    let int = raw / RAW_PER_XNO;
    let frac = raw % RAW_PER_XNO;
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:030}");
    format!("{int}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_small_values() {
        assert_eq!(parse_xno("0.001"), Ok(RAW_PER_XNO / 1000));
        assert_eq!(format_xno(RAW_PER_XNO / 1000), "0.001");
        assert_eq!(parse_raw("0"), Ok(0));
        assert_eq!(parse_xno("1e5"), Err(AmountError::Exponent));
        assert_eq!(parse_xno("1.2.3"), Err(AmountError::Malformed));
    }
}
