//! Operator names: what a shift says about *who*.
//!
//! The gateway compares the name in a shift with the authenticated identity, so a name
//! has one spelling only: lower-case ASCII, digits and `._@-`, 1 to 64 characters.
//! E-mail addresses (the usual identity in iCalendar feeds) fit when they avoid `+`.

pub const MAX_OPERATOR_LEN: usize = 64;

/// Why a string is not an operator name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOperator {
    #[error("an operator name may not be empty")]
    Empty,
    #[error("{0:?} is longer than {MAX_OPERATOR_LEN} characters")]
    TooLong(String),
    #[error("{name:?} has {bad:?}; operator names use only lower-case a-z, 0-9 and . _ @ -")]
    BadCharacter { name: String, bad: char },
}

/// Checks that `name` is an operator name (`[a-z0-9._@-]{1,64}`).
pub fn validate_operator(name: &str) -> Result<(), InvalidOperator> {
    if name.is_empty() {
        return Err(InvalidOperator::Empty);
    }
    if name.len() > MAX_OPERATOR_LEN {
        return Err(InvalidOperator::TooLong(name.to_owned()));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '@' | '-'))
    {
        return Err(InvalidOperator::BadCharacter {
            name: name.to_owned(),
            bad,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_emails() {
        for ok in ["alice", "bob.smith", "carol_1", "dave@example.com", "x-y"] {
            assert_eq!(validate_operator(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_upper_case_spaces_plus_and_length() {
        assert!(matches!(
            validate_operator("Alice"),
            Err(InvalidOperator::BadCharacter { bad: 'A', .. })
        ));
        assert!(validate_operator("jane doe").is_err());
        assert!(validate_operator("a+b@example.com").is_err());
        assert!(validate_operator("ålice").is_err());
        assert_eq!(validate_operator(""), Err(InvalidOperator::Empty));
        assert!(validate_operator(&"a".repeat(64)).is_ok());
        assert!(matches!(
            validate_operator(&"a".repeat(65)),
            Err(InvalidOperator::TooLong(_))
        ));
    }
}
