package tlsstore

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"

	"github.com/edge-gw/edge/internal/testcert"
)

func TestParseVersion(t *testing.T) {
	f := func(in string, want uint16) {
		t.Helper()
		got, err := ParseVersion(in)
		if want == 0 {
			if err == nil || !strings.Contains(err.Error(), `want "1.2" or "1.3"`) || !strings.Contains(err.Error(), `"`+in+`"`) {
				t.Errorf("ParseVersion(%q): got %v, %v; want an error naming the value and the allowed ones", in, got, err)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	f("1.2", tls.VersionTLS12)
	f("1.3", tls.VersionTLS13)
	f("1.1", 0)
	f("1.0", 0)
	f("", 0)
	f("TLS1.2", 0)
	f(" 1.2", 0)
}

// TestVersionsAndSuites runs handshakes against ServerConfig with each
// min_version and checks which clients it refuses.
func TestVersionsAndSuites(t *testing.T) {
	ca := testcert.NewCA(t)
	certs := mustLoad(t,
		ca.Leaf(t, testcert.Opts{Names: []string{"v.test"}}),
		ca.Leaf(t, testcert.Opts{Names: []string{"v.test"}, Key: testcert.RSA}),
	)
	store := NewStore(certs)
	min12 := serve(t, ServerConfig(store, tls.VersionTLS12, nil))
	min13 := serve(t, ServerConfig(store, tls.VersionTLS13, nil))
	// Control: crypto/tls defaults with the same certificates.
	goDefault := serve(t, &tls.Config{GetCertificate: store.GetCertificate})

	client := func(min, max uint16, suites ...uint16) *tls.Config {
		return &tls.Config{ServerName: "v.test", RootCAs: ca.Pool, MinVersion: min, MaxVersion: max, CipherSuites: suites}
	}
	cbc := []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	}
	// f checks the handshake: wantVersion 0 means refused with an error
	// containing wantErr.
	f := func(name, addr string, cfg *tls.Config, wantVersion uint16, wantErr string) {
		t.Helper()
		st, err := handshake(t, addr, cfg)
		switch {
		case wantVersion == 0 && err == nil:
			t.Errorf("%s: handshake succeeded with %s, want it refused", name, tls.VersionName(st.Version))
		case wantVersion == 0 && !strings.Contains(err.Error(), wantErr):
			t.Errorf("%s: got error %q, want %q", name, err, wantErr)
		case wantVersion != 0 && err != nil:
			t.Errorf("%s: %v", name, err)
		case wantVersion != 0 && st.Version != wantVersion:
			t.Errorf("%s: got %s, want %s", name, tls.VersionName(st.Version), tls.VersionName(wantVersion))
		}
	}
	f("1.2: TLS 1.1 client", min12, client(tls.VersionTLS10, tls.VersionTLS11), 0, "protocol version not supported")
	f("1.2: TLS 1.2 client", min12, client(0, tls.VersionTLS12), tls.VersionTLS12, "")
	f("1.2: default client", min12, client(0, 0), tls.VersionTLS13, "")
	f("1.3: TLS 1.2 client", min13, client(0, tls.VersionTLS12), 0, "protocol version not supported")
	f("1.3: default client", min13, client(0, 0), tls.VersionTLS13, "")
	f("1.2: CBC-only client", min12, client(0, tls.VersionTLS12, cbc...), 0, "handshake failure")
	f("Go default: CBC-only client", goDefault, client(0, tls.VersionTLS12, cbc...), tls.VersionTLS12, "")
	for _, s := range []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384} {
		f("1.2: "+tls.CipherSuiteName(s), min12, client(0, tls.VersionTLS12, s), tls.VersionTLS12, "")
	}
}

func TestCipherSuites(t *testing.T) {
	cfg := ServerConfig(NewStore(&Certs{}), tls.VersionTLS12, nil)
	secure := map[uint16]bool{}
	for _, s := range tls.CipherSuites() {
		secure[s.ID] = true
	}
	var ecdsa, rsa bool
	for _, id := range cfg.CipherSuites {
		name := tls.CipherSuiteName(id)
		aead := strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")
		if !secure[id] || !strings.HasPrefix(name, "TLS_ECDHE_") || !aead || strings.Contains(name, "CBC") {
			t.Errorf("suite %s: want ECDHE with AES-GCM or ChaCha20-Poly1305 only", name)
		}
		ecdsa = ecdsa || strings.HasPrefix(name, "TLS_ECDHE_ECDSA_")
		rsa = rsa || strings.HasPrefix(name, "TLS_ECDHE_RSA_")
	}
	if !ecdsa || !rsa || len(cfg.CipherSuites) != 6 {
		t.Errorf("suites %v: want the 6 ECDHE AEAD suites, ECDSA and RSA", cfg.CipherSuites)
	}
	if cfg.CurvePreferences != nil || cfg.SessionTicketsDisabled {
		t.Errorf("CurvePreferences %v, SessionTicketsDisabled %v: want Go's curves and tickets on", cfg.CurvePreferences, cfg.SessionTicketsDisabled)
	}
}

// TestALPNAndCurves checks the ALPN order and that the key exchange is
// Go's default: the hybrid post-quantum X25519MLKEM768 first.
func TestALPNAndCurves(t *testing.T) {
	ca := testcert.NewCA(t)
	protos := []string{"h2", "http/1.1"}
	cfg := ServerConfig(NewStore(mustLoad(t, ca.Leaf(t, testcert.Opts{Names: []string{"alpn.test"}}))), tls.VersionTLS12, protos)
	protos[0] = "changed" // ServerConfig copied the list
	addr := serve(t, cfg)

	f := func(offer []string, max uint16, wantProto string, wantCurve tls.CurveID) {
		t.Helper()
		st, err := handshake(t, addr, &tls.Config{ServerName: "alpn.test", RootCAs: ca.Pool, NextProtos: offer, MaxVersion: max})
		if err != nil {
			t.Errorf("ALPN %v: %v", offer, err)
			return
		}
		if st.NegotiatedProtocol != wantProto || st.CurveID != wantCurve {
			t.Errorf("ALPN %v, max %s: got %q over %v, want %q over %v", offer, tls.VersionName(max),
				st.NegotiatedProtocol, st.CurveID, wantProto, wantCurve)
		}
	}
	f([]string{"http/1.1", "h2"}, 0, "h2", tls.X25519MLKEM768) // the server's order wins
	f([]string{"http/1.1"}, 0, "http/1.1", tls.X25519MLKEM768)
	f(nil, 0, "", tls.X25519MLKEM768)
	f([]string{"h2"}, tls.VersionTLS12, "h2", tls.X25519) // no hybrid groups below TLS 1.3
	if !slices.Equal(cfg.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("NextProtos %v", cfg.NextProtos)
	}
}
