"""Shoal guest SDK for Python: the whole guest ABI v1 in Python idioms.

Every function of the Wasm import module ``shoal_v1`` (``sdk/ABI.md`` is the
one contract) is reached through the built-in module ``_shoal`` and wrapped
here:

* bytes and ``str`` instead of pointer/length pairs (a ``str`` is sent as
  UTF-8);
* exceptions instead of negative codes: one ``ShoalError`` subclass per ABI
  code (``shoal.Timeout``, ``shoal.NoProcess``, ... ``shoal.BadBatch``), each
  with ``.code`` (-4) and ``.name`` ("TIMEOUT"); ``shoal.error_for(code)``
  builds one;
* timeouts in seconds: ``None`` (the default) waits without limit, ``0``
  only polls, anything else is rounded up to whole milliseconds;
* pids, handles and references are plain ``int``s.

The blocking calls are the capture points: a process can be snapshotted or
moved while inside ``recv``, ``recv_any``, ``recv_from``, ``receive_response``,
``call``, ``lock``, ``sleep`` or ``yield_now``, and resumes there (its Python
objects included). Python's ``time.sleep`` is not one: use ``shoal.sleep``.

This module uses builtins only, so a guest freezes nothing more for it.
"""

import _shoal
import sys

ABI_VERSION = 1

# Bounds of the ABI.
MAX_MESSAGE_SIZE = 1 << 20
MAX_VALUE_SIZE = 1 << 20
MAX_KEY_SIZE = 256
MAX_BUCKET_NAME_SIZE = 64
MAX_NAME_SIZE = 255
MAX_BATCH_ENTRIES = 100
MAX_BATCH_BYTES = 4 << 20
KV_MANY_RECORD_HEADER = 12

#: Capacity of the first attempt of a receive; a longer message is received
#: whole with a second attempt of exactly its size.
SCRATCH_SIZE = 64 << 10
#: Largest reply ``call`` accepts (a longer one is lost: BUFFER_TOO_SMALL).
CALL_REPLY_MAX = 64 << 10

# Log levels.
LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE = 0, 1, 2, 3, 4

# What recv_any returns (Incoming.kind).
KIND_MESSAGE, KIND_CALL, KIND_DOWN, KIND_REPLY = 0, 1, 2, 3

# recv_match filters.
MATCH_FROM, MATCH_REPLY = 1, 2

# Why a process went down (DOWN notices, CalleeDown).
REASON_EXIT, REASON_TRAP, REASON_KILLED, REASON_NOPROC = 1, 2, 3, 4
REASON_NODE_DOWN, REASON_OVERLOADED, REASON_NOT_CALLABLE = 5, 6, 7

#: Reads of this node's applied state (``Bucket.stale()``), without ReadIndex.
KV_STALE = 1

_NAMES = (
    "FAULT", "INVALID", "NO_PROCESS", "TIMEOUT", "BUFFER_TOO_SMALL",
    "TOO_LARGE", "MAILBOX_FULL", "NO_MODULE", "SPAWN_FAILED", "LIMIT",
    "NO_NODE", "CALLEE_DOWN", "NODE_DOWN", "NAME_TAKEN", "NOT_CALLABLE",
    "NOT_FOUND", "VERSION_MISMATCH", "FENCED", "BAD_KEY", "VALUE_TOO_LARGE",
    "BAD_BUCKET", "QUOTA", "RATE_LIMITED", "NOT_A_COUNTER", "OVERFLOW",
    "BUSY", "DEADLOCK", "LOCK_LOST", "UNAVAILABLE", "BAD_BATCH",
)


def code_name(code):
    """The ABI name of a result code: "OK" for 0 and above, "UNKNOWN" for a
    code this module does not know."""
    if code >= 0:
        return "OK"
    if -code <= len(_NAMES):
        return _NAMES[-code - 1]
    return "UNKNOWN"


class ShoalError(Exception):
    """An ABI error code. Subclasses exist for every known code."""

    code = 0

    def __init__(self, code=None, detail=""):
        if code is not None:
            self.code = code
        self.detail = detail
        text = "shoal: %s (%d)" % (self.name, self.code)
        super().__init__(text + (": " + detail if detail else ""))

    @property
    def name(self):
        return code_name(self.code)


def _camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


