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

// Edges given the same secret resume each other's sessions, in the same period and
// across a period boundary whichever side has moved on; other secrets and random keys
// do not; a short secret is refused.
func TestSharedTicketSecret(t *testing.T) {
	ca := testcert.NewCA(t)
	store := NewStore(mustLoad(t, ca.Leaf(t, testcert.Opts{Names: []string{"shared.test"}})))
	secret := []byte("0123456789abcdef0123456789abcdef-shared")
	const every, keep = time.Hour, 3
	t0 := time.Unix(0, 0).Add(1000*every + every/2)
	edge := func(secret []byte, at time.Time) (string, *Tickets) {
		tickets := NewTickets(every, keep)
		if secret != nil {
			if err := tickets.SetSecret(secret); err != nil {
				t.Fatal(err)
			}
		}
		tickets.rotateAt(at)
		cfg := ServerConfig(store, tls.VersionTLS12, nil)
		tickets.Register(cfg)
		return serve(t, cfg), tickets
	}
	for _, version := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		// resumesOn gets a ticket from a and reports whether b resumes with it.
		resumesOn := func(a, b string) bool {
			t.Helper()
			c := &tls.Config{ServerName: "shared.test", RootCAs: ca.Pool, MinVersion: version, MaxVersion: version,
				ClientSessionCache: tls.NewLRUClientSessionCache(1)}
			if _, err := handshake(t, a, c); err != nil {
				t.Fatal(err)
			}
			st, err := handshake(t, b, c)
			if err != nil {
				t.Fatal(err)
			}
			return st.DidResume
		}
		name := tls.VersionName(version)
		a, _ := edge(secret, t0)
		b, _ := edge(secret, t0)
		ahead, _ := edge(secret, t0.Add(every))          // its clock is in the next period
		later, _ := edge(secret, t0.Add((keep-1)*every)) // the oldest period it still takes
		tooLate, _ := edge(secret, t0.Add(keep*every))
		other, _ := edge([]byte("another secret, 32 bytes or more!!"), t0)
		random, _ := edge(nil, t0)
		for _, c := range []struct {
			what     string
			from, to string
			want     bool
		}{
			{"same secret, same period", a, b, true},
			{"to an edge a period ahead", a, ahead, true},
			{"from an edge a period ahead", ahead, a, true},
			{"keep−1 periods later", a, later, true},
			{"keep periods later", a, tooLate, false},
			{"another secret", a, other, false},
			{"random keys", a, random, false},
			{"from random keys", random, a, false},
		} {
			if got := resumesOn(c.from, c.to); got != c.want {
				t.Errorf("%s, %s: resumed %v, want %v", name, c.what, got, c.want)
			}
		}
	}
	if err := NewTickets(every, keep).SetSecret([]byte("short")); err == nil {
		t.Error("a 5-byte secret was taken")
	}
}
