/*
 * _shoal: the Shoal guest ABI v1 for CPython 3.11 on wasm32-wasi, one
 * function per import of "shoal_v1" (sdk/ABI.md is the one contract; the
 * declarations come from sdk/include/shoal.h).
 *
 * This layer only marshals: bytes in, ints and bytes out, and every result
 * code returned as it is (a negative int is an ABI error). The Python
 * module `shoal` (shoal.py, beside this file) turns codes into exceptions,
 * seconds into milliseconds and batches into their wire encoding. Python
 * code imports `shoal`, not this module.
 *
 * Buffers: a receive takes the capacity to offer; a message that does not
 * fit stays queued (BUFFER_TOO_SMALL) and the size needed comes back, so
 * shoal.py retries with exactly that (the ABI's own protocol). Nothing here
 * keeps state between calls, so a process captured inside any blocking
 * call (recv, recv_any, recv_match, call, lock, sleep_ms, yield_now)
 * resumes with its buffers and Python objects where they were.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <string.h>

#include "shoal.h"

/* A capacity a guest asks for: 0 .. 16 MiB (the ABI's largest answer is a
 * 4 MiB batch plus record headers). */
#define CAPACITY_MAX (16 * 1024 * 1024)

static int capacity_ok(Py_ssize_t cap) {
    if (cap < 0 || cap > CAPACITY_MAX) {
        PyErr_Format(PyExc_ValueError, "buffer capacity %zd is outside 0..%d", cap, CAPACITY_MAX);
        return 0;
    }
    return 1;
}

/* "O&" converter: a Python int that fits in 64 unsigned bits (pids,
 * handles, references, tokens). */
static int u64_conv(PyObject *o, void *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return 0;
    *(uint64_t *)out = (uint64_t)v;
    return 1;
}

/* A fresh bytes object of `cap` bytes to receive into (never NULL data). */
static PyObject *new_buffer(Py_ssize_t cap) {
    return PyBytes_FromStringAndSize(NULL, cap);
}

/* Shrinks `buf` to `len` bytes after a successful receive; steals it. */
static PyObject *finish_buffer(PyObject *buf, Py_ssize_t len) {
    if (len < PyBytes_GET_SIZE(buf) && _PyBytes_Resize(&buf, len) < 0) return NULL;
    return buf;
}

/* A fence: None, or (name: bytes, token: int). Fills `f` and says whether
 * there is one. The name's bytes must outlive the call: it borrows `o`. */
static int fence_of(PyObject *o, shoal_fence *f, const shoal_fence **out) {
    if (o == Py_None) {
        *out = NULL;
        return 1;
    }
    const char *name;
    Py_ssize_t name_len;
    uint64_t token;
    if (!PyArg_ParseTuple(o, "y#O&", &name, &name_len, u64_conv, &token)) return 0;
    f->token = token;
    f->name_ptr = (uint32_t)(uintptr_t)name;
    f->name_len = (uint32_t)name_len;
    *out = f;
    return 1;
}

static PyObject *py_self_pid(PyObject *m, PyObject *noargs) {
    return PyLong_FromUnsignedLongLong(shoal_self_pid());
}

static PyObject *py_spawn(PyObject *m, PyObject *args) {
    const char *module, *argv;
    Py_ssize_t module_len, argv_len;
    if (!PyArg_ParseTuple(args, "y#y#", &module, &module_len, &argv, &argv_len)) return NULL;
    shoal_pid_t pid = 0;
    int32_t rc = shoal_spawn(module, (int32_t)module_len, argv, (int32_t)argv_len, &pid);
    return Py_BuildValue("iK", rc, (unsigned long long)pid);
}

static PyObject *py_spawn_on(PyObject *m, PyObject *args) {
    const char *target, *module, *argv;
    Py_ssize_t target_len, module_len, argv_len;
    if (!PyArg_ParseTuple(args, "y#y#y#", &target, &target_len, &module, &module_len, &argv,
                          &argv_len))
        return NULL;
    shoal_pid_t pid = 0;
    int32_t rc = shoal_spawn_on(target, (int32_t)target_len, module, (int32_t)module_len, argv,
                                (int32_t)argv_len, &pid);
    return Py_BuildValue("iK", rc, (unsigned long long)pid);
}

