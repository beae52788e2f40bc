//! `Secret<T>`: a value that must never reach a log, an error message or the terminal.

use std::fmt;

/// Holds a secret (a node key, an executor's API token). `Debug` and `Display` print `***`,
/// so a secret inside a logged struct stays hidden; the value is reachable only through
/// [`Secret::expose`], which makes every use easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let s = Secret::new(String::from("nsec1verysecret"));
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s:#?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "nsec1verysecret");

        #[derive(Debug)]
        #[allow(dead_code)] // Only read through Debug.
        struct Holder {
            token: Secret<String>,
        }
        let holder = format!(
            "{:?}",
            Holder {
                token: Secret::new("hunter2".into())
            }
        );
        assert!(!holder.contains("hunter2"), "{holder}");
        assert!(holder.contains("***"), "{holder}");
    }
}
