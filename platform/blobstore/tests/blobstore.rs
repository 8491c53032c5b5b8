//! The blob store over real HTTP on 127.0.0.1 with real files in temp dirs: round trips,
//! digests, atomic overwrites, key validation, prefixes, interrupted uploads and limits.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use diego_blobstore::{BlobClient, BlobError, BlobStore, BlobStoreConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    client: BlobClient,
}

async fn start(config: BlobStoreConfig) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let store = BlobStore::open_with(dir.path(), config)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = store.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}");
    Ok(Server {
        client: BlobClient::new(&url),
        addr,
        dir,
    })
}

/// Deterministic bytes that do not compress or repeat in an obvious way.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Sends `request` as is (no URL normalisation) and returns the status and body.
async fn raw(addr: std::net::SocketAddr, request: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await??;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

#[tokio::test]
async fn a_multi_mib_blob_round_trips_with_its_digest() -> Result<()> {
    let server = start(BlobStoreConfig::default()).await?;
    let client = &server.client;
    let bytes = noise(6 << 20, 7);
    let sha = sha256_hex(&bytes);
    let key = "apps/0b5e/bits/abc.zip";

    let info = client.put_bytes(key, bytes.clone()).await?;
    assert_eq!(
        (info.key.as_str(), info.size, info.sha256.as_str()),
        (key, bytes.len() as u64, sha.as_str())
    );
    assert_eq!(client.get_bytes(key).await?, bytes);
    assert_eq!(client.info(key).await?, info);

    let response = reqwest::get(client.url(key)).await?;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
    assert_eq!(headers["etag"], format!("\"{sha}\"").as_str());
    assert_eq!(headers["x-blob-sha256"], sha.as_str());
    let cached = reqwest::Client::new()
        .get(client.url(key))
        .header("if-none-match", format!("\"{sha}\""))
        .send()
        .await?;
    assert_eq!(cached.status(), 304);

    // Files stream both ways, and a download lands atomically at its path.
    let local = server.dir.path().join("droplet.tgz");
    std::fs::write(&local, &bytes[..3 << 20])?;
    let uploaded = client.put_file("droplets/0b5e.tgz", &local).await?;
    assert_eq!(uploaded.sha256, sha256_hex(&bytes[..3 << 20]));
    let fetched = server.dir.path().join("fetched.tgz");
    assert_eq!(
        client.download_to("droplets/0b5e.tgz", &fetched).await?,
        uploaded
    );
    assert_eq!(std::fs::read(&fetched)?, &bytes[..3 << 20]);

    client.delete(key).await?;
    let missing = client
        .get_bytes(key)
        .await
        .err()
        .context("deleted blob still there")?;
    assert!(matches!(missing, BlobError::NotFound { .. }), "{missing}");
    assert!(missing.to_string().contains(key));
    let (status, body) = raw(
        server.addr,
        &format!("GET /v1/blobs/{key} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    )
    .await?;
    assert_eq!(status, 404);
    assert!(
        body.contains("no blob \"apps/0b5e/bits/abc.zip\""),
        "{body}"
    );
    let again = client
        .delete(key)
        .await
        .err()
        .context("second delete succeeded")?;
    assert!(matches!(again, BlobError::NotFound { .. }));
    Ok(())
}

#[tokio::test]
async fn a_digest_mismatch_is_422_and_stores_nothing() -> Result<()> {
    let server = start(BlobStoreConfig::default()).await?;
    let bytes = noise(1 << 20, 3);
    let wrong = sha256_hex(b"something else");
    let http = reqwest::Client::new();
    let response = http
        .put(server.client.url("lifecycles/x.wasm"))
        .query(&[("sha256", &wrong)])
        .body(bytes.clone())
        .send()
        .await?;
    assert_eq!(response.status(), 422);
    let message = response.text().await?;
    assert!(
        message.contains("lifecycles/x.wasm") && message.contains(&wrong),
        "{message}"
    );
    assert!(server.client.list("").await?.is_empty());
    assert!(files_under(server.dir.path()).is_empty());

    let response = http
        .put(server.client.url("lifecycles/x.wasm"))
        .query(&[("sha256", "nothex")])
        .body(bytes.clone())
        .send()
        .await?;
    assert_eq!(response.status(), 400);

    // The right digest (in upper case, too) is accepted.
    let response = http
        .post(server.client.url("lifecycles/x.wasm"))
        .query(&[("sha256", sha256_hex(&bytes).to_uppercase())])
        .body(bytes)
        .send()
        .await?;
    assert_eq!(response.status(), 201);
    Ok(())
}

#[tokio::test]
async fn readers_never_see_a_partial_blob_during_overwrites() -> Result<()> {
    let server = start(BlobStoreConfig::default()).await?;
    let key = "droplets/busy.tgz";
    let versions = [vec![b'a'; 3 << 20], vec![b'b'; 2 << 20]];
    server.client.put_bytes(key, versions[0].clone()).await?;

    let deadline = Instant::now() + Duration::from_secs(3);
    let writer = {
        let client = server.client.clone();
        let versions = versions.clone();
        tokio::spawn(async move {
            let mut writes = 0usize;
            while Instant::now() < deadline {
                client.put_bytes(key, versions[writes % 2].clone()).await?;
                writes += 1;
            }
            anyhow::Ok(writes)
        })
    };
    let mut readers = Vec::new();
    for _ in 0..3 {
        let url = server.client.url(key);
        readers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut reads = 0usize;
            while Instant::now() < deadline {
                let response = http.get(&url).send().await?;
                ensure!(response.status() == 200, "status {}", response.status());
                let sha = response.headers()["x-blob-sha256"].to_str()?.to_owned();
                let body = response.bytes().await?;
                let whole_a = body.len() == 3 << 20 && body.iter().all(|&b| b == b'a');
                let whole_b = body.len() == 2 << 20 && body.iter().all(|&b| b == b'b');
                ensure!(
                    whole_a || whole_b,
                    "a partial or mixed blob of {} bytes",
                    body.len()
                );
                ensure!(
                    sha == sha256_hex(&body),
                    "the digest header does not match the body"
                );
                reads += 1;
            }
            anyhow::Ok(reads)
        }));
    }
    let writes = writer.await??;
    let mut reads = 0;
    for reader in readers {
        reads += reader.await??;
    }
    ensure!(
        writes >= 4 && reads >= 4,
        "too little happened: {writes} writes, {reads} reads"
    );
    // Every finished upload was renamed away; nothing is left in the temp dir.
    assert!(files_under(&server.dir.path().join("tmp")).is_empty());
    Ok(())
}

