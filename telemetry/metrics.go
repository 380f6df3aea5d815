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

	TCPOpened   *prometheus.CounterVec // TCPLabels
	TCPClosed   *prometheus.CounterVec // TCPLabels
	TCPSent     *prometheus.CounterVec // TCPLabels
	TCPReceived *prometheus.CounterVec // TCPLabels
	TCPActive   *prometheus.GaugeVec   // direction
	TCPRefused  *prometheus.CounterVec // direction, reason
	ConnectErr  *prometheus.CounterVec // direction, destination

	// ConfigReloads counts reloads of the config file by result (ok, error).
	ConfigReloads *prometheus.CounterVec

	// Detected counts accepted connections by the protocol sniffing found.
	Detected *prometheus.CounterVec // direction, protocol

	// Per-request series, as Istio's standard metrics.
	Requests        *prometheus.CounterVec   // RequestLabels
	RequestDuration *prometheus.HistogramVec // RequestLabels
	RequestBytes    *prometheus.HistogramVec // RequestLabels
	ResponseBytes   *prometheus.HistogramVec // RequestLabels

	// TLSReloads counts changes and problems of the workload identity (mtls.cert_dir)
	// by result: ok, rejected, expired, watch_error. skiff_tls_identity_expiry_seconds
	// joins it through RegisterIdentityExpiry.
	TLSReloads *prometheus.CounterVec

	// Endpoints is the number of endpoints a service has now (static and discovered).
	Endpoints *prometheus.GaugeVec // service
	// DNSResolutions counts DNS discovery lookups by service and result (ok, error).
	DNSResolutions *prometheus.CounterVec // service, result
	// Mirrored counts mirrored request copies by service and result (sent, dropped,
	// error).
	Mirrored *prometheus.CounterVec // service, result
}

// Values of the connection_security_policy label, as Istio's.
const (
	SecurityMTLS = "mutual_tls"
	SecurityNone = "none"
)

// UnknownPrincipal is the source_principal of a connection with no verified peer.
const UnknownPrincipal = "unknown"

// TCPLabels are the labels of the per-connection TCP series, in order.
// connection_security_policy is mutual_tls when the connection crossed the mesh with
// mTLS (inbound: terminated here; outbound: wrapped here), none otherwise;
// source_principal is the verified peer's SPIFFE ID inbound, this workload's own ID
// outbound over mTLS, else "unknown".
var TCPLabels = []string{"direction", "destination", "connection_security_policy", "source_principal"}

// RequestLabels are the labels of the per-request series, in order.
// destination_service is the name of the config service the request was routed to
// ("unknown" for one passed through to its original destination); response_flags is
// Envoy's short code for why the proxy answered itself, "-" when it did not (see
// the Flag constants).
var RequestLabels = []string{"direction", "destination", "request_protocol", "response_code", "grpc_response_status",
	"connection_security_policy", "source_principal", "destination_service", "response_flags"}

// Response flags, as Envoy's %RESPONSE_FLAGS%.
const (
	FlagNone           = "-"
	FlagNoRoute        = "NR"   // no route or service for the request
	FlagNoHealthy      = "UH"   // the service has no endpoints
	FlagUpstreamFail   = "UF"   // the upstream connection failed
	FlagTimeout        = "UT"   // the route's timeout passed
	FlagDenied         = "RBAC" // an authorization policy denied it
	FlagDirectResponse = "DR"   // a direct response or redirect of a route
	FlagBadRequest     = "DPE"  // the downstream request was malformed
)

// UnknownService is destination_service for traffic no config service names.
const UnknownService = "unknown"

// NewMetrics registers every series on a registry of its own (not the global one, so
// tests can make as many as they like).
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	dd := []string{"direction", "destination"}
	tl := TCPLabels
	m := &Metrics{
		Registry: r,
		TCPOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_connections_opened_total", Help: "Connections accepted by the proxy and dialled upstream.",
		}, tl),
		TCPClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_connections_closed_total", Help: "Proxied connections that ended.",
		}, tl),
		TCPSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_sent_bytes_total", Help: "Bytes sent to the downstream (the side that connected).",
		}, tl),
		TCPReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skiff_tcp_received_bytes_total", Help: "Bytes received from the downstream (the side that connected).",
		}, tl),
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
	m.ConfigReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_config_reloads_total", Help: "Reloads of the config file, by result (ok or error).",
	}, []string{"result"})
	m.Detected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_connections_detected_total", Help: "Accepted connections by detected protocol (http1, http2, tls, tcp).",
	}, []string{"direction", "protocol"})
	m.Requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_requests_total", Help: "HTTP, gRPC and WebSocket requests proxied.",
	}, RequestLabels)
	m.RequestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "skiff_request_duration_milliseconds", Help: "Time from the request's arrival to the end of its response.",
		Buckets: []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000},
	}, RequestLabels)
	sizes := prometheus.ExponentialBuckets(1, 10, 10)
	m.RequestBytes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "skiff_request_bytes", Help: "Request body sizes.", Buckets: sizes,
	}, RequestLabels)
	m.ResponseBytes = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "skiff_response_bytes", Help: "Response body sizes.", Buckets: sizes,
	}, RequestLabels)
	m.TLSReloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_tls_identity_reloads_total",
		Help: "Workload identity loads from mtls.cert_dir by result: ok (swapped in), rejected (bad files: the identity in force stays), expired (the identity in force expired), watch_error.",
	}, []string{"result"})
	r.MustRegister(m.TLSReloads)
	m.Endpoints = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "skiff_service_endpoints", Help: "Endpoints a config service has now, static and discovered.",
	}, []string{"service"})
	m.DNSResolutions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_dns_resolutions_total", Help: "DNS discovery lookups by service and result (ok, error).",
	}, []string{"service", "result"})
	m.Mirrored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "skiff_mirrored_requests_total", Help: "Mirrored request copies by service and result (sent, dropped, error).",
	}, []string{"service", "result"})
	r.MustRegister(m.Endpoints, m.DNSResolutions, m.Mirrored)
	r.MustRegister(m.ConfigReloads, m.Detected, m.Requests, m.RequestDuration, m.RequestBytes, m.ResponseBytes)
	r.MustRegister(m.TCPOpened, m.TCPClosed, m.TCPSent, m.TCPReceived, m.TCPActive, m.TCPRefused, m.ConnectErr)
	return m
}

// RegisterIdentityExpiry adds skiff_tls_identity_expiry_seconds: the Unix time at which
// the certificate in force expires, read at each scrape.
func (m *Metrics) RegisterIdentityExpiry(notAfter func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "skiff_tls_identity_expiry_seconds",
		Help: "Unix time at which the workload certificate in force expires.",
	}, notAfter))
}