static PyObject *py_sleep_ms(PyObject *m, PyObject *args) {
    long long ms;
    if (!PyArg_ParseTuple(args, "L", &ms)) return NULL;
    return PyLong_FromLong(shoal_sleep_ms(ms));
}

static PyObject *py_yield_now(PyObject *m, PyObject *noargs) {
    return PyLong_FromLong(shoal_yield_now());
}

static PyObject *py_preempt(PyObject *m, PyObject *noargs) {
    shoal_preempt();
    Py_RETURN_NONE;
}

static PyObject *py_exit(PyObject *m, PyObject *args) {
    int code;
    if (!PyArg_ParseTuple(args, "i", &code)) return NULL;
    fflush(NULL);
    shoal_exit(code);
}

static PyObject *py_log(PyObject *m, PyObject *args) {
    int level;
    const char *text;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "iy#", &level, &text, &len)) return NULL;
    return PyLong_FromLong(shoal_log(level, text, (int32_t)len));
}

static PyObject *py_send(PyObject *m, PyObject *args) {
    uint64_t pid;
    const char *data;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "O&y#", u64_conv, &pid, &data, &len)) return NULL;
    return PyLong_FromLong(shoal_send(pid, data, (int32_t)len));
}

/* recv(capacity, timeout_ms) -> (rc, sender, length, data or None) */
static PyObject *py_recv(PyObject *m, PyObject *args) {
    Py_ssize_t cap;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "nL", &cap, &timeout_ms) || !capacity_ok(cap)) return NULL;
    PyObject *buf = new_buffer(cap);
    if (!buf) return NULL;
    shoal_recv_info_t info = {0};
    int32_t rc = shoal_recv(PyBytes_AS_STRING(buf), (int32_t)cap, timeout_ms, &info);
    if (rc < 0) {
        Py_DECREF(buf);
        return Py_BuildValue("iKIO", rc, (unsigned long long)info.sender_pid, info.length, Py_None);
    }
    buf = finish_buffer(buf, rc);
    if (!buf) return NULL;
    return Py_BuildValue("iKIN", rc, (unsigned long long)info.sender_pid, info.length, buf);
}

/* (rc, sender, length, kind, reference, reason, code, data or None) */
static PyObject *any_result(int32_t rc, const shoal_recv_any_info_t *info, PyObject *buf) {
    if (rc < 0) {
        Py_DECREF(buf);
        return Py_BuildValue("iKIIKiiO", rc, (unsigned long long)info->sender_pid, info->length,
                             info->kind, (unsigned long long)info->reference, info->reason,
                             info->code, Py_None);
    }
    buf = finish_buffer(buf, rc);
    if (!buf) return NULL;
    return Py_BuildValue("iKIIKiiN", rc, (unsigned long long)info->sender_pid, info->length,
                         info->kind, (unsigned long long)info->reference, info->reason, info->code,
                         buf);
}

/* recv_any(capacity, timeout_ms) -> see any_result */
static PyObject *py_recv_any(PyObject *m, PyObject *args) {
    Py_ssize_t cap;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "nL", &cap, &timeout_ms) || !capacity_ok(cap)) return NULL;
    PyObject *buf = new_buffer(cap);
    if (!buf) return NULL;
    shoal_recv_any_info_t info = {0};
    int32_t rc = shoal_recv_any(PyBytes_AS_STRING(buf), (int32_t)cap, timeout_ms, &info);
    return any_result(rc, &info, buf);
}

