//! An invocation sent over raw TCP, its body chunked by hand, for what an HTTP client library
//! would smooth over.

use std::time::Duration;

use test_support::InvocationAnswer;
use test_support::envelope::host_headers;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a hand-written HTTP/1.1 request over raw TCP with the body in `chunks`, chunked and
/// without Content-Length, as the host does, and reads the answer.
pub async fn post_chunked_over_raw_tcp(port: u16, path: &str, chunks: &[&str]) -> InvocationAnswer {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect to the handler");
        let mut request = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
        for (name, value) in host_headers() {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write head");
        for chunk in chunks {
            let framed = format!("{:x}\r\n{chunk}\r\n", chunk.len());
            stream
                .write_all(framed.as_bytes())
                .await
                .expect("write chunk");
            stream.flush().await.expect("flush chunk");
        }
        stream
            .write_all(b"0\r\n\r\n")
            .await
            .expect("write last chunk");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read the response");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the raw chunked request was not answered within 30 s");
    parse_raw_response(&response)
}

fn parse_raw_response(response: &[u8]) -> InvocationAnswer {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no end of headers in the response: {}",
                String::from_utf8_lossy(response)
            )
        });
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the response: {head}"));
    let header = |wanted: &str| {
        head.lines().skip(1).find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_owned())
        })
    };
    let chunked =
        header("Transfer-Encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    InvocationAnswer::from_parts(
        status,
        header("Content-Type"),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_line = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .expect("a hex chunk size");
        if size == 0 {
            return body;
        }
        let data = &rest[line_end + 2..];
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}
