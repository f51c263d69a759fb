//! Small strict parsers shared by the text formats.

/// ASCII decimal with no sign and no leading zeros ("0" itself is allowed), as every
/// C2SP format here writes sizes and indexes. `None` also when it overflows `u64`.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if !canonical {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    fn only_canonical_decimals() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "00",
            "01",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1_0",
            "18446744073709551616",
            "١",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }
}
