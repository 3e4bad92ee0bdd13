package waitroom

import "github.com/prometheus/client_golang/prometheus"

// Collector exports the numbers of the rooms rooms returns (by name) when scraped:
//
//	edge_waiting_room_waiting{room}        users waiting
//	edge_waiting_room_active{room}         admitted users active within the session
//	edge_waiting_room_admitted_total{room} users admitted since the room started
//	edge_waiting_room_admit_rate{room}     the rate in force, users per second
//	edge_waiting_room_eta_seconds{room}    the wait of a user joining now
func Collector(rooms func() map[string]*Room) prometheus.Collector { return collector{rooms} }

type collector struct{ rooms func() map[string]*Room }

var (
	descWaiting  = prometheus.NewDesc("edge_waiting_room_waiting", "Users waiting in a room.", []string{"room"}, nil)
	descActive   = prometheus.NewDesc("edge_waiting_room_active", "Admitted users active within the session.", []string{"room"}, nil)
	descAdmitted = prometheus.NewDesc("edge_waiting_room_admitted_total", "Users admitted since the room started.", []string{"room"}, nil)
	descRate     = prometheus.NewDesc("edge_waiting_room_admit_rate", "The admission rate in force, users per second (adaptive may hold it below the configured one).", []string{"room"}, nil)
	descETA      = prometheus.NewDesc("edge_waiting_room_eta_seconds", "The wait of a user joining now.", []string{"room"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descWaiting, descActive, descAdmitted, descRate, descETA} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for name, r := range c.rooms() {
		s := r.Stats()
		ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(s.Waiting), name)
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.Active), name)
		ch <- prometheus.MustNewConstMetric(descAdmitted, prometheus.CounterValue, float64(s.Admitted), name)
		ch <- prometheus.MustNewConstMetric(descRate, prometheus.GaugeValue, s.AdmitRate, name)
		ch <- prometheus.MustNewConstMetric(descETA, prometheus.GaugeValue, s.ETA, name)
	}
}
