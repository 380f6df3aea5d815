// Package discovery keeps each service's current endpoints: its static list plus the
// addresses its DNS name resolves to, re-resolved on a schedule. Endpoint sets live
// across config reloads; a reload only starts and stops the resolvers it changes.
package discovery

import (
	"net/netip"
	"time"

	"skiff/router/lb"
)

// Spec is where one service's endpoints come from.
type Spec struct {
	Service string
	Static  []lb.Endpoint // Addr port 0: the service port's target port
	DNS     *DNS
}

// DNS is a name resolved into endpoints.
type DNS struct {
	Name    string
	Port    uint16 // 0: the service port's target port
	Refresh time.Duration
	Labels  map[string]string
	Servers []netip.AddrPort // empty: the system's resolvers
}
