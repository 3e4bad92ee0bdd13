// Package layout holds the test that keeps edge's dependency direction true:
// cmd/edge → proxy → {config, admin, leaves}; leaves import no edge package.
package layout
