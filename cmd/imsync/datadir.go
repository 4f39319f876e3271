package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/imsync/imsync/events"
	"github.com/imsync/imsync/transport"
)

// A server's data directory holds the event store (events/), the token key
// (token.key), the self-signed certificate (server.crt, server.key) and,
// once serve has started there, the marker IMSYNC-DATA. serve creates what
// is missing only on a first start; afterwards a missing piece is refused,
// never silently replaced: a new store would start with an empty history, a
// new key would invalidate every device token, a new certificate every
// pinned client.

const dataMarker = "IMSYNC-DATA"

// errDataDir wraps every refusal of a data directory.
var errDataDir = errors.New("data directory refused")

// dataDir is what a data directory holds.
type dataDir struct {
	path   string
	marker bool // serve has started here
	store  bool // events/ exists and is not empty
	key    bool
	cert   bool // server.crt or server.key
	// remote: the events are in a remote store (--store), so none can be
	// missing from the directory, and only the marker says it was served.
	remote bool
}

func inspectDataDir(data string) (dataDir, error) {
	d := dataDir{path: data, key: transport.KeyExists(data), cert: transport.CertExists(data)}
	if _, err := os.Lstat(filepath.Join(data, dataMarker)); err == nil {
		d.marker = true
	}
	entries, err := os.ReadDir(storeDir(data))
	switch {
	case err == nil:
		d.store = len(entries) > 0
	case !errors.Is(err, os.ErrNotExist):
		return d, fmt.Errorf("serve: %w", err)
	}
	return d, nil
}

// served says a server has run on this directory: the marker, or (for a
// directory from a build without it) a store next to a key or certificate.
func (d dataDir) served() bool { return d.marker || (!d.remote && d.store && (d.key || d.cert)) }

// check refuses a directory where starting would silently replace the
// store, the key or the certificate. ownCert: the certificate comes from
// --cert/--key, so none is needed in the directory.
func (d dataDir) check(ownCert bool) error {
	abs, _ := filepath.Abs(d.path)
	if !d.remote && !d.store && (d.marker || d.cert) {
		return fmt.Errorf("%w: %s has been used by a server (it holds %s) but its event store %s is missing or empty; "+
			"starting would begin with an empty history and hand out seqs again. Restore %s from a backup, "+
			"pass the --data directory that holds it, or start once with --new-store to begin with an empty store on purpose",
			errDataDir, abs, d.evidence(), storeDir(abs), storeDir(abs))
	}
	if !d.served() {
		return nil // a first start: everything missing is created
	}
	if !d.key {
		return fmt.Errorf("%w: %s holds an event store but no token key (%s); a new key would make every device token fail. "+
			"Restore %s from a backup, or start once with --new-key to create one on purpose (then issue new tokens to every device)",
			errDataDir, abs, filepath.Join(abs, "token.key"), filepath.Join(abs, "token.key"))
	}
	if !d.cert && !ownCert {
		return fmt.Errorf("%w: %s holds an event store but no certificate (%s, server.key); a new one would break every client that pins it. "+
			"Restore both files from a backup, pass --cert and --key, or start once with --new-cert to create one on purpose (then give clients the new %s)",
			errDataDir, abs, filepath.Join(abs, transport.CertFile), filepath.Join(abs, transport.CertFile))
	}
	return nil
}

func (d dataDir) evidence() string {
	switch {
	case d.marker:
		return dataMarker
	case d.key:
		return "a token key and a certificate"
	}
	return "a certificate"
}

// dataDirAllow names what serve may create although the directory was
// used before (the --new-* flags).
type dataDirAllow struct{ store, key, cert bool }

// createAllowed creates, loudly, the missing pieces that allow permits.
func createAllowed(data string, allow dataDirAllow, ownCert bool, logger *slog.Logger) error {
	d, err := inspectDataDir(data)
	if err != nil {
		return err
	}
	if allow.store && !d.store {
		s, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
		if err != nil {
			return err
		}
		if err := s.Close(); err != nil {
			return err
		}
		logger.Warn("created a new, empty event store (--new-store)", "dir", storeDir(data))
	}
	if allow.key && !d.key {
		if _, err := transport.LoadOrCreateKey(data); err != nil {
			return err
		}
		logger.Warn("created a new token key (--new-key): tokens issued before no longer work", "dir", data)
	}
	if allow.cert && !d.cert && !ownCert {
		if _, err := transport.LoadOrCreateCert(data); err != nil {
			return err
		}
		logger.Warn("created a new certificate (--new-cert): clients must pin the new one", "file", filepath.Join(data, transport.CertFile))
	}
	return nil
}

// markDataDir records that a server has started on data.
func markDataDir(data string) error {
	path := filepath.Join(data, dataMarker)
	if _, err := os.Lstat(path); err == nil {
		return nil
	}
	if err := os.WriteFile(path, []byte("imsync server data directory: events/, token.key, server.crt, server.key\n"), 0o640); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
