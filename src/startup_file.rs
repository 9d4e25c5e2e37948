//! Files and values read once at start (the config file, the TLS certificate, key and client
//! CA; on SIGHUP the TLS files again), read within a bound.
//!
//! Such a path can name anything: `/dev/zero`, a FIFO, a multi-gigabyte log given by mistake.
//! An unbounded read of one ran the process out of memory before it could say what was wrong;
//! here a file past [`MAX_STARTUP_FILE_BYTES`] is an error naming the path and the limit. And an
//! error message never repeats a long value whole ([`shorten`]): a 10 MB flag value made a 10 MB
//! error line.

use std::io::Read;
use std::path::Path;

/// The largest file read at start: a config file, a PEM chain or a CA bundle (Mozilla's whole
/// bundle is about 220 KB) fits many times over.
pub const MAX_STARTUP_FILE_BYTES: u64 = 1024 * 1024;

/// Values longer than this are shown cut in error messages.
const SHOWN_VALUE_CHARS: usize = 64;

/// The whole file at `path`, at most [`MAX_STARTUP_FILE_BYTES`]. The error names neither the
/// flag nor the path (the caller does): "larger than 1 MiB …" or the I/O error.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|error| error.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_STARTUP_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| error.to_string())?;
    if bytes.len() as u64 > MAX_STARTUP_FILE_BYTES {
        return Err(format!(
            "larger than {} MiB, the limit for a file read at start (is it the right file?)",
            MAX_STARTUP_FILE_BYTES / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// `text` with every occurrence of `value` cut to its first characters and its length, when
/// `value` is long: error messages stay one short line whatever was given.
pub fn shorten(text: &str, value: &str) -> String {
    if value.chars().count() <= SHOWN_VALUE_CHARS {
        return text.to_owned();
    }
    text.replace(value, &cut(value))
}

/// `value` itself when short, else its first characters and its length.
pub fn cut(value: &str) -> String {
    if value.chars().count() <= SHOWN_VALUE_CHARS {
        return value.to_owned();
    }
    let head: String = value.chars().take(SHOWN_VALUE_CHARS).collect();
    format!("{head}… ({} bytes)", value.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_short_ones_kept() {
        assert_eq!(shorten("bad 'abc' here", "abc"), "bad 'abc' here");
        let long = "x".repeat(10_000);
        let line = shorten(&format!("invalid value '{long}' for --x"), &long);
        assert!(line.len() < 120, "{line}");
        assert!(
            line.contains("10000 bytes") && line.ends_with("' for --x"),
            "{line}"
        );
    }

    #[test]
    fn an_endless_file_is_refused_after_the_limit() {
        let error = read(Path::new("/dev/zero")).unwrap_err();
        assert!(error.contains("1 MiB"), "{error}");
        assert_eq!(read(Path::new("/dev/null")).unwrap(), Vec::<u8>::new());
    }
}
