package tlsstore

import (
	"crypto/tls"
	"fmt"
	"slices"
)

// ParseVersion maps the min_version of a tls block to a crypto/tls version:
// "1.2" to tls.VersionTLS12 and "1.3" to tls.VersionTLS13. Anything else is
// an error naming the allowed values; older versions are not offered at all.
func ParseVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unknown TLS version %q: want \"1.2\" or \"1.3\"", s)
}

// cipherSuites is the TLS 1.2 list: ECDHE only (forward secrecy) and AEAD
// only (no CBC). Go's default list still has the ECDHE CBC-SHA1 suites, hence
// the explicit list. The order does not matter: crypto/tls orders suites
// itself (AES-GCM first where the CPU has AES instructions, else ChaCha20).
// TLS 1.3 suites are not configurable and all are fine.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerConfig returns a new *tls.Config for one listener: certificates from
// store (so a Store.Swap reaches it without a new config), minVersion (from
// ParseVersion; zero means crypto/tls's server default, TLS 1.2), ALPN
// protocols nextProtos in order of preference (copied), the TLS 1.2 cipher
// suites above, and session tickets on.
//
// Curve preferences are left to crypto/tls: in Go 1.26 that is
// X25519MLKEM768, SecP256r1MLKEM768, SecP384r1MLKEM1024, X25519, P-256,
// P-384, P-521, and it follows Go releases (and GODEBUG tlsmlkem,
// tlssecpmlkem) without an edge change.
//
// Session-ticket keys are crypto/tls's own (rotated daily) unless a Tickets
// manages them. When the returned config is served through the
// GetConfigForClient of a long-lived base config registered with Tickets, do
// not register the returned one (and do not derive it with Clone from a
// registered config, which copies the keys): crypto/tls uses the base
// config's keys when the returned config has none set.
func ServerConfig(store *Store, minVersion uint16, nextProtos []string) *tls.Config {
	return &tls.Config{
		GetCertificate: store.GetCertificate,
		MinVersion:     minVersion,
		NextProtos:     slices.Clone(nextProtos),
		CipherSuites:   slices.Clone(cipherSuites),
	}
}
