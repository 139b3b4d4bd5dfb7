//go:build wasip1

package shoal

import (
	"encoding/binary"
	"runtime"
	"unsafe"

	"shoal/raw"
)

// KvStale is the flag of reads (Bucket.Stale) from this node's applied
// state instead of linearizable ones.
const KvStale int32 = 1

// KvInfo is kv_get's record: the entry's version, and the value's length
// (also on ErrBufferTooSmall).
type KvInfo = raw.KvInfo

// Bucket is a bucket of keys of this process's owner, replicated by the
// cluster (every write is on a majority of nodes' disks before it
// returns). Keys are 1 to 256 bytes (any bytes: a Go string holds them),
// values at most 1 MiB. Reads are linearizable unless the bucket is
// Stale(). Off a cluster every call is ErrNoNode.
type Bucket struct {
	name  string
	flags int32
}

// OpenBucket is the bucket name (1 to 64 bytes of UTF-8); nothing is asked
// of the cluster until it is used.
func OpenBucket(name string) Bucket { return Bucket{name: name} }

// Name is the bucket's name.
func (b Bucket) Name() string { return b.name }

// Stale is the same bucket, read from this node's applied state: cheaper,
// but it may miss writes completed a moment ago elsewhere.
func (b Bucket) Stale() Bucket { return Bucket{name: b.name, flags: KvStale} }

// Entry is a value and its version (the cluster's write counter when it
// was last written, strictly increasing over all writes).
type Entry struct {
	Value   []byte
	Version uint64
}

// KeyValue is one entry of a SetMany batch.
type KeyValue struct {
	Key   string
	Value []byte
}

// lens are the lengths of the bucket name and of key, checked.
func (b Bucket) lens(key string) (int32, int32, error) {
	bl, err := inLen(len(b.name))
	if err != nil {
		return 0, 0, err
	}
	kl, err := inLen(len(key))
	if err != nil {
		return 0, 0, err
	}
	return bl, kl, nil
}

// GetWithInfo is kv_get as the ABI has it: the value into buf, its length
// returned, info its version and length (the length also on
// ErrBufferTooSmall). ErrNotFound if absent.
func (b Bucket) GetWithInfo(key string, buf []byte, info *KvInfo) (int, error) {
	bl, kl, err := b.lens(key)
	if err != nil {
		return 0, err
	}
	rc := raw.KvGet(strPtr(b.name), bl, strPtr(key), kl, b.flags, bytesPtr(buf), bufLen(buf), unsafe.Pointer(info))
	runtime.KeepAlive(b.name)
	runtime.KeepAlive(key)
	runtime.KeepAlive(buf)
	return checkLen(rc, buf)
}

// GetInto reads key's entry into buf (Value is a slice of it), or nil if
// the key is absent. A longer value gives a *BufferTooSmallError with its
// size.
func (b Bucket) GetInto(key string, buf []byte) (*Entry, error) {
	var info KvInfo
	n, err := b.GetWithInfo(key, buf, &info)
	switch err {
	case nil:
		return &Entry{Value: buf[:n], Version: info.Version}, nil
	case ErrNotFound:
		return nil, nil
	case ErrBufferTooSmall:
		return nil, &BufferTooSmallError{Need: int(min(info.Length, MaxValueSize+1))}
	}
	return nil, err
}

// Get reads key's entry, of any size (Value is a fresh copy), or nil if
// the key is absent.
func (b Bucket) Get(key string) (*Entry, error) {
	scratchMu.Lock()
	defer scratchMu.Unlock()
	buf, shared := scratch[:], true
	// A value written again meanwhile may have grown: a few tries.
	for range 4 {
		var info KvInfo
		n, err := b.GetWithInfo(key, buf, &info)
		switch err {
		case nil:
			v := buf[:n]
			if shared {
				v = clone(v)
			}
			return &Entry{Value: v, Version: info.Version}, nil
		case ErrNotFound:
			return nil, nil
		case ErrBufferTooSmall:
			if info.Length <= uint64(len(buf)) || info.Length > MaxValueSize {
				return nil, ErrInvalid
			}
			buf, shared = make([]byte, info.Length), false
		default:
			return nil, err
		}
	}
	return nil, ErrBufferTooSmall
}

// Exists says whether key exists.
func (b Bucket) Exists(key string) (bool, error) {
	bl, kl, err := b.lens(key)
	if err != nil {
		return false, err
	}
	rc := raw.KvExists(strPtr(b.name), bl, strPtr(key), kl, b.flags)
	runtime.KeepAlive(b.name)
	runtime.KeepAlive(key)
	n, err := Check(rc)
	return n == 1, err
}

