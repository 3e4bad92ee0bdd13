package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire format. Every user message memberlist carries for this package starts with
// a type byte, so later versions can add types that older nodes count as invalid
// and ignore.
//
//	entry: 0x01 | version u64 BE | expires uvarint (unix ms, 0 never) | flags u8 |
//	       origin | kind | key | value        (each: uvarint length + bytes)
//	state: 0x02 | count uvarint | count × (uvarint length + entry)
const (
	msgEntry byte = 1
	msgState byte = 2

	flagDeleted byte = 1
)

// Size limits of one entry. MaxMessageSize keeps an encoded entry inside one UDP
// packet: memberlist's 1400-byte UDPBufferSize minus the compound header (2),
// per-message overhead (3), CRC (5), encryption (29) and some room for a label.
const (
	// MaxMessageSize is the largest encoded entry (kind, key, value, origin and
	// 20 bytes of header) Publish accepts.
	MaxMessageSize = 1200
	// MaxKindLen is the longest kind name.
	MaxKindLen = 64
	// MaxKeyLen is the longest key.
	MaxKeyLen = 512
)

var errShort = errors.New("truncated")

// entry is one versioned key/value pair of a kind, or its tombstone.
type entry struct {
	kind, key, origin string
	value             []byte
	version           uint64
	expires           int64 // unix milliseconds; 0: never
	deleted           bool
}

// newer reports whether e wins over o under last-writer-wins: higher version,
// then higher origin name, so every node picks the same winner.
func (e *entry) newer(o *entry) bool {
	if e.version != o.version {
		return e.version > o.version
	}
	return e.origin > o.origin
}

func (e *entry) expired(nowMS int64) bool {
	return e.expires != 0 && e.expires <= nowMS
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// appendEntry appends the encoding of e to dst.
func appendEntry(dst []byte, e *entry) []byte {
	dst = append(dst, msgEntry)
	dst = binary.BigEndian.AppendUint64(dst, e.version)
	dst = binary.AppendUvarint(dst, uint64(e.expires))
	var flags byte
	if e.deleted {
		flags |= flagDeleted
	}
	dst = append(dst, flags)
	dst = appendString(dst, e.origin)
	dst = appendString(dst, e.kind)
	dst = appendString(dst, e.key)
	return appendBytes(dst, e.value)
}

// reader decodes the wire format; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(limit int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) || n > uint64(limit) {
		r.err = fmt.Errorf("field of %d bytes exceeds %d", n, min(len(r.b), limit))
		return nil
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b
}

// decodeEntry decodes one entry that fills all of b. Strings and the value are
// copied, so the result does not alias b.
func decodeEntry(b []byte) (entry, error) {
	var e entry
	if len(b) < 1+8 || b[0] != msgEntry {
		return e, errors.New("cannot decode cluster entry: not an entry message")
	}
	e.version = binary.BigEndian.Uint64(b[1:9])
	r := reader{b: b[9:]}
	exp := r.uvarint()
	if r.err == nil && len(r.b) == 0 {
		r.err = errShort
	}
	if r.err == nil {
		e.deleted = r.b[0]&flagDeleted != 0
		r.b = r.b[1:]
	}
	origin := r.bytes(MaxMessageSize)
	kind := r.bytes(MaxKindLen)
	key := r.bytes(MaxKeyLen)
	value := r.bytes(MaxMessageSize)
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err == nil && (len(kind) == 0 || len(key) == 0 || exp > 1<<62) {
		r.err = errors.New("empty kind or key, or bad expiry")
	}
	if r.err != nil {
		return entry{}, fmt.Errorf("cannot decode cluster entry: %w", r.err)
	}
	e.expires = int64(exp)
	e.origin, e.kind, e.key = string(origin), string(kind), string(key)
	if !e.deleted {
		e.value = append([]byte{}, value...)
	}
	return e, nil
}

// decodeState calls fn for each entry of a push/pull state. It stops at the
// first malformed entry and returns its error; entries before it were delivered.
func decodeState(b []byte, fn func(entry)) error {
	if len(b) == 0 || b[0] != msgState {
		return errors.New("cannot decode cluster state: not a state message")
	}
	r := reader{b: b[1:]}
	n := r.uvarint()
	for i := uint64(0); i < n && r.err == nil; i++ {
		eb := r.bytes(MaxMessageSize)
		if r.err != nil {
			break
		}
		e, err := decodeEntry(eb)
		if err != nil {
			return fmt.Errorf("cannot decode cluster state entry %d: %w", i, err)
		}
		fn(e)
	}
	if r.err != nil {
		return fmt.Errorf("cannot decode cluster state: %w", r.err)
	}
	return nil
}
