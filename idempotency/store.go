package idempotency

import (
	"context"
	"fmt"
	"time"
)

// Store records the outcome of requests by idempotency key, so that a request sent many
// times takes effect once. Memory and Redis implement it with identical semantics, checked
// by one conformance suite. Implementations are safe for concurrent use by any number of
// goroutines and (for Redis) of edge nodes. A Store outlives config reloads: build it once
// per process.
//
// A key lives in a scope (the user id, or the client IP when there is none: the caller
// decides); a key of one scope never sees the entry of another. Scopes are 0..MaxScopeLen
// bytes, keys 1..MaxKeyLen bytes, any bytes. The memory store keeps the scope and key
// strings it is given (as map keys): never pass a string that aliases a reused buffer
// (an unsafe conversion of fasthttp's request bytes); string(b) is right.
//
// The life of a key: Begin claims it (Started) → the caller forwards the request → Complete
// records the answer for ttl (later Begins get Replay), or Abort releases the claim (later
// Begins start again). A claim that is neither completed nor aborted expires after its
// lease, so a crashed edge blocks a key for at most the lease.
type Store interface {
	// Begin claims (scope, key) for a request with fingerprint fp, for at most lease (zero:
	// DefaultLease). Result.Outcome is Started (the caller owns the claim in Result.Claim and
	// must Complete or Abort it), InProgress (another claim with the same fingerprint is
	// running), Reused (the key holds a claim or record of a different fingerprint) or
	// Replay (Result.Record is the recorded answer). The lease should outlast the longest
	// time the origin may take (upstream timeout times tries): a claim whose lease ran out is
	// taken by the next request, which is then forwarded a second time.
	Begin(ctx context.Context, scope, key string, fp Fingerprint, lease time.Duration) (Result, error)

	// Wait is Begin for a route that waits instead of answering InProgress: while the key is
	// in flight with the same fingerprint it waits, up to maxWait, for the claim to complete
	// (Replay), be aborted or expire (the caller then owns a new claim: Started), and returns
	// InProgress with a nil error when maxWait passes. When ctx ends first it returns
	// InProgress and an error wrapping ctx.Err().
	Wait(ctx context.Context, scope, key string, fp Fingerprint, lease, maxWait time.Duration) (Result, error)

	// Complete records rec as the answer of claim c for ttl (zero: DefaultTTL). The store
	// keeps its own copy of rec. It also records when the lease ran out and the key is free,
	// since the request did take effect. It fails with ErrClaimLost when another claim or
	// record holds the key, and with ErrTooLarge (after releasing the claim) when rec is
	// longer than the store's MaxRecordBytes. Completing the same claim twice is a no-op.
	// When it fails with ErrUnavailable nothing may have been recorded: the claim then ends
	// with its lease, and a repeat after that is forwarded again.
	Complete(ctx context.Context, c Claim, rec Record, ttl time.Duration) error

	// Abort releases claim c without recording, so the next Begin starts again (used for 5xx
	// answers and forwarding errors). It only removes the in-flight claim c itself: an
	// expired claim since taken by another request, or a record, is left alone.
	Abort(ctx context.Context, c Claim) error
}

// Outcome is what Begin found.
type Outcome uint8

// Begin outcomes.
const (
	// Started: the caller owns the key now (Result.Claim).
	Started Outcome = iota + 1
	// InProgress: another request with the same key and fingerprint is running.
	InProgress
	// Reused: the key belongs to a request with a different fingerprint.
	Reused
	// Replay: the request completed; Result.Record is its recorded answer.
	Replay
)

// String names the outcome as the result label of edge_idempotency_total does.
func (o Outcome) String() string {
	switch o {
	case Started:
		return "first"
	case InProgress:
		return "in_progress"
	case Reused:
		return "reused"
	case Replay:
		return "replayed"
	default:
		return "none"
	}
}

// Result is the answer of Begin and Wait.
type Result struct {
	Outcome Outcome
	// Claim identifies the caller's claim when Outcome is Started; pass it to Complete or
	// Abort.
	Claim Claim
	// Record is the recorded answer when Outcome is Replay. It is read-only: the memory
	// store shares it between callers.
	Record Record
}

// Claim identifies one ownership of a key, from Begin to Complete or Abort. Token tells two
// claims of the same key apart (after a lease ran out), so a late Complete or Abort of an
// expired claim never touches its successor.
type Claim struct {
	Scope, Key  string
	Fingerprint Fingerprint
	Token       uint64
}

// Limits and defaults shared by the stores.
const (
	// MaxKeyLen is the longest idempotency key a store accepts.
	MaxKeyLen = 255
	// MaxScopeLen is the longest scope a store accepts.
	MaxScopeLen = 255
	// DefaultLease is the lease of a claim when Begin is given zero.
	DefaultLease = time.Minute
	// DefaultTTL is how long a record is kept when Complete is given zero.
	DefaultTTL = 24 * time.Hour
	// DefaultMaxRecordBytes is the longest record a store keeps by default.
	DefaultMaxRecordBytes = 1 << 20
)

// checkKey validates scope and key; the error names them (rare path, allocation is fine).
func checkKey(scope, key string) error {
	if len(key) == 0 || len(key) > MaxKeyLen || len(scope) > MaxScopeLen {
		return fmt.Errorf("key %q of scope %q (key 1..%d bytes, scope up to %d): %w",
			trim(key), trim(scope), MaxKeyLen, MaxScopeLen, ErrInvalid)
	}
	return nil
}

// trim shortens a user-supplied string for an error message.
func trim(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func leaseOrDefault(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultLease
	}
	return d
}

func ttlOrDefault(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultTTL
	}
	return d
}