/* recv_match(filter, value, capacity, timeout_ms) -> see any_result */
static PyObject *py_recv_match(PyObject *m, PyObject *args) {
    int filter;
    uint64_t value;
    Py_ssize_t cap;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "iO&nL", &filter, u64_conv, &value, &cap, &timeout_ms) ||
        !capacity_ok(cap))
        return NULL;
    PyObject *buf = new_buffer(cap);
    if (!buf) return NULL;
    shoal_recv_any_info_t info = {0};
    int32_t rc = shoal_recv_match(filter, (int64_t)value, PyBytes_AS_STRING(buf), (int32_t)cap,
                                  timeout_ms, &info);
    return any_result(rc, &info, buf);
}

/* call(pid, request, capacity, timeout_ms) -> (rc, reply or None, reason, code) */
static PyObject *py_call(PyObject *m, PyObject *args) {
    uint64_t pid;
    const char *req;
    Py_ssize_t req_len, cap;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "O&y#nL", u64_conv, &pid, &req, &req_len, &cap, &timeout_ms) ||
        !capacity_ok(cap))
        return NULL;
    PyObject *buf = new_buffer(cap);
    if (!buf) return NULL;
    shoal_down_info_t down = {0};
    int32_t rc = shoal_call(pid, req, (int32_t)req_len, PyBytes_AS_STRING(buf), (int32_t)cap,
                            timeout_ms, &down);
    if (rc < 0) {
        Py_DECREF(buf);
        return Py_BuildValue("iOii", rc, Py_None, down.reason, down.code);
    }
    buf = finish_buffer(buf, rc);
    if (!buf) return NULL;
    return Py_BuildValue("iNii", rc, buf, down.reason, down.code);
}

static PyObject *py_reply(PyObject *m, PyObject *args) {
    uint64_t handle;
    const char *data;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "O&y#", u64_conv, &handle, &data, &len)) return NULL;
    return PyLong_FromLong(shoal_reply(handle, data, (int32_t)len));
}

static PyObject *py_monitor(PyObject *m, PyObject *args) {
    uint64_t pid, ref = 0;
    if (!PyArg_ParseTuple(args, "O&", u64_conv, &pid)) return NULL;
    int32_t rc = shoal_monitor(pid, &ref);
    return Py_BuildValue("iK", rc, (unsigned long long)ref);
}

static PyObject *py_demonitor(PyObject *m, PyObject *args) {
    uint64_t ref;
    if (!PyArg_ParseTuple(args, "O&", u64_conv, &ref)) return NULL;
    return PyLong_FromLong(shoal_demonitor(ref));
}

static PyObject *py_send_request(PyObject *m, PyObject *args) {
    uint64_t pid, ref = 0;
    const char *req;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "O&y#", u64_conv, &pid, &req, &len)) return NULL;
    int32_t rc = shoal_send_request(pid, req, (int32_t)len, &ref);
    return Py_BuildValue("iK", rc, (unsigned long long)ref);
}

/* register, unregister, join_group, leave_group: name -> rc */
#define NAME_CALL(fn)                                                      \
    static PyObject *py_##fn(PyObject *m, PyObject *args) {                \
        const char *name;                                                  \
        Py_ssize_t len;                                                    \
        if (!PyArg_ParseTuple(args, "y#", &name, &len)) return NULL;       \
        return PyLong_FromLong(shoal_##fn(name, (int32_t)len));            \
    }
NAME_CALL(register)
NAME_CALL(unregister)
NAME_CALL(join_group)
NAME_CALL(leave_group)

/* whereis, group_pick: name -> (rc, pid) */
#define NAME_PID_CALL(fn)                                                  \
    static PyObject *py_##fn(PyObject *m, PyObject *args) {                \
        const char *name;                                                  \
        Py_ssize_t len;                                                    \
        uint64_t pid = 0;                                                  \
        if (!PyArg_ParseTuple(args, "y#", &name, &len)) return NULL;       \
        int32_t rc = shoal_##fn(name, (int32_t)len, &pid);                 \
        return Py_BuildValue("iK", rc, (unsigned long long)pid);           \
    }
NAME_PID_CALL(whereis)
NAME_PID_CALL(group_pick)

