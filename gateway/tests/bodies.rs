//! Request bodies on HTTP/1.1, end to end: a refusal written before the body was read whole
//! reaches the client (lingering close), a `Content-Length` over the inspection cap is refused
//! before a byte of the body is read, and a client waiting for `100 Continue` gets it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod common;

use std::time::Duration;

use common::writes::{assert_nothing_forwarded_since_last, forwarded};
use common::{error_code, parse_raw, FullEnv};
use phigate_test_support::RawOptions;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A chunked body far over the 64 KiB inspection cap, written in one go.
fn chunked_body(total: usize) -> Vec<u8> {
    let chunk = vec![b' '; 16 * 1024];
    let mut out = Vec::with_capacity(total + total / 1000);
    let mut sent = 0;
    while sent < total {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(b"\r\n");
        sent += chunk.len();
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_whole_body_first_still_reads_the_413() {
    let env = FullEnv::start().await;
    // No length announced: the gateway finds the body too large after 64 KiB, answers, and reads
    // the rest before it closes. Closing on unread bytes would reset the connection, and this
    // client (which writes everything before it reads, as most libraries do) would get a write
    // error instead of the answer. 16 MiB is more than the kernel's socket buffers take in while
    // nobody reads, so the client is still writing when the gateway answers.
    let mut request = format!(
        "POST /fhir HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        env.token("clinician_a")
    )
    .into_bytes();
    request.extend_from_slice(&chunked_body(16 << 20));
    let raw = env.pki.public_client().raw_with(env.gw.addr, &request, RawOptions::default()).await;
    let (status, head, body) = parse_raw(&raw.expect("the answer, not a reset connection"));
    assert_eq!((status, error_code(&body).as_str()), (413, "body_too_large"), "{head}");
    assert_nothing_forwarded_since_last(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_over_the_cap_is_refused_before_the_body_is_sent() {
    let env = FullEnv::start().await;
    // Only the head is sent: an answer proves the gateway did not wait for the body.
    let request = format!(
        "POST /fhir HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/fhir+json\r\nContent-Length: 10485760\r\n\r\n",
        env.token("clinician_a")
    );
    let options = RawOptions { close_write: true, ..RawOptions::default() };
    let raw = env.pki.public_client().raw_with(env.gw.addr, request.as_bytes(), options).await;
    let (status, head, body) = parse_raw(&raw.unwrap());
    assert_eq!((status, error_code(&body).as_str()), (413, "body_too_large"), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert_nothing_forwarded_since_last(&env).await;
}

/// Reads from `r` until `buf` holds a whole response head, and returns it.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return head;
        }
        let n = r.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole head: {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_expecting_100_continue_gets_it_and_the_upstream_gets_the_body_without_it() {
    let env = FullEnv::start().await;
    let body = br#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"Patient/a-p1"}}]}"#;
    let head = format!(
        "POST /fhir HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/fhir+json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        env.token("clinician_a"),
        body.len()
    );
    let exchange = async {
        let client = env.pki.public_client();
        let mut config = (*client.tls_config()).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(env.gw.addr).await.unwrap();
        let name = ServerName::IpAddress(env.gw.addr.ip().into());
        let mut tls =
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
        tls.write_all(head.as_bytes()).await.unwrap();
        // The body is held back until the gateway asks for it.
        let mut buf = Vec::new();
        let interim = read_head(&mut tls, &mut buf).await;
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
        tls.write_all(body).await.unwrap();
        let last = read_head(&mut tls, &mut buf).await;
        assert!(last.starts_with("HTTP/1.1 200"), "{last}");
    };
    tokio::time::timeout(Duration::from_secs(20), exchange).await.expect("no deadlock on the expectation");
    let seen = forwarded(&env).await;
    assert_eq!(seen.body.as_deref(), Some(&body[..]), "the body that was judged is forwarded");
    assert!(seen.headers.get("expect").is_none(), "the gateway met the expectation itself");
}
