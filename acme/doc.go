// Package acme obtains and renews certificates automatically (ACME, RFC 8555) for edge's
// TLS listeners, alone or as a cluster of nodes sharing one Redis.
//
// It is built on github.com/caddyserver/certmagic, the reference implementation in this
// field; golang.org/x/acme/autocert was not chosen because it has no cluster-wide lock (every
// node of a fleet would order its own certificate and hit the CA's rate limits), no DNS-01,
// no renewal information (ARI) and no pluggable storage beyond a key/value cache.
//
// A Manager manages one certificate per name in Options.Domains (certmagic's model, as in
// Caddy: a failure to validate one name never blocks the others). It answers the two
// challenges a gateway can answer itself:
//
//   - HTTP-01: edge's plain listeners call HTTPChallenge for GET
//     /.well-known/acme-challenge/<token> (also when they redirect everything else to
//     HTTPS);
//   - TLS-ALPN-01: a TLS listener whose tls.Config.GetCertificate is Manager.GetCertificate
//     and whose NextProtos include ALPNProto.
//
// State (certificates, private keys, the ACME account, challenge tokens, locks) lives in a
// directory (Options.StateDir: files 0600, directories 0700) or in Redis (Options.Redis, see
// RedisStorage). With Redis every node serves what any node obtained, one node orders while
// the others wait on the lock and then load the result, and any node can answer a challenge
// another node started (its token is in Redis).
//
// Start never blocks serving and never fails because the CA is unreachable: it first loads
// what storage holds (a node that starts while a certificate is stored serves it at once),
// then obtains what is missing in the background, retrying with exponential backoff
// (Options.RetryMax) until it succeeds. Renewal is certmagic's: a check every
// Options.RenewCheckInterval renews certificates inside their renewal window (ARI when the CA
// offers it, else Options.RenewWindow); a failed renewal keeps serving the current
// certificate and is retried.
//
// OCSP: certmagic staples an OCSP response when the certificate names a responder. A
// responder that is down, slow or answers garbage only costs the staple: the handshake goes
// on without one (certmagic logs a warning, except for certificates living under 7 days).
// Fetches never happen during a handshake: a stored or new certificate is served before its
// first staple, which certmagic's maintenance fetches within its OCSP check interval (1 h)
// and renewals fetch before swapping; each fetch is bounded at 30 s. Must-Staple is not
// requested. (Let's Encrypt no longer runs OCSP; other CAs do.)
package acme
