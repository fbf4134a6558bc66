//! The uncompressed tar stream of a layer blob. Compression is told by magic
//! bytes, never by name. Decompression and both digests run on their own
//! thread, one chunk ahead of the tar parser, so inflating overlaps with
//! writing files (as `tar -xz` overlaps with its gzip child).

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

const CHUNK: usize = 1 << 20;
/// Chunks in flight between the two threads.
const DEPTH: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

/// What the decompressing thread measured over the whole blob.
#[derive(Debug, Clone)]
pub struct Digests {
    /// sha256 of the uncompressed tar stream: the layer's diff_id.
    pub diff_id: String,
    /// sha256 of the blob as stored: the layer's digest in a manifest.
    pub blob_digest: String,
    /// Uncompressed bytes.
    pub bytes: u64,
}

/// A reader of the uncompressed stream fed by the decompressing thread.
pub struct Stream {
    pub compression: Compression,
    rx: Receiver<io::Result<Vec<u8>>>,
    recycle: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    worker: Option<JoinHandle<io::Result<Digests>>>,
    /// The decompressor's error, kept to be reported as such (not as a tar error).
    failed: Option<String>,
}

impl Stream {
    pub fn open(blob: &Path) -> io::Result<Stream> {
        let file = File::open(blob)?;
        let mut input = BufReader::with_capacity(CHUNK, Hashing::new(file));
        let compression = Compression::detect(input.fill_buf()?);
        let (tx, rx) = sync_channel(DEPTH);
        let (recycle, spare) = sync_channel(DEPTH + 2);
        let worker = std::thread::Builder::new().name("capsa-inflate".into()).spawn(move || produce(compression, input, tx, spare))?;
        Ok(Stream { compression, rx, recycle, chunk: Vec::new(), pos: 0, worker: Some(worker), failed: None })
    }

    /// Why decompression failed, when it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Reads what the tar parser left (the end-of-archive padding) so the
    /// digests cover the whole stream, and returns them.
    pub fn finish(mut self) -> io::Result<Digests> {
        io::copy(&mut self, &mut io::sink())?;
        drop(std::mem::replace(&mut self.rx, sync_channel(0).1));
        let worker = self.worker.take().expect("finish once");
        worker.join().map_err(|_| io::Error::other("decompressing thread panicked"))?
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            let Ok(next) = self.rx.recv() else {
                return Ok(0);
            };
            match next {
                Ok(chunk) => {
                    let used = std::mem::replace(&mut self.chunk, chunk);
                    let _ = self.recycle.try_send(used);
                    self.pos = 0;
                }
                Err(e) => {
                    let what = format!("{} decompression: {e}", self.compression.name());
                    self.failed = Some(what.clone());
                    return Err(io::Error::new(e.kind(), what));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn produce(
    compression: Compression,
    mut input: BufReader<Hashing<File>>,
    tx: SyncSender<io::Result<Vec<u8>>>,
    spare: Receiver<Vec<u8>>,
) -> io::Result<Digests> {
    let mut tar: Box<dyn Read> = match compression {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(&mut input)?),
        Compression::None => Box::new(&mut input),
    };
    let mut diff_id = Sha256::new();
    let mut bytes = 0u64;
    loop {
        let mut chunk = spare.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        chunk.clear();
        if let Err(e) = fill(&mut tar, &mut chunk) {
            // What inflated before the damage is passed on, so the error is placed where it happened.
            let kind = e.kind();
            if !chunk.is_empty() {
                let _ = tx.send(Ok(chunk));
            }
            let _ = tx.send(Err(e));
            return Err(io::Error::new(kind, "decompression failed"));
        }
        if chunk.is_empty() {
            break;
        }
        diff_id.update(&chunk);
        bytes += chunk.len() as u64;
        if tx.send(Ok(chunk)).is_err() {
            // The extraction stopped early (it failed); its error is the one to report.
            return Err(io::Error::other("extraction stopped"));
        }
    }
    drop(tar);
    // Whatever follows the compressed stream still belongs to the blob's digest.
    io::copy(&mut input, &mut io::sink())?;
    Ok(Digests { diff_id: hex_digest(diff_id), blob_digest: hex_digest(input.into_inner().hasher), bytes })
}

/// Fills `chunk` up to CHUNK bytes (fewer only at the end of the stream).
fn fill(r: &mut dyn Read, chunk: &mut Vec<u8>) -> io::Result<()> {
    chunk.resize(CHUNK, 0);
    let mut len = 0;
    while len < CHUNK {
        match r.read(&mut chunk[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                chunk.truncate(len);
                return Err(e);
            }
        }
    }
    chunk.truncate(len);
    Ok(())
}

fn hex_digest(h: Sha256) -> String {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in h.finalize() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing { inner, hasher: Sha256::new() }
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes_decide() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Compression::Zstd);
        assert_eq!(Compression::detect(b"usr/\0\0\0"), Compression::None);
        assert_eq!(Compression::detect(&[]), Compression::None);
    }

    #[test]
    fn digests_cover_the_whole_stream() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("capsa-decompress-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let gz = dir.join("blob");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        enc.finish().unwrap();
        let mut s = Stream::open(&gz).unwrap();
        assert_eq!(s.compression, Compression::Gzip);
        let mut head = [0u8; 10];
        s.read_exact(&mut head).unwrap();
        let d = s.finish().unwrap();
        assert_eq!(d.bytes, data.len() as u64);
        assert_eq!(d.diff_id, hex_digest(Sha256::new_with_prefix(&data)));
        assert_eq!(d.blob_digest, hex_digest(Sha256::new_with_prefix(std::fs::read(&gz).unwrap())));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