_CLASSES = {}
for _i, _name in enumerate(_NAMES):
    _cls = type(_camel(_name), (ShoalError,), {"code": -_i - 1, "__doc__": _name})
    _CLASSES[-_i - 1] = _cls
    globals()[_cls.__name__] = _cls
del _i, _name, _cls

# The subclasses, named for static readers (the loop above made them).
Fault = _CLASSES[-1]
Invalid = _CLASSES[-2]
NoProcess = _CLASSES[-3]
Timeout = _CLASSES[-4]
BufferTooSmall = _CLASSES[-5]
TooLarge = _CLASSES[-6]
MailboxFull = _CLASSES[-7]
NoModule = _CLASSES[-8]
SpawnFailed = _CLASSES[-9]
Limit = _CLASSES[-10]
NoNode = _CLASSES[-11]
CalleeDown = _CLASSES[-12]
NodeDown = _CLASSES[-13]
NameTaken = _CLASSES[-14]
NotCallable = _CLASSES[-15]
NotFound = _CLASSES[-16]
VersionMismatch = _CLASSES[-17]
Fenced = _CLASSES[-18]
BadKey = _CLASSES[-19]
ValueTooLarge = _CLASSES[-20]
BadBucket = _CLASSES[-21]
Quota = _CLASSES[-22]
RateLimited = _CLASSES[-23]
NotACounter = _CLASSES[-24]
Overflow = _CLASSES[-25]
Busy = _CLASSES[-26]
Deadlock = _CLASSES[-27]
LockLost = _CLASSES[-28]
Unavailable = _CLASSES[-29]
BadBatch = _CLASSES[-30]


def error_for(code, detail=""):
    """The exception for a negative result code."""
    cls = _CLASSES.get(code)
    if cls is None:
        return ShoalError(code, detail)
    return cls(detail=detail)


def check(rc):
    """A non-negative result as it is; a negative one raised."""
    if rc < 0:
        raise error_for(rc)
    return rc


def _down(code, reason, exit_code, trap=""):
    """The error of a call or request whose callee went down before it
    answered: CalleeDown, NodeDown, NotCallable or NoProcess, with
    ``.reason`` (a REASON_* constant), ``.exit_code`` (for REASON_EXIT) and
    ``.trap`` (the trap message, for REASON_TRAP)."""
    err = error_for(code, "reason %d, code %d%s" % (reason, exit_code, ", " + trap if trap else ""))
    err.reason = reason
    err.exit_code = exit_code
    err.trap = trap
    return err


def _bytes(data):
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


def _timeout_ms(timeout):
    """Seconds (None: forever) as whole milliseconds, rounded up."""
    if timeout is None or timeout < 0:
        return -1
    ms = int(timeout * 1000)
    if ms < timeout * 1000:
        ms += 1
    return ms


def _pack_args(args):
    out = bytearray()
    for a in args:
        b = _bytes(a)
        if b"\0" in b:
            raise Invalid(detail="an argument contains a NUL byte")
        out += b + b"\0"
    return bytes(out)


# ---- processes ---------------------------------------------------------------


def self_pid():
    """This process's pid (non-zero, stable for its life)."""
    return _shoal.self_pid()


def spawn(module, *args):
    """Starts ``module`` (a registered name or ``sha256:<hex>``) with
    ``args`` as argv[1:] (argv[0] is ``module``); returns its pid. NoModule,
    SpawnFailed, Limit, Invalid."""
    rc, pid = _shoal.spawn(_bytes(module), _pack_args(args))
    check(rc)
    return pid


def spawn_on(target, module, *args):
    """``spawn`` on a placement target: "" lets the scheduler choose, a node
    name picks it, "k=v[,k=v]" picks among nodes with those labels. NoNode as
    well."""
    rc, pid = _shoal.spawn_on(_bytes(target), _bytes(module), _pack_args(args))
    check(rc)
    return pid


def sleep(seconds):
    """Sleeps at least ``seconds`` (a capture point)."""
    check(_shoal.sleep_ms(_timeout_ms(seconds) if seconds > 0 else 0))


def sleep_ms(ms):
    """Sleeps at least ``ms`` milliseconds (a capture point); Invalid if
    negative."""
    check(_shoal.sleep_ms(ms))


