package transport

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/quic-go/quic-go"
)

// ResetKeyFile is the file in the data directory that keeps the QUIC
// stateless reset key.
const ResetKeyFile = "reset.key"

// LoadOrCreateResetKey returns the stateless reset key kept in dir,
// creating it (32 random bytes, mode 0600) on first use.
//
// A server that restarts with the same key answers a packet of a
// connection it no longer knows with a stateless reset (RFC 9000, 10.3),
// which the client recognises at once as the end of that connection;
// without it, clients wait for their idle timeout.
func LoadOrCreateResetKey(dir string) (*quic.StatelessResetKey, error) {
	path := filepath.Join(dir, ResetKeyFile)
	var key quic.StatelessResetKey
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != len(key) {
			return nil, fmt.Errorf("transport: %s holds %d bytes, not a %d-byte key", path, len(b), len(key))
		}
		copy(key[:], b)
		return &key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	rand.Read(key[:])
	if err := writeNewFile(path, key[:], 0o600); errors.Is(err, os.ErrExist) {
		return LoadOrCreateResetKey(dir) // created meanwhile by another process
	} else if err != nil {
		return nil, err
	}
	return &key, nil
}
