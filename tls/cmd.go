package meshtls

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// CAUsage is the help of `skiff ca`.
const CAUsage = `skiff ca — a small certificate authority for VMs and demos

Usage:
  skiff ca init  --trust-domain TD --dir D [--lifetime 8760h] [--name-constraints] [--force]
        create the root of trust domain TD: D/ca.crt, and D/ca.key (0600)
  skiff ca issue --ca-dir D --id spiffe://TD/PATH --out DIR [--lifetime 24h] [--force]
        issue a workload certificate for the SPIFFE ID: DIR/tls.crt, DIR/tls.key (0600)
        and DIR/ca.crt, the layout skiff (and cert-manager) use

Keys are ECDSA P-256. A command that would overwrite a private key refuses unless
--force is given. Files are replaced atomically, so a running skiff watching DIR picks
up a new certificate at once.
`

// CACommand runs `skiff ca` with the arguments after "ca". It returns the exit code: 0
// on success or help, 1 when the command failed or a flag was bad, 2 for a command line
// that is incomplete (no subcommand, an unknown one, a required flag missing).
func CACommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, CAUsage)
		return 2
	}
	switch args[0] {
	case "init":
		return caInit(args[1:], stdout, stderr)
	case "issue":
		return caIssue(args[1:], stdout, stderr)
	case "help", "--help", "-h":
		fmt.Fprint(stdout, CAUsage)
		return 0
	}
	fmt.Fprintf(stderr, "skiff ca: unknown command %q\n\n%s", args[0], CAUsage)
	return 2
}

func caInit(args []string, stdout, stderr io.Writer) int {
	const name = "ca init"
	fs := flagSet(name, stderr)
	td := fs.String("trust-domain", "", "the trust domain, e.g. example.org (required)")
	dir := fs.String("dir", "", "directory to write ca.crt and ca.key into, made if missing (required)")
	lifetime := fs.Duration("lifetime", DefaultRootLifetime, "how long the root is valid")
	constrain := fs.Bool("name-constraints", false, "limit the root to signing SPIFFE IDs in its own trust domain")
	force := fs.Bool("force", false, "overwrite an existing ca.key (certificates it issued stop verifying)")
	if code, ok := parse(name, fs, args, stderr); !ok {
		return code
	}
	if code, ok := required(name, stderr, map[string]string{"--trust-domain": *td, "--dir": *dir}); !ok {
		return code
	}
	if *lifetime <= 0 {
		return caFailed(name, fmt.Errorf("--lifetime must be positive (got %v)", *lifetime), stderr)
	}
	ca, err := NewCA(strings.TrimPrefix(*td, scheme), CAOptions{Lifetime: *lifetime, NameConstraints: *constrain})
	if err != nil {
		return caFailed(name, err, stderr)
	}
	if err := ca.Write(*dir, *force); err != nil {
		return caFailed(name, err, stderr)
	}
	fmt.Fprintf(stdout, "created the root of trust domain %q in %s: %s, %s (valid until %s)\n",
		ca.TrustDomain(), *dir, CAFile, CAKeyFile, stamp(ca.Cert.NotAfter))
	return 0
}

func caIssue(args []string, stdout, stderr io.Writer) int {
	const name = "ca issue"
	fs := flagSet(name, stderr)
	caDir := fs.String("ca-dir", "", "directory holding the CA's ca.crt and ca.key (required)")
	idFlag := fs.String("id", "", "the workload's SPIFFE ID, e.g. spiffe://example.org/ns/default/sa/web (required)")
	out := fs.String("out", "", "directory to write tls.crt, tls.key and ca.crt into, made if missing (required)")
	lifetime := fs.Duration("lifetime", DefaultLeafLifetime, "how long the certificate is valid")
	force := fs.Bool("force", false, "overwrite an existing tls.key")
	if code, ok := parse(name, fs, args, stderr); !ok {
		return code
	}
	if code, ok := required(name, stderr, map[string]string{"--ca-dir": *caDir, "--id": *idFlag, "--out": *out}); !ok {
		return code
	}
	if *lifetime <= 0 {
		return caFailed(name, fmt.Errorf("--lifetime must be positive (got %v)", *lifetime), stderr)
	}
	id, err := ParseID(*idFlag)
	if err != nil {
		return caFailed(name, err, stderr)
	}
	ca, err := LoadCA(*caDir)
	if err != nil {
		return caFailed(name, err, stderr)
	}
	creds, err := ca.Issue(id, *lifetime, time.Now())
	if err != nil {
		return caFailed(name, err, stderr)
	}
	if err := creds.Write(*out, *force); err != nil {
		return caFailed(name, err, stderr)
	}
	fmt.Fprintf(stdout, "issued %s in %s: %s, %s, %s (valid until %s)\n",
		id, *out, CertFile, KeyFile, CAFile, stamp(creds.Cert.NotAfter))
	return 0
}

func flagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("skiff "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses flags as main.go does: --help exits 0, a bad flag or a stray argument 1.
func parse(name string, fs *flag.FlagSet, args []string, stderr io.Writer) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 1, false // flag has printed the error and the flags
	}
	if fs.NArg() > 0 {
		return caFailed(name, fmt.Errorf("unexpected argument %q", fs.Arg(0)), stderr), false
	}
	return 0, true
}

// required reports the flags left empty, with the usage: exit 2.
func required(name string, stderr io.Writer, flags map[string]string) (int, bool) {
	var missing []string
	for f, v := range flags {
		if v == "" {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return 0, true
	}
	slices.Sort(missing)
	fmt.Fprintf(stderr, "skiff %s: missing %s\n\n%s", name, strings.Join(missing, ", "), CAUsage)
	return 2, false
}

func caFailed(name string, err error, stderr io.Writer) int {
	msg := err.Error()
	if errors.Is(err, ErrKeyExists) {
		msg += " (use --force to replace it)"
	}
	fmt.Fprintf(stderr, "skiff %s: %s\n", name, msg)
	return 1
}
