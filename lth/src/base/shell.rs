//! Shell quoting: the one definition, shared by `lth plan` and `cargo xtask plan --slurm`
//! (xtask includes this file by path, so it imports nothing).

/// A word as a POSIX shell reads it back.
pub fn quoted(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:=+,".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
