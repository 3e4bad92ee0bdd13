package stream

import "github.com/prometheus/client_golang/prometheus"

// Collector returns the Prometheus collector of the set's streams:
//
//	edge_stream_connections{stream}                    TCP connections relayed now
//	edge_stream_connections_total{stream,result}       TCP connections by outcome (accepted, banned, limited, …)
//	edge_stream_bytes_total{stream,direction}          bytes relayed, up (client to server) and down
//	edge_stream_sessions{stream}                       UDP sessions open now
//	edge_stream_sessions_total{stream,result}          UDP sessions opened, and refused over max_sessions
//	edge_stream_datagrams_total{stream,direction}      UDP datagrams: up, down, dropped
//	edge_stream_server_connections{stream,pool,server} connections (sessions) open to each server
//
// Values are read from the set when scraped.
func (s *Set) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Set }

var (
	descConns     = prometheus.NewDesc("edge_stream_connections", "TCP connections a stream relays now.", []string{"stream"}, nil)
	descResults   = prometheus.NewDesc("edge_stream_connections_total", "TCP connections of a stream by outcome.", []string{"stream", "result"}, nil)
	descBytes     = prometheus.NewDesc("edge_stream_bytes_total", "Bytes a stream relayed, up (client to server) and down.", []string{"stream", "direction"}, nil)
	descSessions  = prometheus.NewDesc("edge_stream_sessions", "UDP sessions of a stream open now.", []string{"stream"}, nil)
	descSessTotal = prometheus.NewDesc("edge_stream_sessions_total", "UDP sessions opened, and refused over max_sessions.", []string{"stream", "result"}, nil)
	descDgrams    = prometheus.NewDesc("edge_stream_datagrams_total", "UDP datagrams of a stream: up, down, dropped.", []string{"stream", "direction"}, nil)
	descServer    = prometheus.NewDesc("edge_stream_server_connections", "Connections (UDP sessions) open to each server of a stream.", []string{"stream", "pool", "server"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConns, descResults, descBytes, descSessions, descSessTotal, descDgrams, descServer} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, in := range c.s.List() {
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{in.Name}, labels...)...)
		}
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{in.Name}, labels...)...)
		}
		counter(descBytes, in.BytesUp, "up")
		counter(descBytes, in.BytesDown, "down")
		if in.Protocol == "udp" {
			gauge(descSessions, float64(in.Sessions))
			counter(descSessTotal, in.Results["sessions"], "opened")
			counter(descSessTotal, in.Results["over_max_sessions"], "over_max_sessions")
			for _, dir := range []string{"up", "down", "dropped"} {
				counter(descDgrams, in.Datagrams[dir], dir)
			}
		} else {
			gauge(descConns, float64(in.Connections))
			for _, r := range resultNames {
				counter(descResults, in.Results[r], r)
			}
		}
		for _, sv := range in.Servers {
			gauge(descServer, float64(sv.Connections), sv.Pool, sv.Address)
		}
	}
}