def yield_now():
    """Lets other processes run (a capture point)."""
    check(_shoal.yield_now())


def preempt():
    """Reserved for the host (it inserts it into loops of preemptible
    modules); harmless."""
    _shoal.preempt()


def exit(code=0):
    """Ends this process with ``code`` after flushing stdout and stderr;
    never returns."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    _shoal.exit(code)


def log(text, level=LOG_INFO):
    """Appends ``text`` to the process log (not stdout) at ``level``."""
    check(_shoal.log(level, _bytes(text)))


# ---- messages ----------------------------------------------------------------


class Message:
    """A received message: ``sender`` (pid) and ``data`` (bytes)."""

    __slots__ = ("sender", "data")

    def __init__(self, sender, data):
        self.sender = sender
        self.data = data

    def __repr__(self):
        return "Message(sender=%d, data=%r)" % (self.sender, self.data)


def send(pid, data):
    """Queues a copy of ``data`` in ``pid``'s mailbox; never blocks.
    NoProcess, TooLarge, MailboxFull (nothing was queued)."""
    check(_shoal.send(pid, _bytes(data)))


SEND_BLOCKING_MAX_RETRIES = 1000
SEND_BLOCKING_YIELDS = 16
SEND_BLOCKING_MAX_BACKOFF_MS = 10


def send_blocking(pid, data):
    """``send``, retrying while the mailbox is full: 16 yields, then sleeps
    doubling from 1 ms to 10 ms, 1000 retries in all (as the Rust SDK)."""
    data = _bytes(data)
    backoff_ms = 1
    retries = 0
    while True:
        rc = _shoal.send(pid, data)
        if rc != MailboxFull.code or retries >= SEND_BLOCKING_MAX_RETRIES:
            check(rc)
            return
        if retries < SEND_BLOCKING_YIELDS:
            yield_now()
        else:
            sleep_ms(backoff_ms)
            backoff_ms = min(backoff_ms * 2, SEND_BLOCKING_MAX_BACKOFF_MS)
        retries += 1


def recv_into_size(capacity, timeout=None):
    """One ``recv`` with a buffer of ``capacity`` bytes: a Message, or
    BufferTooSmall whose ``.detail`` is the size needed (the message stays
    queued). For tests of the ABI; ``recv`` is what programs use."""
    rc, sender, length, data = _shoal.recv(capacity, _timeout_ms(timeout))
    if rc == BufferTooSmall.code:
        raise BufferTooSmall(detail=str(length))
    check(rc)
    return Message(sender, data)


def recv(timeout=None):
    """The oldest message (a capture point), whole whatever its size.
    Timeout when ``timeout`` seconds pass first (0: poll)."""
    rc, sender, length, data = _shoal.recv(SCRATCH_SIZE, _timeout_ms(timeout))
    if rc == BufferTooSmall.code:
        # Longer than the scratch size: it is queued, at the head.
        rc, sender, length, data = _shoal.recv(length, 0)
    check(rc)
    return Message(sender, data)


# ---- calls, monitors ---------------------------------------------------------


class Incoming:
    """What ``recv_any`` and ``recv_from`` return. ``kind``: KIND_MESSAGE
    (``sender``, ``data``), KIND_CALL (``handle``: answer with ``reply``),
    KIND_DOWN (``sender`` went down; ``monitor``, ``reason``, ``exit_code``),
    KIND_REPLY (``request``)."""

    __slots__ = ("kind", "sender", "data", "handle", "monitor", "request", "reason", "exit_code")

    def __init__(self, kind, sender, reference, reason, code, data):
        self.kind = kind if kind in (KIND_CALL, KIND_DOWN, KIND_REPLY) else KIND_MESSAGE
        self.sender = sender
        self.data = data
        self.handle = reference if kind == KIND_CALL else 0
        self.monitor = reference if kind == KIND_DOWN else 0
        self.request = reference if kind == KIND_REPLY else 0
        self.reason = reason if kind == KIND_DOWN else 0
        self.exit_code = code if kind == KIND_DOWN else 0

    def __repr__(self):
        return "Incoming(kind=%d, sender=%d, data=%r)" % (self.kind, self.sender, self.data)


def _receive_any(recv, timeout):
    rc, sender, length, kind, ref, reason, code, data = recv(SCRATCH_SIZE, _timeout_ms(timeout))
    if rc == BufferTooSmall.code:
        rc, sender, length, kind, ref, reason, code, data = recv(length, 0)
    check(rc)
    return Incoming(kind, sender, ref, reason, code, data)


def recv_any(timeout=None):
    """The oldest message, call request or DOWN notice (a capture point)."""
    return _receive_any(_shoal.recv_any, timeout)


def recv_from(pid, timeout=None):
    """What ``recv_any`` would return, from ``pid`` only; other mail stays
    queued in order (a capture point)."""
    return _receive_any(lambda cap, t: _shoal.recv_match(MATCH_FROM, pid, cap, t), timeout)


def call(pid, request, timeout=None):
    """Calls ``pid`` and waits for its reply (a capture point; other mail
    stays queued). Timeout, NoProcess, MailboxFull, Invalid (oneself),
    BufferTooSmall (a reply over CALL_REPLY_MAX: lost), or the callee's
    going down (see ``_down``)."""
    rc, reply, reason, code = _shoal.call(pid, _bytes(request), CALL_REPLY_MAX, _timeout_ms(timeout))
    if rc in (CalleeDown.code, NodeDown.code, NotCallable.code):
        raise _down(rc, reason, code)
    check(rc)
    return reply


def call_name(name, request, timeout=None):
    """``whereis`` then ``call``."""
    return call(whereis(name), request, timeout)


def reply(handle, data):
    """Answers the call that carried ``handle``; Invalid if unknown or
    answered."""
    check(_shoal.reply(handle, _bytes(data)))


def send_request(pid, request):
    """A call that does not wait: returns the request's reference, for
    ``receive_response``. Limit (1024 pending), NoProcess, MailboxFull."""
    rc, ref = _shoal.send_request(pid, _bytes(request))
    check(rc)
    return ref


def receive_response(request, timeout=None):
    """The answer to ``request`` (a capture point), or the callee's going
    down (see ``_down``). Timeout leaves
    it pending: wait again, or ``cancel_request``."""
    rc, sender, length, kind, ref, reason, code, data = _shoal.recv_match(
        MATCH_REPLY, request, SCRATCH_SIZE, _timeout_ms(timeout)
    )
    if rc == BufferTooSmall.code:
        rc, sender, length, kind, ref, reason, code, data = _shoal.recv_match(
            MATCH_REPLY, request, length, 0
        )
    check(rc)
    if kind == KIND_REPLY:
        return data
    err = {
        REASON_NOPROC: NoProcess.code,
        REASON_NODE_DOWN: NodeDown.code,
        REASON_NOT_CALLABLE: NotCallable.code,
    }.get(reason, CalleeDown.code)
    raise _down(err, reason, code, data.decode("utf-8", "replace") if reason == REASON_TRAP else "")


def cancel_request(request):
    """Withdraws a pending request (its answer is dropped)."""
    check(_shoal.demonitor(request))


def monitor(pid):
    """Asks for a DOWN notice (through ``recv_any``) when ``pid`` ends;
    returns the monitor's reference. Invalid for oneself."""
    rc, ref = _shoal.monitor(pid)
    check(rc)
    return ref


