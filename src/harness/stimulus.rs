//! Server-side actions provoked from outside (`design.md`, Stimuli): an
//! operator command named in the SUT profile, as an HTTP request or an
//! argument vector (never a shell string), with the session's identifiers
//! filled in.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::profile::OperatorCommand;

/// Why a stimulus could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum StimulusError {
    #[error("operator URL `{url}` is not http://host:port/path")]
    BadUrl { url: String },
    #[error("operator URL `{url}` names {{sut_admin}} but the SUT has no admin address")]
    NoAdmin { url: String },
    #[error("operator HTTP request to {address} failed: {reason}")]
    Http { address: String, reason: String },
    #[error("operator HTTP request to {url} answered `{status_line}`")]
    Refused { url: String, status_line: String },
    #[error("operator command {program} failed: {reason}")]
    Command { program: String, reason: String },
}

fn fill(template: &str, call_id: &str, user: &str, sut_admin: Option<SocketAddr>) -> String {
    let mut s = template
        .replace("{call_id}", &percent_encode(call_id))
        .replace("{user}", &percent_encode(user));
    if let Some(a) = sut_admin {
        s = s.replace("{sut_admin}", &a.to_string());
    }
    s
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs the operator command for one session.
pub async fn run(
    command: &OperatorCommand,
    call_id: &str,
    user: &str,
    sut_admin: Option<SocketAddr>,
) -> Result<(), StimulusError> {
    if let Some(http) = &command.http {
        let url = fill(&http.url, call_id, user, sut_admin);
        if url.contains("{sut_admin}") {
            return Err(StimulusError::NoAdmin { url });
        }
        return http_request(&http.method, &url).await;
    }
    if let Some(argv) = &command.argv {
        let argv: Vec<String> = argv
            .iter()
            .map(|a| a.replace("{call_id}", call_id).replace("{user}", user))
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(StimulusError::Command {
                program: String::new(),
                reason: "empty argument vector".into(),
            });
        };
        let status = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(program)
                .args(args)
                .kill_on_drop(true)
                .status(),
        )
        .await
        .map_err(|_| StimulusError::Command {
            program: program.clone(),
            reason: "did not finish within 10 s".into(),
        })?
        .map_err(|e| StimulusError::Command {
            program: program.clone(),
            reason: e.to_string(),
        })?;
        if !status.success() {
            return Err(StimulusError::Command {
                program: program.clone(),
                reason: format!("exited with {status}"),
            });
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 client: one request, status line checked. Plain HTTP
/// on a lab network is all an operator interface stimulus needs.
async fn http_request(method: &str, url: &str) -> Result<(), StimulusError> {
    let bad = || StimulusError::BadUrl {
        url: url.to_owned(),
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let io = |reason: String| StimulusError::Http {
        address: authority.to_owned(),
        reason,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| io(e.to_string()))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| io(e.to_string()))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| io(e.to_string()))?;
        Ok::<_, StimulusError>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| io("no answer within 5 s".into()))??;
    let text = String::from_utf8_lossy(&response);
    let status_line = text.lines().next().unwrap_or("").to_owned();
    let ok = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if ok {
        Ok(())
    } else {
        Err(StimulusError::Refused {
            url: url.to_owned(),
            status_line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_and_encoded() {
        let admin: SocketAddr = "127.0.0.1:5081".parse().unwrap();
        assert_eq!(
            fill(
                "http://{sut_admin}/sessions/{call_id}/terminate",
                "a b@c",
                "u",
                Some(admin)
            ),
            "http://127.0.0.1:5081/sessions/a%20b%40c/terminate"
        );
    }

    #[tokio::test]
    async fn a_failing_program_is_an_error_naming_it() {
        let cmd = OperatorCommand {
            http: None,
            argv: Some(vec!["false".into()]),
        };
        let err = run(&cmd, "c", "u", None).await.unwrap_err().to_string();
        assert!(err.contains("false"), "{err}");
        let ok = OperatorCommand {
            http: None,
            argv: Some(vec!["true".into(), "{call_id}".into()]),
        };
        run(&ok, "c", "u", None).await.unwrap();
    }
}