/* kv_get(bucket, key, flags, capacity) -> (rc, version, length, value or None) */
static PyObject *py_kv_get(PyObject *m, PyObject *args) {
    const char *bucket, *key;
    Py_ssize_t bucket_len, key_len, cap;
    int flags;
    if (!PyArg_ParseTuple(args, "y#y#in", &bucket, &bucket_len, &key, &key_len, &flags, &cap) ||
        !capacity_ok(cap))
        return NULL;
    PyObject *buf = new_buffer(cap);
    if (!buf) return NULL;
    shoal_kv_info info = {0};
    int32_t rc = shoal_kv_get(bucket, (int32_t)bucket_len, (const uint8_t *)key, (int32_t)key_len,
                              flags, (uint8_t *)PyBytes_AS_STRING(buf), (int32_t)cap, &info);
    if (rc < 0) {
        Py_DECREF(buf);
        return Py_BuildValue("iKKO", rc, (unsigned long long)info.version,
                             (unsigned long long)info.length, Py_None);
    }
    buf = finish_buffer(buf, rc);
    if (!buf) return NULL;
    return Py_BuildValue("iKKN", rc, (unsigned long long)info.version,
                         (unsigned long long)info.length, buf);
}

static PyObject *py_kv_exists(PyObject *m, PyObject *args) {
    const char *bucket, *key;
    Py_ssize_t bucket_len, key_len;
    int flags;
    if (!PyArg_ParseTuple(args, "y#y#i", &bucket, &bucket_len, &key, &key_len, &flags)) return NULL;
    return PyLong_FromLong(shoal_kv_exists(bucket, (int32_t)bucket_len, (const uint8_t *)key,
                                           (int32_t)key_len, flags));
}

/* kv_set(bucket, key, value, fence) -> (rc, version) */
static PyObject *py_kv_set(PyObject *m, PyObject *args) {
    const char *bucket, *key, *value;
    Py_ssize_t bucket_len, key_len, value_len;
    PyObject *fence_obj;
    if (!PyArg_ParseTuple(args, "y#y#y#O", &bucket, &bucket_len, &key, &key_len, &value,
                          &value_len, &fence_obj))
        return NULL;
    shoal_fence f;
    const shoal_fence *fence;
    if (!fence_of(fence_obj, &f, &fence)) return NULL;
    uint64_t version = 0;
    int32_t rc = shoal_kv_set(bucket, (int32_t)bucket_len, (const uint8_t *)key, (int32_t)key_len,
                              (const uint8_t *)value, (int32_t)value_len, fence, &version);
    return Py_BuildValue("iK", rc, (unsigned long long)version);
}

/* kv_cas(bucket, key, expected_version, value, fence) -> (rc, version) */
static PyObject *py_kv_cas(PyObject *m, PyObject *args) {
    const char *bucket, *key, *value;
    Py_ssize_t bucket_len, key_len, value_len;
    uint64_t expected;
    PyObject *fence_obj;
    if (!PyArg_ParseTuple(args, "y#y#O&y#O", &bucket, &bucket_len, &key, &key_len, u64_conv,
                          &expected, &value, &value_len, &fence_obj))
        return NULL;
    shoal_fence f;
    const shoal_fence *fence;
    if (!fence_of(fence_obj, &f, &fence)) return NULL;
    uint64_t version = 0;
    int32_t rc = shoal_kv_cas(bucket, (int32_t)bucket_len, (const uint8_t *)key, (int32_t)key_len,
                              (int64_t)expected, (const uint8_t *)value, (int32_t)value_len, fence,
                              &version);
    return Py_BuildValue("iK", rc, (unsigned long long)version);
}

static PyObject *py_kv_delete(PyObject *m, PyObject *args) {
    const char *bucket, *key;
    Py_ssize_t bucket_len, key_len;
    PyObject *fence_obj;
    if (!PyArg_ParseTuple(args, "y#y#O", &bucket, &bucket_len, &key, &key_len, &fence_obj))
        return NULL;
    shoal_fence f;
    const shoal_fence *fence;
    if (!fence_of(fence_obj, &f, &fence)) return NULL;
    return PyLong_FromLong(shoal_kv_delete(bucket, (int32_t)bucket_len, (const uint8_t *)key,
                                           (int32_t)key_len, fence));
}

