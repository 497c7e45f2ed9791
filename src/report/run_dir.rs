//! One folder per run: `reports/<run-id>/` holds that run's summary, logs and
//! reports, and `reports/latest` points at the newest run's folder.
//!
//! The folder is created, and `latest` moved to it, before the run starts, so
//! a run that cannot start or dies leaves `latest` at its own (empty or
//! partial) folder, never at an older run's verdict.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The name of the link to the newest run's folder.
pub const LATEST: &str = "latest";

/// A run's folder, created, with `latest` pointing at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// `20261202T131500Z-4f2a`: UTC time of the start, then a random suffix.
    pub id: String,
    /// `<reports>/<id>`.
    pub path: PathBuf,
}

/// A run id: the UTC time to the second (`20261202T131500Z`), so ids sort
/// by start time, then `-` and four hex digits, so runs started in the
/// same second get different folders.
pub fn run_id(now: SystemTime, suffix: u16) -> String {
    // "2026-12-02T13:15:00Z" without its separators.
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{stamp}-{suffix:04x}")
}

/// Creates a new run folder under `reports` (and `reports` itself), then
/// points `reports/latest` at it.
pub fn start(reports: &Path) -> io::Result<RunDir> {
    std::fs::create_dir_all(reports)?;
    let now = SystemTime::now();
    let mut tries = 0;
    let dir = loop {
        let id = run_id(now, rand::random());
        let path = reports.join(&id);
        // `create_dir`, not `create_dir_all`: a folder that exists belongs
        // to another run.
        match std::fs::create_dir(&path) {
            Ok(()) => break RunDir { id, path },
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
            Err(e) => return Err(e),
        }
    };
    point_latest(reports, &dir.id)?;
    Ok(dir)
}

/// Points `reports/latest` at `reports/<id>`, atomically: a new link under a
/// temporary name, renamed over the old one, so `latest` is never missing
/// or half made. The link is relative, so the reports folder can move.
pub fn point_latest(reports: &Path, id: &str) -> io::Result<()> {
    let latest = reports.join(LATEST);
    if latest.is_dir() && !latest.is_symlink() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is a directory, not a link", latest.display()),
        ));
    }
    let tmp = reports.join(format!(".{LATEST}.{}.tmp", std::process::id()));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    link(id, &tmp)?;
    std::fs::rename(&tmp, &latest).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(unix)]
fn link(id: &str, at: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(id, at)
}

/// Without symlinks: a file naming the run's folder.
#[cfg(not(unix))]
fn link(id: &str, at: &Path) -> io::Result<()> {
    std::fs::write(at, format!("{id}\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test that cannot unwrap has failed
mod tests {
    use super::*;
    use std::time::Duration;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cpmcc-run-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_run_id_is_the_utc_second_and_a_suffix() {
        // 2026-12-02T13:15:00Z
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_217_300);
        assert_eq!(run_id(at, 0x4f2a), "20261202T131500Z-4f2a");
        assert_eq!(run_id(at, 7), "20261202T131500Z-0007");
    }

    #[test]
    fn run_ids_sort_by_start_time() {
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_217_300);
        let late = early + Duration::from_secs(1);
        assert!(run_id(early, 0xffff) < run_id(late, 0));
        let much_later = early + Duration::from_secs(86_400 * 40);
        assert!(run_id(late, 0xffff) < run_id(much_later, 0));
    }

    #[cfg(unix)]
    #[test]
    fn latest_follows_the_newest_run() {
        let reports = scratch("latest");
        let first = start(&reports).unwrap();
        assert!(first.path.is_dir());
        assert_eq!(
            std::fs::read_link(reports.join(LATEST)).unwrap(),
            PathBuf::from(&first.id)
        );
        std::fs::write(first.path.join("summary.json"), "{}").unwrap();
        let second = start(&reports).unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(
            std::fs::read_link(reports.join(LATEST)).unwrap(),
            PathBuf::from(&second.id)
        );
        // The older run's files are not reachable through latest.
        assert!(!reports.join(LATEST).join("summary.json").exists());
        assert!(first.path.join("summary.json").exists());
        // No temporary link left behind.
        let names: Vec<String> = std::fs::read_dir(&reports)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        let _ = std::fs::remove_dir_all(&reports);
    }

    #[test]
    fn a_latest_that_is_a_real_folder_is_refused() {
        let reports = scratch("latest-dir");
        std::fs::create_dir_all(reports.join(LATEST)).unwrap();
        let e = start(&reports).unwrap_err();
        assert!(e.to_string().contains("not a link"), "{e}");
        let _ = std::fs::remove_dir_all(&reports);
    }
}
