//! The node as others see it from inside: [`NodeHost`], the
//! [`ProcessHost`] its processes call, and [`HostMailbox`], a mailbox for
//! host code (tools, tests) with a pid of its own.

use super::{Node, Shared};
use crate::host::ProcessHost;
use crate::mailbox::{Mailbox, Message, PushError};
use crate::pid::Pid;
use std::sync::Arc;
use std::time::Duration;

impl Node {
    /// Open a mailbox for host code (tests, tools): it gets its own pid, so
    /// processes can reply to it; it closes when dropped.
    ///
    /// # Panics
    /// On a cluster node whose pid blocks are used up and not yet refilled
    /// (65,536 pids per block, refilled ahead of need).
    pub fn open_mailbox(&self) -> HostMailbox {
        let pid = self
            .shared
            .pids
            .try_allocate()
            .expect("no pid block granted to this node yet");
        let mailbox = Arc::new(Mailbox::new(self.shared.config.mailbox));
        self.shared.router.attach(pid, mailbox.clone());
        if let Some(link) = self.shared.router.cluster() {
            link.process_started(pid, None);
        }
        HostMailbox {
            pid,
            mailbox,
            shared: self.shared.clone(),
        }
    }
}

/// A mailbox owned by host code rather than a process.
pub struct HostMailbox {
    pid: Pid,
    mailbox: Arc<Mailbox>,
    shared: Arc<Shared>,
}

impl HostMailbox {
    /// The pid processes send to.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Send from this mailbox's pid.
    pub fn send(&self, to: Pid, data: impl Into<Vec<u8>>) -> Result<(), PushError> {
        self.shared.router.send(self.pid, to, data.into())
    }

    /// Wait up to `timeout` for the next message.
    pub async fn recv(&self, timeout: Duration) -> Option<Message> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let crate::mailbox::Head::Taken(m) = self.mailbox.take_if_fits(usize::MAX) {
                return Some(m);
            }
            if !self.mailbox.wait_nonempty(Some(deadline)).await {
                return None;
            }
        }
    }
}

impl Drop for HostMailbox {
    fn drop(&mut self) {
        self.mailbox.close();
        self.shared.router.detach(self.pid);
        if let Some(link) = self.shared.router.cluster() {
            link.process_exited(self.pid, None);
        }
    }
}

/// The node as its processes see it: the [`ProcessHost`] calls, and nothing
/// else of [`Shared`].
pub(super) struct NodeHost(pub(super) Arc<Shared>);

#[async_trait::async_trait]
impl ProcessHost for NodeHost {
    fn message_bytes_max(&self) -> usize {
        self.0.message_bytes_max()
    }

    fn send(&self, from: Pid, to: Pid, data: Vec<u8>) -> Result<(), PushError> {
        self.0.router.send_guest(to, Message::plain(from, data))
    }

    fn send_message(&self, to: Pid, message: Message) -> Result<(), PushError> {
        self.0.router.send_guest(to, message)
    }

    fn output_waiting(&self) {
        self.0.router.output().notify_one();
    }

    fn kv(&self) -> Result<Arc<dyn crate::cluster_link::KvLocks>, i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        Ok(link.clone())
    }

    async fn register_name(&self, pid: Pid, name: &str) -> Result<(), i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.register_name(pid, name).await
    }

    async fn unregister_name(&self, pid: Pid, name: &str) -> Result<(), i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.unregister_name(pid, name).await
    }

    fn whereis(&self, asker: Pid, name: &str) -> Result<Pid, i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.whereis(asker, name)
    }

    async fn join_group(&self, pid: Pid, name: &str) -> Result<(), i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.join_group(pid, name).await
    }

    async fn leave_group(&self, pid: Pid, name: &str) -> Result<(), i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.leave_group(pid, name).await
    }

    fn group_pick(&self, asker: Pid, name: &str) -> Result<Pid, i32> {
        let link = self.0.router.cluster().ok_or(shoal_abi::errno::NO_NODE)?;
        link.group_pick(asker, name)
    }

    async fn spawn(
        &self,
        parent: Pid,
        target: Option<&str>,
        reference: &str,
        args: Vec<String>,
        forward_output: bool,
        effect: Option<crate::cluster_link::EffectKey>,
    ) -> Result<Pid, i32> {
        match target {
            None => {
                let child = super::spawn::Child {
                    parent: Some(parent),
                    effect,
                    forward_output,
                };
                self.0.spawn_by_reference(reference, args, child).await
            }
            Some(t) => {
                self.0
                    .spawn_placed(parent, t, reference, args, forward_output, effect)
                    .await
            }
        }
    }
}
