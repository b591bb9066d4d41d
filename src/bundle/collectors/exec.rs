//! exec: the `exec` collector. `stdout.txt`, `stderr.txt` and `exit.json` (`{"exit_code",
//! "signal", "duration_ms"}`), whatever the exit code: a diagnostic that exits non-zero is
//! evidence too, so the collector is still `ok` (its `error` notes the exit). A command that
//! could not start is `failed`; one that ran out of time is `timed_out`.

use std::time::Duration;

use serde_json::json;

use super::files::{Files, Keep};
use super::{Collected, Failure, pretty_json};
use crate::act::actions::Outcome;
use crate::act::actions::exec::{self, ExecRequest};

/// What `exit.json` may need, kept out of the output bound of an exec collector.
const EXIT_JSON_RESERVE: u64 = 256;

pub(super) async fn collect(
    argv: &[String],
    env: &[(String, String)],
    left: Duration,
    max_bytes: u64,
    files: &mut Files,
) -> Collected {
    // Each stream may take all the room; the cap then cuts the larger.
    let bound = usize::try_from(max_bytes.saturating_sub(EXIT_JSON_RESERVE)).unwrap_or(usize::MAX);
    let request = ExecRequest {
        argv: argv.to_vec(),
        env: env.to_vec(),
        timeout: left,
        max_output_bytes: bound,
    };
    let ran = match exec::run_to_end(&request).await {
        Ok(ran) => ran,
        Err(Outcome::Unknown { error }) if error.starts_with("timed out") => {
            return Err(Failure::TimedOut(error));
        }
        Err(Outcome::NotApplied { error, .. } | Outcome::Unknown { error })
        | Err(Outcome::Failed { error }) => return Err(Failure::Failed(error)),
        Err(Outcome::Done { .. }) => return Err(Failure::Failed("no output".to_owned())),
    };
    let mut note = None;
    for (path, text) in [("stdout.txt", &ran.stdout), ("stderr.txt", &ran.stderr)] {
        let bytes = text.as_bytes().to_vec();
        if ran.truncated && bytes.len() >= bound {
            files.add_cut(path, bytes, Keep::Head, None);
        } else {
            files.add(path, bytes, Keep::Head);
        }
    }
    if ran.truncated && files.cut_summary().is_none() {
        note = Some(
            "output may be incomplete: a process kept the output open after the command exited"
                .to_owned(),
        );
    }
    // A diagnostic that exits non-zero is evidence too; the manifest says how it ended.
    match (ran.exit_code, ran.signal) {
        (Some(0), _) => {}
        (Some(code), _) => note = Some(format!("exit code {code}")),
        (None, signal) => note = Some(format!("killed by signal {}", signal.unwrap_or_default())),
    }
    files.add(
        "exit.json",
        pretty_json(&json!({
            "exit_code": ran.exit_code,
            "signal": ran.signal,
            "duration_ms": ran.duration_ms,
        })),
        Keep::Head,
    );
    Ok(note)
}
