package main

import "testing"

// freePorts never hands out one port twice in a pick.
func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(64)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("port %d picked twice or invalid: %v", p, ports)
		}
		seen[p] = true
	}
}
