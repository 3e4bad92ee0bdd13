package pebbletest

import (
	"crypto/tls"
	"net/http"
	"testing"
)

func TestStartStopStart(t *testing.T) {
	p := Start(t, 5002, 5001)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ServerRoots}}}
	defer client.CloseIdleConnections()
	if _, err := get(client, p.Directory); err != nil {
		t.Fatalf("directory: %v", err)
	}
	if p.Roots == nil || p.DNS == "" || p.Orders() != 0 {
		t.Fatalf("Roots %v, DNS %q, Orders %d", p.Roots, p.DNS, p.Orders())
	}
	first := p.Roots
	p.Stop()
	if _, err := get(client, p.Directory); err == nil {
		t.Fatal("directory answers after Stop")
	}
	p.Start()
	if p.Roots == first {
		t.Fatal("Roots not replaced by a restart")
	}
}
