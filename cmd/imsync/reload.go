package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"

	"github.com/imsync/imsync/transport"
)

// parseHostnames splits --hostname: DNS names and IP addresses, separated
// by commas.
func parseHostnames(s string) ([]string, error) {
	var hosts []string
	for _, h := range strings.Split(s, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if net.ParseIP(h) == nil && !validDNSName(h) {
			return nil, fmt.Errorf("%q is neither an IP address nor a DNS name", h)
		}
		hosts = append(hosts, h)
	}
	if s != "" && len(hosts) == 0 {
		return nil, fmt.Errorf("no name in %q", s)
	}
	return hosts, nil
}

// validDNSName accepts letters, digits, hyphens and dots, with a leading
// "*." for a wildcard, in labels of 1 to 63 characters.
func validDNSName(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// certForHosts makes sure the self-signed certificate of data covers
// hosts. A certificate that lacks some of them is replaced only with
// --new-cert (replace), since every client pinning it must then pin the
// new one; otherwise serve refuses and says so. A directory without a
// certificate gets one for hosts when the server starts.
func certForHosts(data string, hosts []string, replace bool, logger *slog.Logger) error {
	if !transport.CertExists(data) {
		return nil
	}
	cert, err := transport.LoadCert(data)
	if err != nil {
		return err
	}
	missing, err := transport.MissingNames(cert, hosts)
	if err != nil || len(missing) == 0 {
		return err
	}
	abs, _ := filepath.Abs(data)
	crt := filepath.Join(abs, transport.CertFile)
	if !replace {
		return fmt.Errorf("%w: the certificate %s is not valid for %s (--hostname). Start once with --new-cert to replace it "+
			"(the old pair is kept as %s.old; every client must then pin the new %s), or leave those names out",
			errDataDir, crt, strings.Join(missing, ", "), crt, crt)
	}
	if _, err := transport.ReplaceCert(data, hosts...); err != nil {
		return err
	}
	logger.Warn("replaced the self-signed certificate for --hostname (--new-cert): clients must pin the new one",
		"file", crt, "names", strings.Join(hosts, ","), "old", crt+".old")
	return nil
}

// reload reads the certificate files (--cert/--key) and the JWKS (--jwks)
// again, on SIGHUP. Open connections go on; a file that fails to load
// leaves the one loaded before in use.
func reload(certs *transport.CertFiles, jwks *transport.JWKS, out io.Writer, logger *slog.Logger) {
	if certs == nil && jwks == nil {
		fmt.Fprintln(out, "SIGHUP: nothing to reload (no --cert/--key, no --jwks)")
		return
	}
	if certs != nil {
		if err := certs.Reload(); err != nil {
			logger.Error("SIGHUP: certificate not reloaded; the previous one stays in use", "err", err)
		} else {
			fmt.Fprintln(out, "reloaded the certificate")
		}
	}
	if jwks != nil {
		if err := jwks.Reload(); err != nil {
			logger.Error("SIGHUP: JWKS not reloaded; the previous keys stay in use", "err", err)
		} else {
			fmt.Fprintf(out, "reloaded jwks: %s (kids: %s)\n", jwks.Path(), strings.Join(jwks.Kids(), ", "))
		}
	}
}
