//! The JSON that `.status` and `.quiesce` show.

use serde::Serialize;

#[derive(Serialize)]
pub struct Status {
    pub version: &'static str,
    pub format_version: u16,
    pub data_dir: String,
    pub groups: usize,
    pub records: usize,
    pub hmk_id: String,
    pub kpk_id: String,
    pub quiesced: bool,
}

/// JSON files end with a newline, as text files do.
pub fn to_json_line<T: Serialize>(value: &T) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("plain data serialises");
    s.push('\n');
    s
}
