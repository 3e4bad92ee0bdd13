// Package seckill issues and checks flash-sale ("seckill") tokens: the two-phase sale of
// SPEC.md. First a buyer asks for a token (POST /seckill/{item}/token) and one atomic store
// step checks the sale, returns the token the buyer already holds or takes one unit of stock
// and records the buyer; then only token holders may order, and the edge checks the token
// (locally, by its signature) and consumes it once in the store before the order goes on.
//
// # Parts
//
//   - Signer (token.go) makes and verifies tokens: HMAC-SHA256 with a secret of at least 32
//     bytes over item, user, expiry and a crypto/rand nonce, 52 URL-safe characters.
//     Verification needs no store and does not allocate.
//   - Store is the state of the sales, with two implementations of identical semantics,
//     checked by one conformance suite: Redis (a fleet of edge nodes sharing one Redis or
//     Redis Cluster) and Memory (the embedded default of a single node).
//   - Gate is what the HTTP layer calls. It sheds load before the store: a local sold-out
//     flag per item answers ErrSoldOut without a store call, and concurrent Issue calls for
//     one item are coalesced into one script call (while a call for the item is in flight,
//     new requests queue and leave together, up to GateOptions.BatchMax; nothing waits when
//     the item is idle). Status maps every error to the HTTP answer.
//
// # Redis key layout
//
// Every key of an item carries the hash tag {item}, so all of them live in one slot and one
// script may touch them on a Redis Cluster. Item names are 1..128 bytes without braces.
//
//	sk:{item}:stock    string  units left; the key's existence is "the sale exists"
//	sk:{item}:holders  hash    user -> "<state>:<expiry ms>:<token>", state 0 unused, 1 ordered
//	sk:{item}:expiry   zset    user -> expiry ms, for unused tokens only
//
// Invariant: stock + HLEN holders = the stock last set. No key has a TTL; SetStock replaces
// all three, and the memory a sale takes is bounded by its stock.
//
// # Scripts
//
// Each mutation is one Lua script (scripts/*.lua, embedded with go:embed; each file documents
// its KEYS, ARGV and return codes). Every key is passed in KEYS, none is built inside a
// script. Scripts run through rueidis Lua.Exec: EVALSHA, falling back to EVAL on NOSCRIPT, so
// a restart, failover or SCRIPT FLUSH costs one EVAL; NewRedis also loads them on every node.
// Tokens and the clock come from Go (ARGV): scripts make no randomness.
//
//	issue.lua     a batch of users: sale exists? holder -> same token (an expired unused one
//	              returns its unit and the user buys again); stock > 0 -> decrement, record
//	setstock.lua  start a sale: replace the stock, drop holders and expiries
//	item.lua      stock and holder count in one consistent read
//	consume.lua   mark the holder's token used, once (ErrUsed after), only for that token
//	release.lua   return an unused holder's unit, once, conditional on the record it deletes
//	reclaim.lua   return units of tokens expired unused, at most N per call; each holder is
//	              deleted in the step that returns its unit, so racing reclaimers on several
//	              nodes never return a unit twice
//
// # Failures
//
// Every Redis call has a deadline (RedisOptions.Timeout, default 200ms); past it, or when
// Redis is down, the call fails with ErrUnavailable (503 store_unavailable with Retry-After
// at the edge): never a hang, never a 500. rueidis reconnects by itself, so service resumes
// when Redis returns. rueidis does not retry scripts. A call that timed out may still run
// when Redis wakes up: Issue is idempotent per user (asking again returns the same token)
// and Release is conditional, so retries are harmless; a late SetStock restarts the sale.
//
// A Redis restarted without persistence comes back empty: sales answer ErrNoSale until they
// are stocked again, they are never oversold. With AOF everysec the last second of writes may
// be lost on a crash, with the consequences below.
//
// Replication is asynchronous. When a primary fails over, the replica it promotes may miss
// the last writes acknowledged to the edge: decrements (the units come back, so more tokens
// than stock can be issued in total), holder records (that buyer's orders then fail with
// ErrNotHolder, and asking again issues a new token) and consumptions (a used token can be
// used once more). The store therefore limits traffic but is not the ledger: the order
// database is the final guard, and must itself enforce one order per user and item and a
// stock that never goes below zero (a unique key and a conditional update in the order's
// transaction). WAIT after each script would narrow the window at the cost of a replica round
// trip per call; it is not done here.
//
// # Several edge nodes
//
// Any number of nodes may share one Redis: every decision is made inside a script. The local
// sold-out flag is per node; SetStock, Release and Reclaim clear it on the node that ran them,
// Gate.ClearSoldOut clears it on others (e.g. from cluster gossip), and otherwise one request
// per GateOptions.SoldOutRecheck (default 1s) asks the store again. Reclaim covers the items
// this node has seen; every node that issued for an item has seen it.
package seckill