func (b Bucket) write(key string, value []byte, expected *uint64, lock *Lock) (uint64, error) {
	bl, kl, err := b.lens(key)
	if err != nil {
		return 0, err
	}
	vl, err := inLen(len(value))
	if err != nil {
		return 0, ErrValueTooLarge
	}
	fence, err := lock.fence()
	if err != nil {
		return 0, err
	}
	var version uint64
	var rc int32
	if expected != nil {
		rc = raw.KvCas(strPtr(b.name), bl, strPtr(key), kl, *expected, bytesPtr(value), vl, unsafe.Pointer(fence), unsafe.Pointer(&version))
	} else {
		rc = raw.KvSet(strPtr(b.name), bl, strPtr(key), kl, bytesPtr(value), vl, unsafe.Pointer(fence), unsafe.Pointer(&version))
	}
	runtime.KeepAlive(b.name)
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	runtime.KeepAlive(lock)
	if _, err := Check(rc); err != nil {
		return 0, err
	}
	return version, nil
}

// Set sets key to value and returns the entry's new version.
func (b Bucket) Set(key string, value []byte) (uint64, error) {
	return b.write(key, value, nil, nil)
}

// SetFenced is Set, applied only while lock is still the lock's current
// grant (else ErrFenced).
func (b Bucket) SetFenced(key string, value []byte, lock Lock) (uint64, error) {
	return b.write(key, value, nil, &lock)
}

// Cas is Set only if key is at version expected (0: absent), else
// ErrVersionMismatch.
func (b Bucket) Cas(key string, expected uint64, value []byte) (uint64, error) {
	return b.write(key, value, &expected, nil)
}

// CasFenced is Cas fenced by lock.
func (b Bucket) CasFenced(key string, expected uint64, value []byte, lock Lock) (uint64, error) {
	return b.write(key, value, &expected, &lock)
}

func (b Bucket) del(key string, lock *Lock) (bool, error) {
	bl, kl, err := b.lens(key)
	if err != nil {
		return false, err
	}
	fence, err := lock.fence()
	if err != nil {
		return false, err
	}
	rc := raw.KvDelete(strPtr(b.name), bl, strPtr(key), kl, unsafe.Pointer(fence))
	runtime.KeepAlive(b.name)
	runtime.KeepAlive(key)
	runtime.KeepAlive(lock)
	n, err := Check(rc)
	return n == 1, err
}

// Delete deletes key and says whether it existed.
func (b Bucket) Delete(key string) (bool, error) { return b.del(key, nil) }

// DeleteFenced is Delete fenced by lock.
func (b Bucket) DeleteFenced(key string, lock Lock) (bool, error) { return b.del(key, &lock) }

// Increment adds delta to the counter at key (8 bytes, little-endian; an
// absent key counts as 0) and returns its new value. ErrNotACounter,
// ErrOverflow.
func (b Bucket) Increment(key string, delta int64) (int64, error) {
	bl, kl, err := b.lens(key)
	if err != nil {
		return 0, err
	}
	var value int64
	rc := raw.KvIncrement(strPtr(b.name), bl, strPtr(key), kl, delta, unsafe.Pointer(&value))
	runtime.KeepAlive(b.name)
	runtime.KeepAlive(key)
	if _, err := Check(rc); err != nil {
		return 0, err
	}
	return value, nil
}

// ListInto is kv_list as the ABI has it: one page of the keys that start
// with prefix, after cursor ("": from the first), in byte order, written
// into buf (DecodeKeys reads them); returns how many. 0 is the end.
// ErrBufferTooSmall if not even one fits.
func (b Bucket) ListInto(prefix, cursor string, buf []byte) (int, error) {
	bl, pl, err := b.lens(prefix)
	if err != nil {
		return 0, err
	}
	cl, err := inLen(len(cursor))
	if err != nil {
		return 0, err
	}
	rc := raw.KvList(strPtr(b.name), bl, strPtr(prefix), pl, strPtr(cursor), cl, b.flags, bytesPtr(buf), bufLen(buf))
	runtime.KeepAlive(b.name)
	runtime.KeepAlive(prefix)
	runtime.KeepAlive(cursor)
	runtime.KeepAlive(buf)
	return Check(rc)
}

// List is one page of the keys that start with prefix, after cursor ("":
// from the first), in byte order: at most 1,000, and fewer when they fill
// ScratchSize. Pass the last key as the next cursor; an empty page is the
// end (Keys does all of that).
func (b Bucket) List(prefix, cursor string) ([]string, error) {
	scratchMu.Lock()
	defer scratchMu.Unlock()
	n, err := b.ListInto(prefix, cursor, scratch[:])
	if err != nil {
		return nil, err
	}
	return DecodeKeys(scratch[:], n)
}

