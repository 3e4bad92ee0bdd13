// Package idempotency makes a request sent once or many times take effect once, below HTTP:
// it records the answer of the first request with an idempotency key and hands it back for
// repeats. The proxy wires it to a route (the Idempotency-Key header of the IETF draft "The
// Idempotency-Key HTTP Header Field", the 409/422/400 answers, Idempotent-Replayed: true,
// the metric edge_idempotency_total whose result label is Outcome.String).
//
// # Semantics
//
// A key lives in a scope: the user id, or the client IP when there is none (the caller
// decides), so one user never sees another's answer. A request is identified within its
// key by a Fingerprint (method, request URI, XXH64 of the body). For each request the
// caller calls Store.Begin, which answers in one atomic step:
//
//	Started     the key was free: the caller owns a claim now, forwards the request and
//	            calls Complete with the answer (2xx-4xx) or Abort (5xx, forwarding errors),
//	            so a client may retry after a failure
//	InProgress  a request with the same fingerprint holds the claim (409 in_progress; or
//	            Store.Wait waits, bounded, for its answer)
//	Reused      the key belongs to a request with another fingerprint (422 key_reused),
//	            whether in flight or completed
//	Replay      completed: Result.Record is the recorded answer; Record.WriteResponse
//	            replays it byte for byte
//
// A claim has a lease (Begin's argument, default DefaultLease): an edge that crashes
// between Begin and Complete blocks its key for at most the lease, after which the next
// request starts again. Choose a lease longer than the longest the origin may take: a
// claim whose lease ran out while its request is still running lets a repeat through to the
// origin a second time. Each claim carries a random 64-bit token, so a late Complete or
// Abort of an expired claim never touches the claim or record of its successor
// (ErrClaimLost, or nothing); a Complete that finds the key free still records, because the
// request did take effect. Records live for Complete's ttl (default DefaultTTL).
//
// # Records
//
// A Record is a compact binary encoding of status, headers and body (see Record). The
// caller picks the headers: AppendResponse takes a *fasthttp.Response, always drops
// hop-by-hop headers and Content-Length, and keeps the others the caller's function
// chooses; KeepDefault keeps every end-to-end header except Set-Cookie (a replay must not
// roll back a rotated session, and cookies would sit in a shared Redis for a day) and Date.
//
// # Stores
//
// Memory (the default, one node) and Redis (a fleet sharing one Redis or Redis Cluster)
// have identical semantics, checked by one conformance suite against memory, a real
// redis-server and a real three-master Redis Cluster. Memory is bounded by entries and
// bytes, evicts the oldest completed records first and never evicts a claim: full of
// claims, it refuses new ones with ErrFull (which matches ErrUnavailable). See Memory.
//
// # Redis key layout
//
// One key per (scope, key), a string:
//
//	idem:{<16 hex: XXH64 of len(scope), scope, key>}:<len(scope)>:<scope><key>
//
//	value  'p' fingerprint(16) token(8)          in flight; PTTL = the lease
//	       'c' fingerprint(16) token(8) record   completed; PTTL = the record's ttl
//
// The braces are the Redis Cluster hash tag, computed from scope and key, so whatever bytes
// a client puts in its key (braces included) every key of one (scope, key) is in one slot
// and the entries of one user spread over the cluster. Expiry is Redis's own (PX), so the
// clocks of the edges do not matter.
//
// # Scripts
//
// Each step is one Lua script (scripts/*.lua, embedded with go:embed; each documents its
// KEYS, ARGV and returns), run through rueidis Lua.Exec: EVALSHA with EVAL on NOSCRIPT, so
// a restart, failover or SCRIPT FLUSH costs one EVAL (Redis.Preload loads them ahead). The
// token is made in Go: scripts make no randomness.
//
//	begin.lua     GET; absent → SET 'p'… PX lease (started); other fingerprint → reused;
//	              'c' → the record (replay); else in progress
//	complete.lua  SET 'c'… PX ttl when the entry is this claim or is gone; same claim
//	              completed → no-op; another claim or record → claim lost
//	abort.lua     DEL only when the entry is exactly this claim in flight
//
// # Failures
//
// Every Redis call has a deadline (RedisOptions.Timeout, default 200ms, and the caller's
// ctx): when Redis is down, hung or slower, the call fails with an error wrapping
// ErrUnavailable and the caller fails closed (503) or open (forward without the guarantee)
// as the route says. rueidis reconnects by itself and does not retry scripts. A call that
// timed out may still run when Redis wakes up: a late Begin leaves a claim that ends with
// its lease; a late Complete records an answer the client may not have seen (a repeat gets
// it); a late Abort is conditional on its claim.
//
// A Redis restarted without persistence comes back empty: completed keys are forgotten and
// their repeats are forwarded again. Replication is asynchronous: when a primary fails over,
// the promoted replica may miss the last claims and records acknowledged to the edges, so a
// request in flight, or just completed, during a failover can be forwarded a second time.
// Memory entries are lost with the process, and evicted early when the store is full. The
// edge therefore removes almost all duplicates but is not the ledger: the origin's own
// dedupe (a unique constraint on the order's idempotency key or request id) is the final
// guard.
package idempotency
