//! Reading a process's log ([`Client::logs`]): the whole output, once, in
//! order, also of a process that moves while it is followed.
//!
//! Each request names the position to start at ([`LogQuery::from`]: the
//! bytes the reader already has), so the node never sends a byte twice.
//! When a followed process moves, its old node ends the stream with an
//! [`ExitReport`] whose reason is `moved` and which names the directory
//! epoch of the move; the client asks again from where it is, with that
//! epoch, and the node it asks waits until it knows of the move before it
//! looks for the process. No sleeping, no guessing.

use super::{Client, ClientError};
use crate::types::{ExitReport, LogFrame, LogFrameDecoder, LogQuery};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use shoal_abi::pid::Pid;
use shoal_abi::process::ExitReason;

/// Most moves [`Client::logs`] follows a process across.
pub const FOLLOW_MOVES_MAX: u32 = 10_000;

impl Client {
    /// `GET /v1/processes/{pid}/logs`: the whole output of `pid`, each frame
    /// handed to `on_frame` as it arrives, from whichever node holds it (a
    /// process that ended elsewhere is found there); returns the exit
    /// report if the process has ended. Without `follow` this returns once
    /// the output written so far is sent (bounded by
    /// [`super::CALL_TIMEOUT`]); with it, when the process ends, following
    /// it across moves (at most [`FOLLOW_MOVES_MAX`]). An error from
    /// `on_frame` stops the stream.
    pub async fn logs(
        &self,
        pid: Pid,
        follow: bool,
        mut on_frame: impl FnMut(&LogFrame) -> std::io::Result<()>,
    ) -> Result<Option<ExitReport>, ClientError> {
        let mut query = LogQuery {
            follow,
            from: 0,
            epoch: None,
        };
        for _ in 0..=FOLLOW_MOVES_MAX {
            let mut position = query.from;
            let end = self
                .log_stream(pid, &query, |frame| {
                    match frame {
                        LogFrame::Output { data, .. } => position += data.len() as u64,
                        LogFrame::Dropped(n) => position = position.saturating_add(*n),
                        LogFrame::End(_) => {}
                    }
                    on_frame(frame)
                })
                .await?;
            match end {
                Some(report) if follow && report.reason == ExitReason::Moved => {
                    // Ask again from where we are: the cluster finds it.
                    query.from = position;
                    query.epoch = report.moved_to.as_ref().map(|m| m.epoch);
                }
                end => return Ok(end),
            }
        }
        Err(ClientError::TooManyMoves {
            pid,
            moves: FOLLOW_MOVES_MAX,
        })
    }

    /// One `GET /v1/processes/{pid}/logs` request: its frames to
    /// `on_frame`, and the report of its final frame. Without
    /// `query.follow` it is bounded by [`super::CALL_TIMEOUT`].
    pub async fn log_stream(
        &self,
        pid: Pid,
        query: &LogQuery,
        mut on_frame: impl FnMut(&LogFrame) -> std::io::Result<()>,
    ) -> Result<Option<ExitReport>, ClientError> {
        let work = async {
            let path = format!("/v1/processes/{pid}/logs?{}", query.to_query());
            let resp = self.send(Method::GET, &path, None, Bytes::new()).await?;
            let mut body = self.check(resp).await?.into_body();
            let mut decoder = LogFrameDecoder::new();
            loop {
                let Some(frame) = body.frame().await else {
                    return Err(self.protocol("the log stream ended early (was the node stopped?)"));
                };
                let frame =
                    frame.map_err(|e| self.protocol(format!("the log stream broke: {e}")))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                decoder.push(&data);
                while let Some(f) = decoder.next_frame()? {
                    if let LogFrame::End(report) = f {
                        return Ok(report);
                    }
                    on_frame(&f).map_err(ClientError::Output)?;
                }
            }
        };
        if query.follow {
            work.await
        } else {
            tokio::time::timeout(super::CALL_TIMEOUT, work)
                .await
                .map_err(|_| ClientError::Timeout(super::CALL_TIMEOUT))?
        }
    }
}
