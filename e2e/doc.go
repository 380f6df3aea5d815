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
// The L7 tests (l7_test.go, interop_test.go, serverfirst_test.go, h2spec_test.go,
// latency_test.go) prove what skiff does with each protocol it detects: HTTP/1.1, h2c,
// gRPC (grpc-go's interop cases) and WebSocket proxied as requests, TLS from the app
// relayed untouched, server-first greetings timed, ambiguous framing refused, h2spec
// through skiff against golang.org/x/net/http2 alone, and the latency skiff adds.
// TestH2Spec needs h2spec on PATH, the pinned version that `make deps-test` installs
// into bin/tools (make test puts it on PATH; by hand:
// GOBIN=$PWD/bin/tools go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible).
//
//	sudo go test ./e2e/            # about half a minute
//	sudo go test -race -v ./e2e/   # also prints the THROUGHPUT, BANNER, H2SPEC and LATENCY lines
//
// Every namespace is named skiff-e2e-<pid>-<n>; a run removes its own, and the leftovers
// of a run that was killed (whose pid is gone) at its start.
package e2e