#[tokio::test]
async fn keys_that_could_escape_are_refused_with_400() -> Result<()> {
    let server = start(BlobStoreConfig::default()).await?;
    for (method, target) in [
        ("GET", "/v1/blobs/../x"),
        ("PUT", "/v1/blobs/../x"),
        ("PUT", "/v1/blobs/a//b"),
        ("GET", "/v1/blobs/%2e%2e"),
        ("PUT", "/v1/blobs/%2e%2e/escaped"),
        ("PUT", "/v1/blobs/a/%2E%2E/%2E%2E/escaped"),
        ("DELETE", "/v1/blobs/a/./b"),
        ("PUT", "/v1/blobs/a%2fb/../../c"),
        ("PUT", "/v1/blobs/with%20space"),
        ("GET", "/v1/blobs?prefix=../"),
        ("DELETE", "/v1/blobs?prefix=a/../"),
        ("DELETE", "/v1/blobs?prefix="),
    ] {
        let request = format!(
            "{method} {target} HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"
        );
        let (status, body) = raw(server.addr, &request).await?;
        assert_eq!(status, 400, "{method} {target}: {body}");
        assert!(
            body.contains("invalid blob key") || body.contains("non-empty prefix"),
            "{method} {target}: {body}"
        );
    }
    let long = format!("/v1/blobs/{}", "x".repeat(513));
    let (status, body) = raw(
        server.addr,
        &format!(
            "PUT {long} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(body.contains("longer than 512 bytes"), "{body}");
    assert!(files_under(server.dir.path()).is_empty());
    assert!(!server.dir.path().join("escaped").exists());

    // The client refuses them before sending.
    let refused = server
        .client
        .put_bytes("../x", "abc")
        .await
        .err()
        .context("accepted")?;
    assert!(matches!(refused, BlobError::InvalidKey { .. }), "{refused}");
    Ok(())
}

#[tokio::test]
async fn prefixes_list_and_delete_whole_apps() -> Result<()> {
    let server = start(BlobStoreConfig::default()).await?;
    let client = &server.client;
    for key in [
        "apps/x/bits/1.zip",
        "apps/x/bits/2.zip",
        "apps/x/droplet.tgz",
        "apps/xy/bits/3.zip",
        "buildpacks/python.zip",
    ] {
        client.put_bytes(key, key.as_bytes().to_vec()).await?;
    }
    let keys = |infos: Vec<diego_blobstore::BlobInfo>| {
        infos.into_iter().map(|i| i.key).collect::<Vec<_>>()
    };
    assert_eq!(
        keys(client.list("apps/x/").await?),
        [
            "apps/x/bits/1.zip",
            "apps/x/bits/2.zip",
            "apps/x/droplet.tgz"
        ]
    );
    assert_eq!(keys(client.list("apps/x").await?).len(), 4);
    assert_eq!(keys(client.list("").await?).len(), 5);
    assert!(client.list("nothing/").await?.is_empty());
    let listed = client.list("buildpacks/").await?;
    assert_eq!(listed[0].sha256, sha256_hex(b"buildpacks/python.zip"));
    assert_eq!(listed[0].size, 21);

    assert_eq!(client.delete_prefix("apps/x/").await?, 3);
    assert_eq!(keys(client.list("apps/").await?), ["apps/xy/bits/3.zip"]);
    assert_eq!(client.delete_prefix("apps/x/").await?, 0);
    // Emptied directories go with their blobs.
    assert!(!server.dir.path().join("blobs/apps/x").exists());
    assert!(server.dir.path().join("blobs/apps/xy").exists());

    // A blob and a directory cannot share a name.
    let clash = client
        .put_bytes("buildpacks/python.zip/inner", "x")
        .await
        .err()
        .context("accepted")?;
    assert!(
        matches!(clash, BlobError::Server { status: 409, .. }),
        "{clash}"
    );
    Ok(())
}

#[tokio::test]
async fn an_upload_cut_off_mid_body_leaves_nothing() -> Result<()> {
    let server = start(BlobStoreConfig::default()).await?;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await?;
    let head =
        "PUT /v1/blobs/droplets/cut.tgz HTTP/1.1\r\nhost: x\r\ncontent-length: 4194304\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&noise(1 << 20, 9)).await?;
    stream.flush().await?;
    // Give the server time to start writing the temp file, then hang up.
    let tmp = server.dir.path().join("tmp");
    let started = Instant::now();
    while files_under(&tmp).is_empty() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(!files_under(&tmp).is_empty(), "the upload never started");
    drop(stream);

    let started = Instant::now();
    while !files_under(server.dir.path()).is_empty() {
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "left behind: {:?}",
            files_under(server.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let missing = server
        .client
        .info("droplets/cut.tgz")
        .await
        .err()
        .context("a blob was stored")?;
    assert!(matches!(missing, BlobError::NotFound { .. }));
    Ok(())
}

#[tokio::test]
async fn size_and_disk_limits_refuse_writes() -> Result<()> {
    let small = start(BlobStoreConfig {
        max_blob_bytes: 1_000,
        ..BlobStoreConfig::default()
    })
    .await?;
    let error = small
        .client
        .put_bytes("a", vec![0u8; 1_001])
        .await
        .err()
        .context("accepted")?;
    assert!(
        matches!(error, BlobError::Server { status: 413, .. }),
        "{error}"
    );
    // Without a Content-Length the cap is enforced while streaming.
    let chunks =
        futures::stream::iter([Ok::<_, std::io::Error>(vec![0u8; 600]), Ok(vec![0u8; 600])]);
    let response = reqwest::Client::new()
        .put(small.client.url("a"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await?;
    assert_eq!(response.status(), 413);
    small.client.put_bytes("a", vec![0u8; 1_000]).await?;

    let full = start(BlobStoreConfig {
        min_free_bytes: u64::MAX,
        ..BlobStoreConfig::default()
    })
    .await?;
    let error = full
        .client
        .put_bytes("a", "x")
        .await
        .err()
        .context("accepted")?;
    assert!(
        matches!(error, BlobError::Server { status: 507, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("below the minimum"), "{error}");
    assert!(files_under(full.dir.path()).is_empty());
    Ok(())
}

#[tokio::test]
async fn opening_a_store_removes_interrupted_uploads() -> Result<()> {
    let dir = tempfile::tempdir()?;
    BlobStore::open(dir.path())?;
    std::fs::write(dir.path().join("tmp/upload-left-by-a-crash"), b"partial")?;
    BlobStore::open(dir.path())?;
    assert!(files_under(dir.path()).is_empty());
    Ok(())
}
