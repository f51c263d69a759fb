//! Text that reaches a log entry or an audit line and is not a validated identifier
//! is escaped here, so that what a customer reads can neither start a new line, move
//! the cursor, nor reorder what follows (control characters, bidi overrides and other
//! invisible format characters). A reader who sees `\u{202e}` knows it was sent.

/// Characters that change how the text around them is shown without being seen:
/// control characters (C0, DEL, C1), bidi embeddings, overrides and isolates, and the
/// other zero-width or format characters.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
            | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
}

/// `text` with every unsafe character (and the backslash, so that an escape cannot
/// be forged) written as `\u{hex}`, cut to at most `max_chars` characters of output.
pub fn escape(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for c in text.chars() {
        let piece = if c == '\\' {
            "\\\\".to_string()
        } else if is_unsafe(c) {
            format!("\\u{{{:x}}}", u32::from(c))
        } else {
            c.to_string()
        };
        let n = piece.chars().count();
        if count + n > max_chars {
            break;
        }
        count += n;
        out.push_str(&piece);
    }
    out
}

/// Whether `text` can be shown as it is (no unsafe character).
pub fn is_clean(text: &str) -> bool {
    !text.chars().any(is_unsafe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        let forged = "x\n{\"outcome\":\"succeeded\"}\u{1b}[2K\u{202e}dedeeccus";
        let e = escape(forged, 1000);
        assert!(is_clean(&e), "{e}");
        assert!(e.contains("\\u{a}") && e.contains("\\u{1b}") && e.contains("\\u{202e}"));
        assert_eq!(
            escape("a\\u{a}", 100),
            "a\\\\u{a}",
            "an escape cannot be forged"
        );
        assert_eq!(escape("plain text, été", 100), "plain text, été");
        assert_eq!(
            escape("\u{7}\u{7}", 9).chars().count(),
            5,
            "never cut inside an escape"
        );
    }
}
