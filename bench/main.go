// Command bench is skiff's side-by-side benchmark harness.
//
// One binary plays every part, chosen by its first argument, so that one build serves
// both network namespaces:
//
//	bench run        the orchestrator: namespaces, servers, proxies, scenarios, report
//	bench backend    the upstream servers (runs in the server namespace)
//	bench connrate   new TCP connections per second
//	bench ws         WebSocket echo round trips
//	bench grpcstream gRPC bidi-streaming messages per second
//	bench ttfb       time to first byte on fresh connections
//	bench idle       holds N idle connections open until its stdin closes
//	bench waitport   waits until TCP addresses accept connections
//	bench cleanup    removes the namespaces and processes of an earlier, interrupted run
//
// The clients print one JSON object on stdout; the orchestrator reads it.
// See bench/README.md for how to run it and how to read the table.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: bench <run|backend|connrate|ws|grpcstream|ttfb|idle|waitport|cleanup> [flags]
(run "bash bench/run.sh" rather than "bench run" by hand: it installs the tools and builds skiff)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func([]string) error{
		"run":        cmdRun,
		"backend":    cmdBackend,
		"connrate":   cmdConnRate,
		"ws":         cmdWS,
		"grpcstream": cmdGRPCStream,
		"ttfb":       cmdTTFB,
		"idle":       cmdIdle,
		"waitport":   cmdWaitPort,
		"cleanup":    cmdCleanup,
	}
	f, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "bench: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err := f(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
