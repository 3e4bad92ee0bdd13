package tlsstore

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/edge-gw/edge/internal/testcert"
)

// TestResumption checks session resumption with rotated ticket keys, on a
// registered config and through the GetConfigForClient of a registered base
// config (as the listener uses it), for TLS 1.3 and TLS 1.2.
func TestResumption(t *testing.T) {
	ca := testcert.NewCA(t)
	store := NewStore(mustLoad(t, ca.Leaf(t, testcert.Opts{Names: []string{"resume.test"}})))
	const keep = 3

	f := func(name string, version uint16, viaBase bool) {
		t.Helper()
		tickets := NewTickets(time.Hour, keep)
		cfg := ServerConfig(store, tls.VersionTLS12, nil)
		if viaBase {
			perReload := cfg // not registered: its keys come from the base
			cfg = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return perReload, nil }}
		}
		tickets.Register(cfg)
		addr := serve(t, cfg)

		newClient := func() *tls.Config {
			return &tls.Config{ServerName: "resume.test", RootCAs: ca.Pool, MinVersion: version, MaxVersion: version,
				ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		}
		// resumed reports whether a connection with client resumed.
		resumed := func(client *tls.Config) bool {
			t.Helper()
			st, err := handshake(t, addr, client)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if st.Version != version {
				t.Fatalf("%s: got %s", name, tls.VersionName(st.Version))
			}
			return st.DidResume
		}

		c := newClient()
		if resumed(c) {
			t.Errorf("%s: the first connection resumed", name)
		}
		if !resumed(c) {
			t.Errorf("%s: the second connection did not resume", name)
		}

		c = newClient()
		resumed(c) // a ticket under the current key
		tickets.Rotate()
		if !resumed(c) {
			t.Errorf("%s: a ticket from one rotation ago did not resume", name)
		}

		c = newClient()
		resumed(c)
		for range keep {
			tickets.Rotate()
		}
		if resumed(c) {
			t.Errorf("%s: a ticket from %d rotations ago resumed", name, keep)
		}
		if !resumed(c) { // the full handshake above issued a ticket under the new key
			t.Errorf("%s: a fresh ticket did not resume after %d rotations", name, keep)
		}

		tickets.Unregister(cfg)
		c = newClient()
		resumed(c)
		for range keep {
			tickets.Rotate()
		}
		if !resumed(c) {
			t.Errorf("%s: rotations changed the keys of an unregistered config", name)
		}
	}
	f("TLS 1.3", tls.VersionTLS13, false)
	f("TLS 1.2", tls.VersionTLS12, false)
	f("TLS 1.3 via GetConfigForClient", tls.VersionTLS13, true)
	f("TLS 1.2 via GetConfigForClient", tls.VersionTLS12, true)
}

// TestTicketsRun checks that Run rotates on its own and stops.
func TestTicketsRun(t *testing.T) {
	ca := testcert.NewCA(t)
	cfg := ServerConfig(NewStore(mustLoad(t, ca.Leaf(t, testcert.Opts{Names: []string{"run.test"}}))), tls.VersionTLS13, nil)
	tickets := NewTickets(time.Millisecond, 1) // each rotation ends every ticket
	tickets.Register(cfg)
	addr := serve(t, cfg)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { tickets.Run(stop); close(done) }()

	client := &tls.Config{ServerName: "run.test", RootCAs: ca.Pool, ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	if _, err := handshake(t, addr, client); err != nil { // a full handshake and a ticket
		t.Fatal(err)
	}
	// Without a rotation every connection resumes and gets a new ticket
	// under the same key; poll until one does not.
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := handshake(t, addr, client)
		if err != nil {
			t.Fatal(err)
		}
		if !st.DidResume {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no rotation within 10s")
		}
	}
	close(stop)
	<-done
}

func TestNewTicketsDefaults(t *testing.T) {
	tk := NewTickets(0, 0)
	if tk.every != DefaultTicketEvery || tk.keep != DefaultTicketKeep || len(tk.keys) != 1 {
		t.Errorf("NewTickets(0, 0): every %v, keep %d, %d keys", tk.every, tk.keep, len(tk.keys))
	}
	for range DefaultTicketKeep + 5 {
		tk.Rotate()
	}
	if len(tk.keys) != DefaultTicketKeep || tk.keys[0] == tk.keys[1] {
		t.Errorf("after many rotations: %d keys (want %d), distinct newest %v", len(tk.keys), DefaultTicketKeep, tk.keys[0] != tk.keys[1])
	}
}
