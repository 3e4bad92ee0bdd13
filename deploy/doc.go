// Package deploy holds what operators run next to edge rather than edge itself:
// the Grafana dashboard (grafana/edge.json) and the Prometheus alert rules
// (prometheus/alerts.yml, with their promtool unit tests in alerts_test.yml).
//
// The package has no code. Its test starts the real edge binary under light load
// and a real Prometheus scraping it, then checks that every panel query of the
// dashboard is valid and returns data, and that promtool accepts the rules and
// passes their unit tests. See docs/operations.md.
package deploy
