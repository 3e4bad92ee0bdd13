// Package cache is edge's local response cache: a byte-bounded store on
// VictoriaMetrics/fastcache, a versioned binary entry format, RFC 9111 freshness rules for a
// shared cache, Vary, O(1) purge by route, tag and URL, coalescing of concurrent misses and
// one background refresh per key. It imports no edge package; the proxy wires it in.
//
// # Request flow (what the wiring does)
//
//	if rule.CheckRequest(&req.Header) != nil → forward, X-Cache: BYPASS
//	key = AppendKey(buf[:0], method, host, uri) (+ AppendKeyPart per key expression)
//	switch c.Lookup(e, key, &req.Header, now) {
//	case Hit:        e.WriteTo(resp, now)                                  X-Cache: HIT
//	case Stale:      e.WriteTo(resp, now); if c.TryStartRefresh(kh, now) { go refresh } STALE
//	case Revalidate: e.PrepareRevalidation(copy); fetch; 304 → c.Renew(e, …); e.WriteTo
//	case Miss:       t := c.Acquire(kh, now); leader: fetch, c.Store, t.Done();
//	                 follower: t.Wait(d), Lookup again, else fetch uncached
//	}
//	StripSurrogate(&resp.Header) on every origin answer before it reaches the client.
//
// Read ep := c.Epoch() before each origin fetch and pass it to Store/Renew, so a purge
// that lands while the fetch is in flight also discards its result. kh is KeyHash(key).
//
// # Storage
//
// Each key has one small record stored with fastcache.Set (always under 64 KiB). A body
// that does not fit in the record is stored with SetBig under its own data key (kind byte,
// key hash, nonce) and the record points to it; the two APIs never touch the same key,
// since Get on a SetBig key yields a stub. A 304 renewal rewrites only the record and
// keeps pointing to the stored body. The full key is kept in the record and compared on
// lookup, so hash collisions are misses, not wrong answers. Bodies above max_entry are
// refused (ErrTooLarge). Memory is bounded by fastcache (cache_size, minimum 32 MiB);
// eviction is fastcache's: the oldest 64 KiB chunk of a bucket goes first (FIFO-like).
// SetBig cuts a body into parts that each fill a whole chunk; at the 32 MiB minimum each of
// the 512 buckets is a single chunk, so the next write to a bucket evicts a part and big
// bodies rarely survive. Give big bodies room: the default 256MB has 8 chunks per bucket.
// A big entry with a missing part is a Miss (GetBig checks length and hash).
//
// # Vary
//
// A response with Vary is stored under a secondary key that hashes the primary key with
// the request's values of the varied headers; the primary key then holds a small record
// listing the header names. Lookup reads that list, hashes the current request's values and
// reads the variant, which also stores the values and is compared byte for byte: a request
// whose values differ is a Miss. Values are compared as sent (trimmed of spaces), without
// normalisation, so "gzip, br" and "br, gzip" are two variants. Vary: * is not cached.
//
// # Purge
//
// Purges are O(1) and never scan. A global epoch counts purges; every entry records the
// epoch at which its fetch started (Cache.Epoch). Route names, URL paths, URIs and
// Surrogate-Key tags hash into 65536 shared slots that hold the epoch of the last purge
// that touched them; an entry is a Miss when a slot of its route, path, URI or any of its
// tags is newer than its epoch. A slot collision can only invalidate an extra entry, never
// revive one, and the table's memory is fixed (512 KiB). PurgeKey deletes one key exactly.
//
// # RFC 9111, and where edge deliberately differs
//
// Followed: only statuses listed by the rule (default 200, 203, 301, 404) are stored, and
// those outside RFC 9110's heuristically cacheable list only with explicit freshness;
// no-store and private forbid storing (§5.2.2.5, §5.2.2.7); freshness is s-maxage, else
// max-age, else Expires minus Date (§4.2.1), an Expires that is not an HTTP-date in GMT
// (or sent on several lines) meaning already expired; an Age that is not one
// non-negative integer makes the response stale, a valid one is subtracted from its
// lifetime; no-cache (§5.2.2.4) stores but revalidates before every use; must-revalidate
// and proxy-revalidate disable serving stale; Vary (§4.1) on all its lines; a 304 updates
// the stored headers and freshness and keeps the body (§4.3.4), and a 304 naming another
// ETag does not; hop-by-hop headers are not stored. Targeted fields (RFC 9213, Rule.Targeted)
// replace Cache-Control, Expires and Surrogate-Control when present. Without a route stale
// window, stale-while-revalidate and stale-if-error (RFC 5861) set the entry's windows
// (Entry.State, Entry.ServesOnError). InvalidateURI serves §4.4 (the proxy calls it).
//
// Deliberate differences, for a gateway in front of flash-sale origins:
//   - Request Cache-Control and Pragma are ignored: a client's no-cache or max-age=0 (every
//     browser reload) does not bypass or revalidate the shared entry, or a crowd pressing F5
//     would reach the origin. Client conditionals are answered from the entry (NotModified).
//   - Requests with Authorization or Cookie bypass the cache unless the route allows them
//     (RFC 9111 §3.5 would store some Authorization responses marked public/s-maxage).
//   - Responses with Set-Cookie are never stored; qualified private="f" and no-cache="f"
//     count as the unqualified directives (stricter than §5.2.2.4 and §5.2.2.7).
//   - Without explicit freshness the route's ttl is the heuristic freshness (for the
//     heuristically cacheable statuses only); with no ttl and no validator the response is
//     not stored.
//   - A route's stale setting overrides stale-while-revalidate and stale-if-error;
//     s-maxage's implied proxy-revalidate (§5.2.2.10) is not applied, only explicit
//     must-revalidate/proxy-revalidate are.
//   - Surrogate-Control (max-age, no-store) from the origin takes precedence over
//     Cache-Control, as CDNs do, and is stripped together with Surrogate-Key.
//   - Age is the received Age header plus residence time; apparent age from the origin's
//     Date is not used (clock skew). The origin's Date is stored (or the time of the store
//     when it sent none, RFC 9110 §6.6.1; a renewal stores the 304's) and every hit sends
//     it unchanged: Entry.WriteTo parses the stored head into a header held by
//     keepdate, the one way fasthttp writes a Date other than its clock's.
//   - Responses are stored only from GET; HEAD is answered from the GET entry.
package cache
