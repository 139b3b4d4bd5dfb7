//! A stream that first replays bytes already read from it.
//!
//! Why: in TLS 1.3 the client finishes its handshake *before* the server
//! checks the client certificate, so a refused certificate only shows up as
//! an alert on the first read. The client therefore reads the server's
//! first bytes (its HTTP/2 SETTINGS, which an h2 server sends unprompted)
//! while connecting — turning a refusal into a typed TLS error at connect
//! time — and hands them to hyper through this wrapper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// `io` with `head` in front of whatever it yields next.
#[derive(Debug)]
pub(crate) struct Replay<T> {
    head: Bytes,
    io: T,
}

impl<T: AsyncRead + Unpin> Replay<T> {
    /// Read at least one byte from `io` (up to `bytes_max`) and keep it for
    /// replay. EOF before any byte is an error.
    pub(crate) async fn first_bytes(mut io: T, bytes_max: usize) -> io::Result<Self> {
        let mut buf = vec![0u8; bytes_max.max(1)];
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection right after the TLS handshake",
            ));
        }
        buf.truncate(n);
        Ok(Replay {
            head: Bytes::from(buf),
            io,
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Replay<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.head.is_empty() {
            let n = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..n]);
            self.head.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Replay<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
