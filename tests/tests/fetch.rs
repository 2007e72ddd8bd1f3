//! The real download code against a local HTTP server on 127.0.0.1 serving synthetic IDX files:
//! a good file, a connection that drops mid-file (resumed with a Range request), a corrupted
//! file, an unreachable mirror, a corrupt cached file, and IDX parsing errors.

// jemalloc, as the `lth` binary uses (lth::base::allocator).
lth::jemalloc!();

use flate2::{write::GzEncoder, Compression};
use lth::data::fetch::{Checksum, RemoteFile, Source};
use lth::data::mnist::{self, IdxFile};
use lth::Error;
use lth_tests::scratch;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A synthetic IDX image file: magic 2051, n images of 28x28.
fn idx_images(n: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for word in [2051u32, n as u32, 28, 28] {
        bytes.extend(word.to_be_bytes());
    }
    bytes.extend((0..n * 784).map(|i| (i * 7 % 256) as u8));
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A tiny HTTP/1.1 server: serves `files` (path → bytes) with Range support. Paths starting
/// with `/drop/` send only half the body on their first request, then close the connection.
struct Server {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(files: Vec<(String, Vec<u8>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            let mut dropped = std::collections::HashSet::new();
            // Bounded: the test process ends long before this many connections.
            for stream in listener.incoming().take(200).flatten() {
                serve(stream, &files, &log, &mut dropped);
            }
        });
        Server { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, files: &[(String, Vec<u8>)], log: &Mutex<Vec<String>>, dropped: &mut std::collections::HashSet<String>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range_start = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("range: bytes=") {
            range_start = value.trim().trim_end_matches('-').parse::<usize>().ok();
        }
    }
    log.lock().unwrap().push(format!("{path} range={range_start:?}"));
    let Some((_, body)) = files.iter().find(|(p, _)| *p == path) else {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let (status, part) = match range_start {
        Some(start) if start < body.len() => ("206 Partial Content", &body[start..]),
        _ => ("200 OK", &body[..]),
    };
    let header = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", part.len());
    let _ = stream.write_all(header.as_bytes());
    if path.contains("/drop") && dropped.insert(path.clone()) {
        let _ = stream.write_all(&part[..part.len() / 2]);
        return; // the connection closes mid-file
    }
    let _ = stream.write_all(part);
}

fn remote(name: &'static str, bytes: &[u8]) -> RemoteFile {
    RemoteFile { dataset: "mnist", name, checksum: Checksum::Sha256(Box::leak(sha256(bytes).into_boxed_str())) }
}

#[test]
fn downloads_verifies_and_never_downloads_again() {
    let body = gzip(&idx_images(50));
    let server = Server::start(vec![("/mnist/good.gz".into(), body.clone())]);
    let source = Source { mirror: Some(server.url()), cache: scratch("good") };
    let file = remote("good.gz", &body);
    let path = source.fetch(&file, &[]).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let again = source.fetch(&file, &[]).unwrap();
    assert_eq!(path, again);
    assert_eq!(server.requests().len(), 1, "a verified file was downloaded again: {:?}", server.requests());
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let body = gzip(&idx_images(400));
    let server = Server::start(vec![("/mnist/drop.gz".into(), body.clone())]);
    let source = Source { mirror: Some(server.url()), cache: scratch("drop") };
    let path = source.fetch(&remote("drop.gz", &body), &[]).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1], format!("/mnist/drop.gz range=Some({})", body.len() / 2));
}

#[test]
fn a_corrupted_download_is_reported_and_never_kept() {
    let good = gzip(&idx_images(20));
    let mut bad = good.clone();
    bad[40] ^= 0xff;
    let server = Server::start(vec![("/mnist/bad.gz".into(), bad)]);
    let cache = scratch("bad");
    let source = Source { mirror: Some(server.url()), cache: cache.clone() };
    let err = source.fetch(&remote("bad.gz", &good), &[]).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Unreachable { .. }), "{message}");
    assert!(message.contains("mnist/bad.gz") && message.contains("checksum mismatch"), "{message}");
    let left: Vec<_> = std::fs::read_dir(cache.join("mnist")).unwrap().collect();
    assert!(left.is_empty(), "corrupt bytes were kept: {left:?}");
}

#[test]
fn an_unreachable_mirror_names_the_file_and_the_fix() {
    // Bind then drop a listener, so the port is closed.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let source = Source { mirror: Some(format!("http://127.0.0.1:{port}")), cache: scratch("unreachable") };
    let message = source.fetch(&remote("x.gz", b"x"), &[]).unwrap_err().to_string();
    assert!(message.contains("mnist/x.gz") && message.contains("LTH_DATA_MIRROR"), "{message}");
}

#[test]
fn a_corrupt_cached_file_is_replaced() {
    let images = idx_images(30);
    let body = gzip(&images);
    let server = Server::start(vec![("/mnist/cached.gz".into(), body.clone())]);
    let cache = scratch("cached");
    std::fs::create_dir_all(cache.join("mnist")).unwrap();
    std::fs::write(cache.join("mnist/cached.gz"), b"truncated").unwrap();
    let source = Source { mirror: Some(server.url()), cache };
    let path = source.fetch(&remote("cached.gz", &body), &[]).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn idx_files_are_decompressed_verified_and_parsed() {
    let images = idx_images(12);
    let body = gzip(&images);
    let server = Server::start(vec![("/mnist/imgs.gz".into(), body.clone())]);
    let source = Source { mirror: Some(server.url()), cache: scratch("idx") };
    let file = IdxFile { gz: remote("imgs.gz", &body), name: "imgs", checksum: Checksum::Sha256(Box::leak(sha256(&images).into_boxed_str())) };
    let path = mnist::fetch_idx(&source, &file).unwrap();
    let (pixels, n, dims) = mnist::read_idx(&path, 2051, 3).unwrap();
    assert_eq!((n, dims), (12, vec![28, 28]));
    assert_eq!(pixels, images[16..]);
}

#[test]
fn truncated_or_mislabelled_idx_files_name_the_file() {
    let dir = scratch("truncated");
    let path = dir.join("train-images-idx3-ubyte");
    let images = idx_images(5);
    std::fs::write(&path, &images[..images.len() - 100]).unwrap();
    let message = mnist::read_idx(&path, 2051, 3).unwrap_err().to_string();
    assert!(message.contains("train-images-idx3-ubyte") && message.contains("truncated"), "{message}");
    std::fs::write(&path, &images).unwrap();
    let message = mnist::read_idx(&path, 2049, 1).unwrap_err().to_string();
    assert!(message.contains("magic 2051"), "{message}");
}

#[test]
fn a_local_folder_mirror_gives_the_real_mnist() {
    let source = Source { mirror: Some(lth_tests::mirror()), cache: scratch("real") };
    let dir = mnist::fetch_all(&source).unwrap();
    let (train, test) = mnist::load_dir(&dir).unwrap();
    assert_eq!((train.n, test.n), (60_000, 10_000));
    // ../shared/datasets/README.md: the first labels and the class counts.
    assert_eq!(train.labels[..10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(test.labels[..10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    let mut counts = [0usize; 10];
    train.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    let mut sink = Vec::new();
    std::fs::File::open(dir.join("t10k-labels-idx1-ubyte")).unwrap().read_to_end(&mut sink).unwrap();
    assert_eq!(sink.len(), 10_008);
}
