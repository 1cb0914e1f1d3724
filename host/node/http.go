package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/microhost/microhost/host/supervisor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// startHTTP serves /metrics (Prometheus) and /healthz on addr.
func startHTTP(n *Node, addr string) (*http.Server, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &metrics{n: n})
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := n.Healthy(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// Healthy is nil when every plugin is running and answers Health.
func (n *Node) Healthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var errs []error
	for _, inst := range n.sup.Instances() {
		st := inst.Status()
		if st.State != supervisor.StateRunning {
			errs = append(errs, errors.New(st.Name+": "+string(st.State)))
			continue
		}
		if err := inst.Component().Health(ctx); err != nil {
			errs = append(errs, errors.New(st.Name+": "+err.Error()))
		}
	}
	if n.protocol() == nil {
		errs = append(errs, errors.New("network protocol: restarting"))
	}
	return errors.Join(errs...)
}

// metrics reads the node's state on every scrape rather than keeping
// counters of its own, so that it can never disagree with the admin API.
type metrics struct{ n *Node }

var (
	descLinks    = prometheus.NewDesc("microhost_link_up", "1 for each link to a peer that is up.", []string{"peer"}, nil)
	descRTT      = prometheus.NewDesc("microhost_link_rtt_seconds", "Smoothed round-trip time of a link.", []string{"peer"}, nil)
	descBytesIn  = prometheus.NewDesc("microhost_link_received_bytes_total", "Bytes received on a link.", []string{"peer"}, nil)
	descBytesOut = prometheus.NewDesc("microhost_link_sent_bytes_total", "Bytes sent on a link.", []string{"peer"}, nil)
	descDrops    = prometheus.NewDesc("microhost_link_dropped_messages_total", "Messages dropped because a link's queue was full.", []string{"peer"}, nil)
	descRoutes   = prometheus.NewDesc("microhost_routes", "Routes in the routing table.", nil, nil)
	descRestarts = prometheus.NewDesc("microhost_plugin_restarts_total", "Times a plugin process was restarted.", []string{"plugin"}, nil)
	descSent     = prometheus.NewDesc("microhost_network_messages_sent_total", "Network protocol messages sent, by type.", []string{"type"}, nil)
	descReceived = prometheus.NewDesc("microhost_network_messages_received_total", "Network protocol messages received, by type.", []string{"type"}, nil)
)

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLinks, descRTT, descBytesIn, descBytesOut, descDrops, descRoutes, descRestarts, descSent, descReceived} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if links, err := m.n.tunnel.Links(ctx); err == nil {
		for _, l := range links {
			up := 0.0
			if l.State == "up" {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descLinks, prometheus.GaugeValue, up, l.Peer)
			ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, l.RTT.Seconds(), l.Peer)
			ch <- prometheus.MustNewConstMetric(descBytesIn, prometheus.CounterValue, float64(l.BytesIn), l.Peer)
			ch <- prometheus.MustNewConstMetric(descBytesOut, prometheus.CounterValue, float64(l.BytesOut), l.Peer)
			ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(l.Drops), l.Peer)
		}
	}
	if routes, err := m.n.router.List(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descRoutes, prometheus.GaugeValue, float64(len(routes)))
	}
	for _, inst := range m.n.sup.Instances() {
		st := inst.Status()
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(st.Restarts), st.Name)
	}
	if nw := m.n.protocol(); nw != nil {
		stats := nw.Stats()
		for t, v := range stats.Sent {
			ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(v), t)
		}
		for t, v := range stats.Received {
			ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(v), t)
		}
	}
}