// Keys is every key that starts with prefix, in byte order, page after
// page (each page is one read: keys written meanwhile may or may not be
// in).
func (b Bucket) Keys(prefix string) ([]string, error) {
	var all []string
	cursor := ""
	for {
		page, err := b.List(prefix, cursor)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			return all, nil
		}
		all = append(all, page...)
		cursor = page[len(page)-1]
	}
}

// DecodeKeys reads count keys encoded as kv_list writes them (and
// EncodeKeys): each a 2-byte little-endian length, then the key.
// ErrInvalid if they are cut short.
func DecodeKeys(buf []byte, count int) ([]string, error) {
	keys := make([]string, 0, min(count, len(buf)/2))
	at := 0
	for range count {
		if len(buf)-at < 2 {
			return nil, ErrInvalid
		}
		n := int(binary.LittleEndian.Uint16(buf[at:]))
		at += 2
		if len(buf)-at < n {
			return nil, ErrInvalid
		}
		keys = append(keys, string(buf[at:at+n]))
		at += n
	}
	return keys, nil
}

// EncodeKeys encodes keys as GetManyInto takes them: each a 2-byte
// little-endian length, then the key. ErrBadKey for a key longer than
// 65,535 bytes (the host refuses any over MaxKeySize with ErrBadKey too);
// the bounds of a batch are the host's to check (ErrBadBatch).
func EncodeKeys(keys ...string) ([]byte, error) {
	n := 0
	for _, k := range keys {
		if len(k) > 0xFFFF {
			return nil, ErrBadKey
		}
		n += 2 + len(k)
	}
	out := make([]byte, 0, n)
	for _, k := range keys {
		out = binary.LittleEndian.AppendUint16(out, uint16(len(k)))
		out = append(out, k...)
	}
	return out, nil
}

// EncodeEntries encodes entries as SetManyEncoded takes them: each a
// 2-byte little-endian key length, the key, a 4-byte little-endian value
// length and the value. ErrBadKey or ErrValueTooLarge for a length that
// does not fit its field.
func EncodeEntries(entries ...KeyValue) ([]byte, error) {
	n := 0
	for _, e := range entries {
		if len(e.Key) > 0xFFFF {
			return nil, ErrBadKey
		}
		if uint64(len(e.Value)) > 0xFFFF_FFFF {
			return nil, ErrValueTooLarge
		}
		n += 2 + len(e.Key) + 4 + len(e.Value)
	}
	out := make([]byte, 0, n)
	for _, e := range entries {
		out = binary.LittleEndian.AppendUint16(out, uint16(len(e.Key)))
		out = append(out, e.Key...)
		out = binary.LittleEndian.AppendUint32(out, uint32(len(e.Value)))
		out = append(out, e.Value...)
	}
	return out, nil
}

// DecodeMany reads kv_get_many's records (GetManyWithSize): one per key,
// in order, nil for an absent key (version 0). Values are slices of
// records. ErrInvalid if they are malformed.
func DecodeMany(records []byte) ([]*Entry, error) {
	var out []*Entry
	at := 0
	for at < len(records) {
		if len(records)-at < KvManyRecordHeader || len(out) >= MaxBatchEntries {
			return nil, ErrInvalid
		}
		version := binary.LittleEndian.Uint64(records[at:])
		n := uint64(binary.LittleEndian.Uint32(records[at+8:]))
		at += KvManyRecordHeader
		if uint64(len(records)-at) < n {
			return nil, ErrInvalid
		}
		if version == 0 {
			out = append(out, nil)
		} else {
			out = append(out, &Entry{Value: records[at : at+int(n)], Version: version})
		}
		at += int(n)
	}
	return out, nil
}

// GetManyWithSize is kv_get_many as the ABI has it: keys encoded by
// EncodeKeys, one record per key written into buf (DecodeMany reads
// them), their length returned; size gets their total, also on
// ErrBufferTooSmall (then it is the size of buffer to pass).
func (b Bucket) GetManyWithSize(encodedKeys, buf []byte, size *uint64) (int, error) {
	bl, err := inLen(len(b.name))
	if err != nil {
		return 0, err
	}
	kl, err := inLen(len(encodedKeys))
	if err != nil {
		return 0, ErrBadBatch
	}
	*size = 0
	rc := raw.KvGetMany(strPtr(b.name), bl, bytesPtr(encodedKeys), kl, b.flags, bytesPtr(buf), bufLen(buf), unsafe.Pointer(size))
	runtime.KeepAlive(b.name)
	runtime.KeepAlive(encodedKeys)
	runtime.KeepAlive(buf)
	return checkLen(rc, buf)
}