def demonitor(ref):
    """Withdraws a monitor; Invalid if it is not one."""
    check(_shoal.demonitor(ref))


# ---- names and groups --------------------------------------------------------


def register(name):
    """Holds ``name`` in this owner's namespace. NameTaken, Limit, NoNode."""
    check(_shoal.register(_bytes(name)))


def unregister(name):
    """Gives ``name`` up; Invalid if this process does not hold it."""
    check(_shoal.unregister(_bytes(name)))


def whereis(name):
    """The pid holding ``name``; NoProcess if none."""
    rc, pid = _shoal.whereis(_bytes(name))
    check(rc)
    return pid


def join_group(name):
    check(_shoal.join_group(_bytes(name)))


def leave_group(name):
    check(_shoal.leave_group(_bytes(name)))


def group_pick(name):
    """One live member of the group, preferring this node; NoProcess if
    empty."""
    rc, pid = _shoal.group_pick(_bytes(name))
    check(rc)
    return pid


# ---- locks -------------------------------------------------------------------


class Lock:
    """A held lock: ``name`` and its fencing ``token``. Use it as a fence for
    key-value writes, or as a context manager (unlocks on exit)."""

    __slots__ = ("name", "token")

    def __init__(self, name, token):
        self.name = name
        self.token = token

    def unlock(self):
        """Releases it; LockLost if it is no longer held under this token."""
        check(_shoal.unlock(_bytes(self.name), self.token))

    def fence(self):
        return (_bytes(self.name), self.token)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlock()
        return False

    def __repr__(self):
        return "Lock(%r, token=%d)" % (self.name, self.token)


