// Package meshtls gives a sidecar its workload identity and the mTLS between sidecars.
//
// The directory is tls/ but the package is named meshtls, so that it never shadows
// crypto/tls: import it as
//
//	meshtls "skiff/tls"
//
// and, inside this package, crypto/tls is imported as stdtls.
//
// # Identity
//
// A workload's identity is a SPIFFE ID (see [ID]): spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
// on Kubernetes, any path on a VM. It is carried as the one URI SAN of an X.509
// certificate. The certificate, its key and the trust bundle are three PEM files in one
// directory, in the layout cert-manager and SPIRE (through spiffe-helper) write:
//
//	tls.crt  the workload's certificate, then any intermediates
//	tls.key  its private key (PKCS#8, SEC1 or PKCS#1)
//	ca.crt   the roots (or issuing CAs) peers' certificates must chain to
//
// [Load] reads and checks them once; a [Source] keeps the current [Identity] behind an
// atomic pointer, watches the directory (including the Kubernetes ..data symlink swap)
// and swaps in a new identity when the files change. Files that fail a check change
// nothing: the previous identity stays in force and the caller hears why.
//
// # mTLS
//
// [Source.ServerConfig] and [Source.ClientConfig] are built once and read the current
// identity at every handshake, so a rotation needs no new config and never touches a
// connection in flight. They speak TLS 1.3 only, with X25519 (then P-256) key exchange,
// the ALPN value [MeshALPN] so the inbound side knows mesh traffic, and session
// resumption between sidecars. A peer is verified by chain to the current ca.crt and by
// its SPIFFE ID being in the trust domain; there is no host name check. [PeerID] gives the
// verified peer's ID from a connection's state.
//
// # CA
//
// [NewCA], [LoadCA] and [CA.Issue] are a small CA for VMs and demos (`skiff ca`, see
// [CACommand]): ECDSA P-256 throughout, keys written 0600, files replaced atomically so
// a watcher never reads half of one, and an existing key never overwritten unless asked.
package meshtls
