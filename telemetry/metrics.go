package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the proxy's Prometheus series. Names follow Istio's standard metrics with a
// skiff_ prefix. For TCP, "received" is bytes from the downstream (the connecting side)
// and "sent" is bytes to it, as in istio_tcp_received_bytes_total/sent_bytes_total.
type Metrics struct {
	Registry *prometheus.Registry

	TCPOpened   *prometheus.CounterVec // direction, destination
	TCPClosed   *prometheus.CounterVec // direction, destination
	TCPSent     *prometheus.CounterVec // direction, destination
	TCPReceived *prometheus.CounterVec // direction, destination
	TCPActive   *prometheus.GaugeVec   // direction
	TCPRefused  *prometheus.CounterVec // direction, reason
	ConnectErr  *prometheus.CounterVec // direction, destination
}

// NewMetrics registers every series on a registry of its own (not the global one, so
// tests can make as many as they like).
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	dd := []string{"direction", "destination"}
	m := &Metrics{
		Registry: r,
		TCPOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_connections_opened_total", Help: "Connections accepted by the proxy and dialled upstream.",
		}, dd),
		TCPClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_connections_closed_total", Help: "Proxied connections that ended.",
		}, dd),
		TCPSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_sent_bytes_total", Help: "Bytes sent to the downstream (the side that connected).",
		}, dd),
		TCPReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_received_bytes_total", Help: "Bytes received from the downstream (the side that connected).",
		}, dd),
		TCPActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "skiff_tcp_connections_active", Help: "Connections being proxied now.",
		}, []string{"direction"}),
		TCPRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_connections_refused_total", Help: "Accepted connections the proxy closed without relaying, by reason.",
		}, []string{"direction", "reason"}),
		ConnectErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_upstream_connect_errors_total", Help: "Failed dials to an upstream.",
		}, dd),
	}
	r.MustRegister(m.TCPOpened, m.TCPClosed, m.TCPSent, m.TCPReceived, m.TCPActive, m.TCPRefused, m.ConnectErr)
	return m
}