def lock(name, timeout=None):
    """Waits (a capture point) until this process holds ``name``. Timeout,
    Deadlock, LockLost, Quota, Unavailable."""
    rc, token = _shoal.lock(_bytes(name), _timeout_ms(timeout))
    check(rc)
    return Lock(name, token)


def try_lock(name):
    """``lock`` without waiting: Busy if another process holds it."""
    rc, token = _shoal.try_lock(_bytes(name))
    check(rc)
    return Lock(name, token)


def lock_check(name, token):
    """Nothing if ``token`` is the lock's current one, else Fenced."""
    check(_shoal.lock_check(_bytes(name), token))


# ---- key-value ---------------------------------------------------------------


class Entry:
    """A key-value entry: ``value`` (bytes) and ``version``."""

    __slots__ = ("value", "version")

    def __init__(self, value, version):
        self.value = value
        self.version = version

    def __repr__(self):
        return "Entry(%r, version=%d)" % (self.value, self.version)


def encode_keys(keys):
    """Keys as ``kv_get_many`` and ``kv_delete_many`` take them: each a
    2-byte little-endian length, then the key."""
    out = bytearray()
    for k in keys:
        k = _bytes(k)
        if len(k) > 0xFFFF:
            raise BadKey()
        out += len(k).to_bytes(2, "little") + k
    return bytes(out)


def encode_entries(entries):
    """``(key, value)`` pairs as ``kv_set_many`` takes them: 2-byte key
    length, key, 4-byte value length, value."""
    out = bytearray()
    for k, v in entries:
        k, v = _bytes(k), _bytes(v)
        if len(k) > 0xFFFF:
            raise BadKey()
        if len(v) > 0xFFFFFFFF:
            raise ValueTooLarge()
        out += len(k).to_bytes(2, "little") + k + len(v).to_bytes(4, "little") + v
    return bytes(out)


def decode_keys(buf, count):
    """``count`` keys as ``kv_list`` writes them, as ``str`` (bytes where a
    key is not UTF-8)."""
    keys = []
    at = 0
    for _ in range(count):
        if len(buf) - at < 2:
            raise Invalid(detail="kv_list records cut short")
        n = int.from_bytes(buf[at:at + 2], "little")
        at += 2
        if len(buf) - at < n:
            raise Invalid(detail="kv_list records cut short")
        raw = bytes(buf[at:at + n])
        at += n
        try:
            keys.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            keys.append(raw)
    return keys


def decode_many(records):
    """``kv_get_many``'s records: one Entry per key, in order, None for an
    absent key."""
    out = []
    at = 0
    while at < len(records):
        if len(records) - at < KV_MANY_RECORD_HEADER or len(out) >= MAX_BATCH_ENTRIES:
            raise Invalid(detail="kv_get_many records malformed")
        version = int.from_bytes(records[at:at + 8], "little")
        n = int.from_bytes(records[at + 8:at + 12], "little")
        at += KV_MANY_RECORD_HEADER
        if len(records) - at < n:
            raise Invalid(detail="kv_get_many records cut short")
        out.append(Entry(bytes(records[at:at + n]), version) if version else None)
        at += n
    return out


def _fence(lock):
    return None if lock is None else lock.fence()