// GetManyInto reads the entries of the keys encoded by EncodeKeys (1 to
// MaxBatchEntries) from one state into buf: one per key, in order, nil for
// an absent key, values slices of buf. A *BufferTooSmallError says how
// large a buffer they need; ErrBadBatch; or as Get.
func (b Bucket) GetManyInto(encodedKeys, buf []byte) ([]*Entry, error) {
	var size uint64
	n, err := b.GetManyWithSize(encodedKeys, buf, &size)
	if err == ErrBufferTooSmall {
		return nil, &BufferTooSmallError{Need: int(min(size, maxInt32))}
	}
	if err != nil {
		return nil, err
	}
	return DecodeMany(buf[:n])
}

// manyBytesMax bounds the records of one batch: every key's header and
// MaxBatchBytes of values.
const manyBytesMax = MaxBatchEntries*KvManyRecordHeader + MaxBatchBytes

// GetMany reads the entries of keys (1 to MaxBatchEntries), all from one
// state, of any size: one per key, in order, nil for an absent key.
// Values are fresh copies.
func (b Bucket) GetMany(keys ...string) ([]*Entry, error) {
	encoded, err := EncodeKeys(keys...)
	if err != nil {
		return nil, err
	}
	scratchMu.Lock()
	defer scratchMu.Unlock()
	buf, shared := scratch[:], true
	// Values written meanwhile may grow it again: a few tries.
	for range 4 {
		var size uint64
		n, err := b.GetManyWithSize(encoded, buf, &size)
		if err == ErrBufferTooSmall {
			if size <= uint64(len(buf)) || size > manyBytesMax {
				return nil, ErrInvalid
			}
			buf, shared = make([]byte, size), false
			continue
		}
		if err != nil {
			return nil, err
		}
		records := buf[:n]
		if shared {
			records = clone(records)
		}
		entries, err := DecodeMany(records)
		if err != nil {
			return nil, err
		}
		if len(entries) != len(keys) {
			return nil, ErrInvalid
		}
		return entries, nil
	}
	return nil, ErrBufferTooSmall
}

func (b Bucket) writeMany(set bool, encoded []byte, lock *Lock) (int, error) {
	bl, err := inLen(len(b.name))
	if err != nil {
		return 0, err
	}
	el, err := inLen(len(encoded))
	if err != nil {
		return 0, ErrBadBatch
	}
	fence, err := lock.fence()
	if err != nil {
		return 0, err
	}
	var rc int32
	if set {
		rc = raw.KvSetMany(strPtr(b.name), bl, bytesPtr(encoded), el, unsafe.Pointer(fence))
	} else {
		rc = raw.KvDeleteMany(strPtr(b.name), bl, bytesPtr(encoded), el, unsafe.Pointer(fence))
	}
	runtime.KeepAlive(b.name)
	runtime.KeepAlive(encoded)
	runtime.KeepAlive(lock)
	return Check(rc)
}

// SetManyEncoded sets every entry encoded by EncodeEntries (1 to
// MaxBatchEntries, at most MaxBatchBytes) in one write, all or nothing (a
// key named twice: the last value wins); returns how many. lock, if not
// nil, fences the whole batch. ErrBadBatch, or as Set (one refusal
// refuses the whole batch).
func (b Bucket) SetManyEncoded(encodedEntries []byte, lock *Lock) (int, error) {
	return b.writeMany(true, encodedEntries, lock)
}

// SetMany is SetManyEncoded of entries.
func (b Bucket) SetMany(entries ...KeyValue) (int, error) {
	encoded, err := EncodeEntries(entries...)
	if err != nil {
		return 0, err
	}
	return b.writeMany(true, encoded, nil)
}

// SetManyFenced is SetMany fenced by lock.
func (b Bucket) SetManyFenced(lock Lock, entries ...KeyValue) (int, error) {
	encoded, err := EncodeEntries(entries...)
	if err != nil {
		return 0, err
	}
	return b.writeMany(true, encoded, &lock)
}

// DeleteManyEncoded deletes every key encoded by EncodeKeys in one write,
// all or nothing; returns how many existed. As SetManyEncoded.
func (b Bucket) DeleteManyEncoded(encodedKeys []byte, lock *Lock) (int, error) {
	return b.writeMany(false, encodedKeys, lock)
}

// DeleteMany is DeleteManyEncoded of keys.
func (b Bucket) DeleteMany(keys ...string) (int, error) {
	encoded, err := EncodeKeys(keys...)
	if err != nil {
		return 0, err
	}
	return b.writeMany(false, encoded, nil)
}

// DeleteManyFenced is DeleteMany fenced by lock.
func (b Bucket) DeleteManyFenced(lock Lock, keys ...string) (int, error) {
	encoded, err := EncodeKeys(keys...)
	if err != nil {
		return 0, err
	}
	return b.writeMany(false, encoded, &lock)
}
