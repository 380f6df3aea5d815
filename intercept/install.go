package intercept

import (
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/rs/zerolog"

	"skiff/config"
)

// Families returns the IP families to capture under cfg in this namespace.
func Families(cfg *config.Config) []Family {
	fams := []Family{IPv4}
	switch cfg.Capture.IPv6 {
	case "on":
		fams = append(fams, IPv6)
	case "auto":
		if HasIPv6() {
			fams = append(fams, IPv6)
		}
	}
	return fams
}

// DryRun renders the plan for every family in iptables-save form; it touches nothing.
func DryRun(cfg *config.Config) string {
	var b strings.Builder
	for _, f := range Families(cfg) {
		b.WriteString(Build(cfg, f).Save())
	}
	return b.String()
}

// Install applies cfg's plan in this network namespace with the backend the host uses.
func Install(cfg *config.Config, log zerolog.Logger) error {
	b, why, err := DetectBackend(cfg.Capture.Backend)
	if err != nil {
		return err
	}
	log.Info().Str("backend", b.Name).Str("command", b.Command).Str("why", why).Msg("iptables backend chosen")
	for _, fam := range Families(cfg) {
		if fam == IPv6 && cfg.Capture.IPv6 == "auto" {
			if _, err := exec.LookPath(b.Command6()); err != nil {
				log.Warn().Str("command", b.Command6()).Msg("namespace has IPv6 but ip6tables is missing: IPv6 traffic is not captured")
				continue
			}
		}
		t, err := Open(b, fam)
		if err != nil {
			return err
		}
		p := Build(cfg, fam)
		if err := Apply(t, p); err != nil {
			return err
		}
		log.Info().Str("family", fam.String()).Int("rules", len(p.Rules)+len(p.Jumps)).Msg("capture rules installed")
	}
	return nil
}

// Uninstall removes skiff's rules and chains from every backend and family that holds
// them, so it cleans up whichever backend an earlier Install chose. Backends without a
// skiff chain are not touched: even a lookup would create the legacy nat table.
func Uninstall(log zerolog.Logger) error {
	var errs []error
	for _, b := range []Backend{{"nft", "iptables-nft"}, {"legacy", "iptables-legacy"}} {
		for _, fam := range []Family{IPv4, IPv6} {
			cmd := b.Command
			if fam == IPv6 {
				cmd = b.Command6()
			}
			if _, err := exec.LookPath(cmd); err != nil || (b.Name == "legacy" && !legacyInUse()) || !holdsSkiff(cmd+"-save") {
				continue
			}
			t, err := Open(b, fam)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := Remove(t, fam); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", cmd, err))
				continue
			}
			log.Info().Str("command", cmd).Msg("capture rules removed")
		}
	}
	return errors.Join(errs...)
}

// holdsSkiff reports whether a *-save command shows any of skiff's chains.
func holdsSkiff(save string) bool {
	out, err := exec.Command(save, "-t", Table).Output()
	if err != nil {
		return false
	}
	return strings.Contains(string(out), ":"+ChainOutput+" ") || strings.Contains(string(out), ":"+ChainInbound+" ")
}