/* kv_increment(bucket, key, delta) -> (rc, value) */
static PyObject *py_kv_increment(PyObject *m, PyObject *args) {
    const char *bucket, *key;
    Py_ssize_t bucket_len, key_len;
    long long delta;
    if (!PyArg_ParseTuple(args, "y#y#L", &bucket, &bucket_len, &key, &key_len, &delta))
        return NULL;
    int64_t value = 0;
    int32_t rc = shoal_kv_increment(bucket, (int32_t)bucket_len, (const uint8_t *)key,
                                    (int32_t)key_len, delta, &value);
    return Py_BuildValue("iL", rc, (long long)value);
}

/* kv_list(bucket, prefix, cursor, flags, capacity) -> (rc, bytes written or None) */
static PyObject *py_kv_list(PyObject *m, PyObject *args) {
    const char *bucket, *prefix, *cursor;
    Py_ssize_t bucket_len, prefix_len, cursor_len, cap;
    int flags;
    if (!PyArg_ParseTuple(args, "y#y#y#in", &bucket, &bucket_len, &prefix, &prefix_len, &cursor,
                          &cursor_len, &flags, &cap) ||
        !capacity_ok(cap))
        return NULL;
    PyObject *buf = new_buffer(cap);
    if (!buf) return NULL;
    uint8_t *p = (uint8_t *)PyBytes_AS_STRING(buf);
    int32_t rc = shoal_kv_list(bucket, (int32_t)bucket_len, (const uint8_t *)prefix,
                               (int32_t)prefix_len, (const uint8_t *)cursor, (int32_t)cursor_len,
                               flags, p, (int32_t)cap);
    if (rc < 0) {
        Py_DECREF(buf);
        return Py_BuildValue("iO", rc, Py_None);
    }
    /* The count is returned; the records' bytes are walked to find their end. */
    Py_ssize_t at = 0;
    for (int32_t i = 0; i < rc; i++) {
        if (at + 2 > cap) break;
        Py_ssize_t len = (Py_ssize_t)p[at] | ((Py_ssize_t)p[at + 1] << 8);
        if (at + 2 + len > cap) break;
        at += 2 + len;
    }
    buf = finish_buffer(buf, at);
    if (!buf) return NULL;
    return Py_BuildValue("iN", rc, buf);
}

/* kv_get_many(bucket, keys, flags, capacity) -> (rc, size, records or None) */
static PyObject *py_kv_get_many(PyObject *m, PyObject *args) {
    const char *bucket, *keys;
    Py_ssize_t bucket_len, keys_len, cap;
    int flags;
    if (!PyArg_ParseTuple(args, "y#y#in", &bucket, &bucket_len, &keys, &keys_len, &flags, &cap) ||
        !capacity_ok(cap))
        return NULL;
    PyObject *buf = new_buffer(cap);
    if (!buf) return NULL;
    uint64_t size = 0;
    int32_t rc = shoal_kv_get_many(bucket, (int32_t)bucket_len, (const uint8_t *)keys,
                                   (int32_t)keys_len, flags, (uint8_t *)PyBytes_AS_STRING(buf),
                                   (int32_t)cap, &size);
    if (rc < 0) {
        Py_DECREF(buf);
        return Py_BuildValue("iKO", rc, (unsigned long long)size, Py_None);
    }
    buf = finish_buffer(buf, rc);
    if (!buf) return NULL;
    return Py_BuildValue("iKN", rc, (unsigned long long)size, buf);
}

