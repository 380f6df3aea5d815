// Package e2e proves skiff's capture and relay end to end: real iptables rules (nft and
// legacy), real network namespaces joined by veth pairs, the real skiff binary running
// as the proxy user, and real clients and servers (curl, grpc-go, a WebSocket library,
// raw TCP) from the testapp command beside this package.
//
// The tests need root (network namespaces, iptables) and the commands ip, iptables-nft,
// ip6tables-nft, iptables-legacy, ip6tables-legacy with their -save twins, setpriv and
// curl. Without them every test fails and says what is missing; SKIFF_SKIP_PRIVILEGED=1
// skips them instead, for a developer without root. SKIFF_E2E_RACE=1 builds the skiff
// binary under test with the race detector; SKIFF_E2E_BINARY=path tests a skiff binary
// built elsewhere instead of building this tree.
//
//	sudo go test ./e2e/            # about half a minute
//	sudo go test -race -v ./e2e/   # prints the THROUGHPUT line and the banner time
//
// Every namespace is named skiff-e2e-<pid>-<n>; a run removes its own, and the leftovers
// of a run that was killed (whose pid is gone) at its start.
package e2e
