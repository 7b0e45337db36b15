//! Where the daemon keeps its data when neither `--data-dir` nor the config file says.
//!
//! Owns: the default data directory's resolution order (`$RINGBROKER_DATA_DIR`, then
//! `$XDG_DATA_HOME/ringbroker`, then `~/.local/share/ringbroker`, then
//! `./ringbroker-data`). Never: creates, locks or checks the directory (the broker does
//! that when it opens it), and never reads the environment except in `from_process`,
//! so the order itself is a plain function of its inputs.

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that names the data directory outright.
pub const DATA_DIR_ENV: &str = "RINGBROKER_DATA_DIR";
/// The directory under `$XDG_DATA_HOME` (or `~/.local/share`) the daemon uses.
pub const APP_DIR: &str = "ringbroker";
/// The last resort, relative to the working directory.
pub const FALLBACK_DIR: &str = "ringbroker-data";

/// The environment variables the default depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDirEnv {
    /// `$RINGBROKER_DATA_DIR`.
    pub ringbroker_data_dir: Option<OsString>,
    /// `$XDG_DATA_HOME`.
    pub xdg_data_home: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
}

impl DataDirEnv {
    /// Reads the three variables from this process's environment.
    pub fn from_process() -> Self {
        Self {
            ringbroker_data_dir: std::env::var_os(DATA_DIR_ENV),
            xdg_data_home: std::env::var_os("XDG_DATA_HOME"),
            home: std::env::var_os("HOME"),
        }
    }
}

/// The default data directory for `env`. Empty variables count as unset, and
/// `XDG_DATA_HOME` is ignored unless absolute, as the XDG base directory spec says.
pub fn default_data_dir(env: &DataDirEnv) -> PathBuf {
    let set = |value: &Option<OsString>| value.clone().filter(|v| !v.is_empty());
    if let Some(dir) = set(&env.ringbroker_data_dir) {
        return PathBuf::from(dir);
    }
    if let Some(xdg) = set(&env.xdg_data_home).map(PathBuf::from) {
        if xdg.is_absolute() {
            return xdg.join(APP_DIR);
        }
    }
    if let Some(home) = set(&env.home) {
        return PathBuf::from(home)
            .join(".local")
            .join("share")
            .join(APP_DIR);
    }
    PathBuf::from(".").join(FALLBACK_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(ringbroker: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> DataDirEnv {
        DataDirEnv {
            ringbroker_data_dir: ringbroker.map(OsString::from),
            xdg_data_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
        }
    }

    #[test]
    fn ringbroker_data_dir_wins_over_everything() {
        let e = env(Some("/srv/rb"), Some("/xdg"), Some("/home/u"));
        assert_eq!(default_data_dir(&e), PathBuf::from("/srv/rb"));
    }

    #[test]
    fn xdg_data_home_comes_next() {
        let e = env(None, Some("/xdg"), Some("/home/u"));
        assert_eq!(default_data_dir(&e), PathBuf::from("/xdg/ringbroker"));
    }

    #[test]
    fn home_local_share_without_xdg() {
        let e = env(None, None, Some("/home/u"));
        assert_eq!(
            default_data_dir(&e),
            PathBuf::from("/home/u/.local/share/ringbroker")
        );
    }

    #[test]
    fn working_directory_when_nothing_is_set() {
        assert_eq!(
            default_data_dir(&env(None, None, None)),
            PathBuf::from("./ringbroker-data")
        );
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let e = env(Some(""), Some(""), Some("/home/u"));
        assert_eq!(
            default_data_dir(&e),
            PathBuf::from("/home/u/.local/share/ringbroker")
        );
    }

    #[test]
    fn relative_xdg_data_home_is_ignored() {
        let e = env(None, Some("relative/xdg"), Some("/home/u"));
        assert_eq!(
            default_data_dir(&e),
            PathBuf::from("/home/u/.local/share/ringbroker")
        );
    }
}
