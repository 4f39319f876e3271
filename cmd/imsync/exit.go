package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/imsync/imsync/transport"
	"github.com/imsync/imsync/transport/client"
	"github.com/imsync/imsync/transport/wire"
)

// Exit statuses of the imsync command (README, "Exit status").
const (
	exitError       = 1 // anything else
	exitUsage       = 2 // bad command line: nothing was done
	exitRefused     = 3 // the token, the permission or the message was refused
	exitNotFound    = 4 // no such conversation or message, or a missing file or key
	exitUnavailable = 5 // the server is unreachable, stopping, busy or rate limiting: retry later
)

// exitStatusError is an error that calls for its own exit status.
type exitStatusError struct {
	status int
	err    error
}

func (e *exitStatusError) Error() string { return e.err.Error() }
func (e *exitStatusError) Unwrap() error { return e.err }

// withStatus formats an error (as fmt.Errorf) that exits with status.
func withStatus(status int, format string, args ...any) error {
	return &exitStatusError{status: status, err: fmt.Errorf(format, args...)}
}

// exitCode is the exit status that err calls for.
func exitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		return exitUsage
	}
	var se *exitStatusError
	if errors.As(err, &se) {
		return se.status
	}
	if code := client.CodeOf(err); code != 0 {
		return statusOfCode(code)
	}
	if errors.Is(err, transport.ErrNoKey) || errors.Is(err, os.ErrNotExist) {
		return exitNotFound
	}
	return exitError
}

// explainDial turns a failed connection into an error that names the fix.
func explainDial(err error, addr, ca string) error {
	var we *wire.Error
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var verify *tls.CertificateVerificationError
	switch {
	case errors.As(err, &we) && we.Code == wire.CodeUnauthorized:
		return withStatus(exitRefused, "the server at %s refused the token (%w): mint a new one with `imsync token --data DIR --user U --device D`", addr, err)
	case errors.As(err, &we):
		return err
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &verify), strings.Contains(err.Error(), "x509:"):
		if ca != "" {
			return fmt.Errorf("the server at %s does not present the certificate in --ca %s (%v): pass --ca DATA/server.crt from the data directory of that server", addr, ca, err)
		}
		return fmt.Errorf("the server at %s has a certificate this machine does not trust (%v): pass --ca DATA/server.crt, the certificate in the server's data directory (or IMSYNC_CA)", addr, err)
	}
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) || strings.Contains(err.Error(), "no recent network activity") {
		return withStatus(exitUnavailable, "server unreachable at %s: is `imsync serve` running, and listening there (--listen)? (%w)", addr, err)
	}
	return err
}
