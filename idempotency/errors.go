package idempotency

import (
	"errors"
	"fmt"
)

// Sentinel errors. Compare with errors.Is: stores wrap them with the operation and key.
var (
	// ErrUnavailable: the store cannot answer (Redis down, slow past the deadline, failing
	// over, or a memory store full of in-flight claims). The caller chooses: fail closed
	// (503) or fail open (forward without the guarantee).
	ErrUnavailable = errors.New("idempotency store unavailable")

	// ErrFull: a memory store has no room for a new entry because every slot it may evict is
	// an in-flight claim. Errors that match ErrFull match ErrUnavailable too.
	ErrFull = errors.New("idempotency store full of in-flight claims")

	// ErrClaimLost: Complete found the key owned by another claim or another record (the
	// claim's lease ran out and another request took the key). Nothing was stored.
	ErrClaimLost = errors.New("idempotency claim lost")

	// ErrTooLarge: Complete was given a record longer than the store's MaxRecordBytes. The
	// claim was released, so a repeat of the request is forwarded again.
	ErrTooLarge = errors.New("idempotency record too large")

	// ErrInvalid: an empty or over-long key, or an over-long scope. Nothing was stored.
	ErrInvalid = errors.New("invalid idempotency key")

	// ErrCorrupt: a Record does not parse.
	ErrCorrupt = errors.New("corrupt idempotency record")
)

// errFull is what a full memory store returns: built once, so the refusal does not allocate.
var errFull = fmt.Errorf("%w: %w", ErrFull, ErrUnavailable)
