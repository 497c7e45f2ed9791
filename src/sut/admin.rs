//! The reference server's operator interface: a deliberately tiny HTTP/1.1
//! listener with one route, `POST /sessions/{call-id}/terminate`, so that the
//! harness can provoke a server-initiated termination from outside as a lab
//! would with a vendor's operator tool. Written by hand: one route does not
//! justify an HTTP server framework in the dependency tree.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::server::Command;

/// Binds the admin interface and serves it in the background.
pub(crate) async fn serve(
    address: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let commands = commands.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut used = 0;
                // Read the request head (bodies are not used), bounded in size and time.
                let head = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        let n = stream.read(&mut buf[used..]).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        used += n;
                        if buf[..used].windows(4).any(|w| w == b"\r\n\r\n") {
                            return Some(String::from_utf8_lossy(&buf[..used]).into_owned());
                        }
                        if used == buf.len() {
                            return None;
                        }
                    }
                })
                .await
                .ok()
                .flatten();
                let (status, body) = match head.as_deref().map(route) {
                    Some(Some(call_id)) => {
                        let (reply, answer) = oneshot::channel();
                        let _ = commands.send(Command::Terminate { call_id, reply });
                        match answer.await {
                            Ok(true) => ("200 OK", "terminating\n"),
                            _ => (
                                "404 Not Found",
                                "no established session with that Call-ID\n",
                            ),
                        }
                    }
                    Some(None) => (
                        "404 Not Found",
                        "only POST /sessions/{call-id}/terminate is served\n",
                    ),
                    None => ("400 Bad Request", "unreadable request\n"),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(local)
}

/// The Call-ID of `POST /sessions/{call-id}/terminate`, percent-decoded.
fn route(head: &str) -> Option<String> {
    let line = head.lines().next()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?, parts.next()?);
    if method != "POST" {
        return None;
    }
    let rest = path.strip_prefix("/sessions/")?;
    let call_id = rest.strip_suffix("/terminate")?;
    percent_decode(call_id)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_reads_the_call_id() {
        assert_eq!(
            route("POST /sessions/abc%40127.0.0.1/terminate HTTP/1.1\r\n\r\n").as_deref(),
            Some("abc@127.0.0.1")
        );
        assert_eq!(route("GET /sessions/a/terminate HTTP/1.1\r\n"), None);
        assert_eq!(route("POST /other HTTP/1.1\r\n"), None);
        assert_eq!(route("POST /sessions/%zz/terminate HTTP/1.1\r\n"), None);
    }
}
