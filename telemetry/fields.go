// Package telemetry holds skiff's metrics (Prometheus) and logging (zerolog) helpers.
package telemetry

// Log field names, one place so every line uses the same keys.
const (
	FieldConnID    = "conn_id"
	FieldSrc       = "src"
	FieldOrigDst   = "orig_dst"
	FieldDirection = "direction"
	FieldProto     = "proto"
	FieldUpstream  = "upstream"
	FieldDuration  = "duration"
	FieldSent      = "sent_bytes"
	FieldReceived  = "received_bytes"
	FieldReason    = "reason"
	FieldAddr      = "addr"
	FieldFile      = "file"
	FieldBackend   = "backend"
	FieldFamily    = "family"
	FieldPeerID    = "peer_id"   // the verified SPIFFE ID of a mesh peer
	FieldSecurity  = "security"  // mutual_tls or none
	FieldSPIFFEID  = "spiffe_id" // this workload's identity
	FieldSerial    = "serial"
	FieldNotAfter  = "not_after"
	FieldFlags     = "response_flags" // Envoy-style code for why the proxy answered itself
	FieldService   = "service"        // the config service traffic was routed to
	FieldRoute     = "route"          // the config route that matched
	FieldPolicy    = "policy"         // the authorization policy that decided
	FieldMethod    = "method"
	FieldPath      = "path"
)
