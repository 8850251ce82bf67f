//! What the service tells about itself: `.status` renders it (in `fs/`), `kmsfs` commands
//! may print it.

use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub version: &'static str,
    pub format_version: u16,
    pub data_dir: PathBuf,
    pub groups: usize,
    pub records: usize,
    pub hmk_id: String,
    pub kpk_id: String,
    pub quiesced: bool,
}
