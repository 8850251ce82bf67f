// Shared by the targets (`#[path]`-included, not a target of its own).

/// At most this many consecutive characters of an input may appear in a refusal.
pub const MAX_ECHO: usize = 8;
/// The longest refusal a control file may give.
pub const MAX_ERROR_BYTES: usize = 300;

/// Whether `haystack` holds a run of more than MAX_ECHO consecutive characters of `input`.
pub fn echoes_more_than_allowed(haystack: &str, input: &str) -> bool {
    let chars: Vec<char> = input.chars().collect();
    if chars.len() <= MAX_ECHO {
        return false;
    }
    chars.windows(MAX_ECHO + 1).any(|w| {
        let s: String = w.iter().collect();
        haystack.contains(&s)
    })
}