class Bucket:
    """A key-value bucket of this process's owner, replicated through Raft.
    Reads are linearizable unless taken through ``stale()``. Keys may be
    ``str`` or bytes; values bytes (or ``str``, stored as UTF-8). Writes take
    an optional ``fence`` (a held ``Lock``): Fenced when it is no longer the
    lock's current token."""

    __slots__ = ("name", "_b", "flags")

    def __init__(self, name, flags=0):
        self.name = name
        self._b = _bytes(name)
        self.flags = flags

    def stale(self):
        """This bucket, read from this node's applied state (cheaper, maybe
        behind)."""
        return Bucket(self.name, KV_STALE)

    def get_with_size(self, key, capacity):
        """One ``kv_get`` with a buffer of ``capacity`` bytes: an Entry, None
        if absent, or BufferTooSmall whose ``.detail`` is the size needed."""
        rc, version, length, value = _shoal.kv_get(self._b, _bytes(key), self.flags, capacity)
        if rc == NotFound.code:
            return None
        if rc == BufferTooSmall.code:
            raise BufferTooSmall(detail=str(length))
        check(rc)
        return Entry(value, version)

    def get(self, key):
        """The entry at ``key``, or None."""
        rc, version, length, value = _shoal.kv_get(self._b, _bytes(key), self.flags, SCRATCH_SIZE)
        if rc == BufferTooSmall.code:
            # A longer value; it may change between the two reads, so ask
            # until one fits.
            for _ in range(8):
                rc, version, length, value = _shoal.kv_get(self._b, _bytes(key), self.flags, length)
                if rc != BufferTooSmall.code:
                    break
        if rc == NotFound.code:
            return None
        check(rc)
        return Entry(value, version)

    def exists(self, key):
        return check(_shoal.kv_exists(self._b, _bytes(key), self.flags)) == 1

    def set(self, key, value, fence=None):
        """Sets ``key``; returns the new version."""
        rc, version = _shoal.kv_set(self._b, _bytes(key), _bytes(value), _fence(fence))
        check(rc)
        return version

    def cas(self, key, expected_version, value, fence=None):
        """``set`` only if ``key`` is at ``expected_version`` (0: absent),
        else VersionMismatch."""
        rc, version = _shoal.kv_cas(self._b, _bytes(key), expected_version, _bytes(value), _fence(fence))
        check(rc)
        return version

    def delete(self, key, fence=None):
        """Deletes ``key``; True if it existed."""
        return check(_shoal.kv_delete(self._b, _bytes(key), _fence(fence))) == 1

    def increment(self, key, delta=1):
        """Adds ``delta`` to the counter at ``key`` (absent: 0); its new
        value. NotACounter, Overflow."""
        rc, value = _shoal.kv_increment(self._b, _bytes(key), delta)
        check(rc)
        return value

    def list(self, prefix="", cursor=""):
        """One page of the keys starting with ``prefix``, after ``cursor``
        ("" from the first), in byte order; an empty page is the end."""
        rc, buf = _shoal.kv_list(self._b, _bytes(prefix), _bytes(cursor), self.flags, SCRATCH_SIZE)
        check(rc)
        return decode_keys(buf, rc)

    def keys(self, prefix=""):
        """Every key starting with ``prefix``, page after page."""
        out = []
        cursor = ""
        while True:
            page = self.list(prefix, cursor)
            if not page:
                return out
            out.extend(page)
            cursor = page[-1]

    def get_many_with_size(self, keys, capacity):
        """One ``kv_get_many`` of ``keys`` with a buffer of ``capacity``
        bytes: ``(entries, size)``, or BufferTooSmall whose ``.detail`` is the
        size needed."""
        rc, size, records = _shoal.kv_get_many(self._b, encode_keys(keys), self.flags, capacity)
        if rc == BufferTooSmall.code:
            raise BufferTooSmall(detail=str(size))
        check(rc)
        return decode_many(records), size

    def get_many(self, keys):
        """The entries of ``keys`` from one state, in order (None where
        absent). BadBatch for 0 or over MAX_BATCH_ENTRIES keys."""
        enc = encode_keys(keys)
        capacity = SCRATCH_SIZE
        for _ in range(8):
            rc, size, records = _shoal.kv_get_many(self._b, enc, self.flags, capacity)
            if rc != BufferTooSmall.code:
                break
            capacity = size
        check(rc)
        return decode_many(records)

    def set_many(self, entries, fence=None):
        """Sets every ``(key, value)`` in one write, all or nothing; returns
        how many."""
        return check(_shoal.kv_set_many(self._b, encode_entries(entries), _fence(fence)))

    def delete_many(self, keys, fence=None):
        """Deletes every key in one write, all or nothing; returns how many
        existed."""
        return check(_shoal.kv_delete_many(self._b, encode_keys(keys), _fence(fence)))
