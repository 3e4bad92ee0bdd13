package seckill

import (
	"context"
	"strings"
	"time"
)

// Store keeps the state of flash sales: the stock of each item, who holds a token, and which
// tokens were used. Memory and Redis implement it with identical semantics, checked by one
// conformance suite. Implementations are safe for concurrent use by any number of
// goroutines and (for Redis) of edge nodes. Every error that is not a business outcome wraps
// ErrUnavailable. A Store outlives config reloads: build it once per process.
type Store interface {
	// SetStock starts (or restarts) the sale of item with stock units: it replaces the stock
	// and forgets every earlier holder and used token.
	SetStock(ctx context.Context, item string, stock int64) error

	// Issue runs one atomic step per ticket, in order, for the users of batch (a user may
	// appear twice; the second is a repeat): a user who holds a live token gets it back
	// (Result Repeat, Token and Expires replaced by the held ones); otherwise, if stock is
	// left, one unit is taken and the user is recorded with the ticket's Token and Expires
	// (Result Issued); otherwise Result is SoldOut. A held token that expired unused by now
	// returns its unit first, and the user buys again. The whole batch fails with ErrNoSale
	// when the item has no sale, with ErrUnavailable when the store fails (some tickets may
	// then have been applied: retrying is safe because Issue is idempotent per user).
	Issue(ctx context.Context, item string, now time.Time, batch []Ticket) error

	// Item reports the remaining stock and the number of units held (issued and not
	// returned), or ErrNoSale. Stock + Issued is the stock last set.
	Item(ctx context.Context, item string) (Stock, error)

	// Consume marks the user's token used for an order: ErrUsed when it already was,
	// ErrNotHolder when the store does not hold exactly this token for this user. It does
	// not check expiry: verify the token first (Signer.Verify).
	Consume(ctx context.Context, item, user, token string) error

	// Release returns the unit of a holder who has not ordered to stock and forgets the
	// holder. It reports true the first time and false afterwards, or for a user who holds
	// nothing or already ordered.
	Release(ctx context.Context, item, user string) (bool, error)

	// Reclaim returns to stock the units of at most max tokens that expired unused by now,
	// and reports how many it returned. Several nodes may run it at once: each unit comes
	// back exactly once. Call again while it returns max.
	Reclaim(ctx context.Context, item string, now time.Time, max int) (int, error)

	// Close releases connections. The Store must not be used afterwards.
	Close()
}

// Result is the outcome of one Ticket.
type Result uint8

// Ticket outcomes.
const (
	// Pending: the ticket was not processed (the batch failed).
	Pending Result = iota
	// Issued: a unit was taken and the ticket's token recorded.
	Issued
	// Repeat: the user already held a token; Token and Expires now hold it.
	Repeat
	// SoldOut: no unit was left.
	SoldOut
)

// String names the result as the edge_seckill_requests_total label does.
func (r Result) String() string {
	switch r {
	case Issued:
		return "issued"
	case Repeat:
		return "repeat"
	case SoldOut:
		return "sold_out"
	default:
		return "pending"
	}
}

// Ticket is one user's request in an Issue batch. The caller fills User, Token and Expires;
// the store sets Result and, on Repeat, replaces Token and Expires.
type Ticket struct {
	User    string
	Token   string
	Expires time.Time // kept with millisecond precision
	Result  Result
}

// Stock is the state of one sale as Store.Item reports it.
type Stock struct {
	Stock  int64 // units left
	Issued int64 // units held by users (issued and not returned)
}

// Limits on names, so keys stay small and hash tags intact.
const (
	// MaxItemLen is the longest item name a store accepts.
	MaxItemLen = 128
	// MaxUserLen is the longest user name a store accepts.
	MaxUserLen = 256
)

// validItem reports whether item can name a sale: 1..MaxItemLen bytes without braces, so
// that "{item}" is the Redis Cluster hash tag of every key of the item.
func validItem(item string) bool {
	return len(item) > 0 && len(item) <= MaxItemLen && !strings.ContainsAny(item, "{}")
}

// validUser reports whether user can hold a token.
func validUser(user string) bool {
	return len(user) > 0 && len(user) <= MaxUserLen
}
