package seckill

import "errors"

// Business outcomes. They are sentinels: compare with errors.Is, since store errors wrap
// them with the item that failed. Status maps them to the HTTP answer of SPEC.md.
var (
	// ErrNoSale: the item was never stocked (or its sale was lost with a non-persistent Redis
	// restart).
	ErrNoSale = errors.New("seckill: no sale for item")
	// ErrSoldOut: the sale exists and its stock is 0.
	ErrSoldOut = errors.New("seckill: sold out")
	// ErrUsed: the token was already consumed by an order.
	ErrUsed = errors.New("seckill: token already used")
	// ErrNotHolder: the store records no such token for this user and item (never issued,
	// released, reclaimed after expiry, replaced by a newer token, or the sale was restarted).
	ErrNotHolder = errors.New("seckill: not a token holder")
	// ErrUnavailable: the store did not answer within its timeout or failed. Every store
	// error that is not a business outcome wraps it.
	ErrUnavailable = errors.New("seckill: store unavailable")
	// ErrInvalid: an empty or too long item or user, an item containing '{' or '}', or a
	// negative stock.
	ErrInvalid = errors.New("seckill: invalid item, user or stock")

	// ErrForged: the token is malformed or its signature does not match.
	ErrForged = errors.New("seckill: forged token")
	// ErrExpired: the token is authentic but past its expiry.
	ErrExpired = errors.New("seckill: expired token")
	// ErrOtherUser: the token names another user (diagnostic: see Signer.Verify).
	ErrOtherUser = errors.New("seckill: token of another user")
	// ErrOtherItem: the token names another item (diagnostic: see Signer.Verify).
	ErrOtherItem = errors.New("seckill: token of another item")
)

// Status maps an error of this package to the HTTP status and the JSON error code of
// SPEC.md: 410 sold_out, 404 no_sale, 409 token_used, 403 invalid_token (forged, expired,
// other user, other item, not a holder), 400 invalid_request, 503 store_unavailable. A nil
// error is 200 with an empty code; an unknown error is 503 store_unavailable, so a store
// failure can never become a 500. It does not allocate.
func Status(err error) (status int, code string) {
	switch {
	case err == nil:
		return 200, ""
	case errors.Is(err, ErrSoldOut):
		return 410, "sold_out"
	case errors.Is(err, ErrNoSale):
		return 404, "no_sale"
	case errors.Is(err, ErrUsed):
		return 409, "token_used"
	case errors.Is(err, ErrForged), errors.Is(err, ErrExpired), errors.Is(err, ErrOtherUser),
		errors.Is(err, ErrOtherItem), errors.Is(err, ErrNotHolder):
		return 403, "invalid_token"
	case errors.Is(err, ErrInvalid):
		return 400, "invalid_request"
	default:
		return 503, "store_unavailable"
	}
}
