//! Hand-written JSON text: the 402 bodies and offers on the hot path are rendered by hand (no
//! serde work per request), from these two pieces.

/// Appends the decimal digits of `n`. By hand: every `to_string()` site would otherwise bring
/// its own copy of the formatting machinery into the module.
pub fn push_num(out: &mut String, mut n: u128) {
    let mut buf = [0u8; 40];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// The decimal digits of `n`.
pub fn num(n: u128) -> String {
    let mut out = String::new();
    push_num(&mut out, n);
    out
}

/// `s` as a JSON string literal (quoted and escaped).
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_to_string() {
        for n in [0u128, 7, 10, 1_000_000, u128::from(u64::MAX), u128::MAX] {
            assert_eq!(num(n), n.to_string());
        }
    }
}