/* kv_set_many / kv_delete_many(bucket, encoded, fence) -> rc */
#define BATCH_CALL(fn)                                                                       \
    static PyObject *py_##fn(PyObject *m, PyObject *args) {                                  \
        const char *bucket, *enc;                                                            \
        Py_ssize_t bucket_len, enc_len;                                                      \
        PyObject *fence_obj;                                                                 \
        if (!PyArg_ParseTuple(args, "y#y#O", &bucket, &bucket_len, &enc, &enc_len, &fence_obj)) \
            return NULL;                                                                     \
        shoal_fence f;                                                                       \
        const shoal_fence *fence;                                                            \
        if (!fence_of(fence_obj, &f, &fence)) return NULL;                                   \
        return PyLong_FromLong(shoal_##fn(bucket, (int32_t)bucket_len, (const uint8_t *)enc, \
                                          (int32_t)enc_len, fence));                         \
    }
BATCH_CALL(kv_set_many)
BATCH_CALL(kv_delete_many)

/* lock(name, timeout_ms) -> (rc, token) */
static PyObject *py_lock(PyObject *m, PyObject *args) {
    const char *name;
    Py_ssize_t len;
    long long timeout_ms;
    if (!PyArg_ParseTuple(args, "y#L", &name, &len, &timeout_ms)) return NULL;
    uint64_t token = 0;
    int32_t rc = shoal_lock(name, (int32_t)len, timeout_ms, &token);
    return Py_BuildValue("iK", rc, (unsigned long long)token);
}

static PyObject *py_try_lock(PyObject *m, PyObject *args) {
    const char *name;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "y#", &name, &len)) return NULL;
    uint64_t token = 0;
    int32_t rc = shoal_try_lock(name, (int32_t)len, &token);
    return Py_BuildValue("iK", rc, (unsigned long long)token);
}

/* unlock, lock_check: (name, token) -> rc */
#define TOKEN_CALL(fn)                                                           \
    static PyObject *py_##fn(PyObject *m, PyObject *args) {                      \
        const char *name;                                                        \
        Py_ssize_t len;                                                          \
        uint64_t token;                                                          \
        if (!PyArg_ParseTuple(args, "y#O&", &name, &len, u64_conv, &token))      \
            return NULL;                                                         \
        return PyLong_FromLong(shoal_##fn(name, (int32_t)len, (int64_t)token));  \
    }
TOKEN_CALL(unlock)
TOKEN_CALL(lock_check)

#define F(name, flags) {#name, (PyCFunction)py_##name, flags, NULL}
static PyMethodDef methods[] = {
    F(self_pid, METH_NOARGS),     F(spawn, METH_VARARGS),        F(spawn_on, METH_VARARGS),
    F(sleep_ms, METH_VARARGS),    F(yield_now, METH_NOARGS),     F(preempt, METH_NOARGS),
    F(exit, METH_VARARGS),        F(log, METH_VARARGS),          F(send, METH_VARARGS),
    F(recv, METH_VARARGS),        F(call, METH_VARARGS),         F(recv_any, METH_VARARGS),
    F(reply, METH_VARARGS),       F(monitor, METH_VARARGS),      F(demonitor, METH_VARARGS),
    F(send_request, METH_VARARGS), F(recv_match, METH_VARARGS),  F(register, METH_VARARGS),
    F(unregister, METH_VARARGS),  F(whereis, METH_VARARGS),      F(join_group, METH_VARARGS),
    F(leave_group, METH_VARARGS), F(group_pick, METH_VARARGS),   F(kv_get, METH_VARARGS),
    F(kv_exists, METH_VARARGS),   F(kv_set, METH_VARARGS),       F(kv_cas, METH_VARARGS),
    F(kv_delete, METH_VARARGS),   F(kv_increment, METH_VARARGS), F(kv_list, METH_VARARGS),
    F(kv_get_many, METH_VARARGS), F(kv_set_many, METH_VARARGS),  F(kv_delete_many, METH_VARARGS),
    F(lock, METH_VARARGS),        F(try_lock, METH_VARARGS),     F(unlock, METH_VARARGS),
    F(lock_check, METH_VARARGS),  {NULL, NULL, 0, NULL},
};
#undef F

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_shoal",
    "The Shoal guest ABI v1, one function per shoal_v1 import (use the `shoal` module).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__shoal(void) {
    return PyModule_Create(&module_def);
}
