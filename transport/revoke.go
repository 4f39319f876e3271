package transport

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport/wire"
)

// Revocations remember, per user, when their tokens were revoked: a token
// issued at or before that second is refused (see Revoked). They are kept
// in a file of the data directory, so that a restart keeps them. Each
// server node keeps its own file: with several nodes, revoke on each.
type Revocations struct {
	path  string
	mu    sync.Mutex
	users map[string]time.Time
}

// RevocationsFile is the file in the data directory.
const RevocationsFile = "revoked-tokens.json"

// LoadRevocations reads dir's revocations (none when the file is absent).
func LoadRevocations(dir string) (*Revocations, error) {
	r := &Revocations{path: filepath.Join(dir, RevocationsFile), users: map[string]time.Time{}}
	b, err := os.ReadFile(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if err := json.Unmarshal(b, &r.users); err != nil {
		return nil, fmt.Errorf("transport: %s is damaged: %w", r.path, err)
	}
	if r.users == nil { // the file held null
		r.users = map[string]time.Time{}
	}
	return r, nil
}

// Revoke refuses from now on every token of user issued at or before at,
// and saves that before returning.
func (r *Revocations) Revoke(user string, at time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	prev, had := r.users[user]
	if had && !at.After(prev) {
		return nil
	}
	r.users[user] = at.UTC()
	if err := r.save(); err != nil {
		if had {
			r.users[user] = prev
		} else {
			delete(r.users, user)
		}
		return err
	}
	return nil
}

// save writes the file atomically: temporary file, fsync, rename, directory fsync.
func (r *Revocations) save() error {
	b, err := json.MarshalIndent(r.users, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(r.path)
	tmp, err := os.CreateTemp(dir, RevocationsFile+".tmp*")
	if err != nil {
		return fmt.Errorf("transport: save revocations: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), r.path)
	}
	if err == nil {
		var d *os.File
		if d, err = os.Open(dir); err == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("transport: save revocations: %w", err)
	}
	return nil
}

// Revoked reports whether a token of user issued at issuedAt is revoked:
// issued in or before the second of the user's last revocation. (Token
// times are whole seconds, so a token minted in the second of a
// revocation is refused too: mint new ones after it.)
func (r *Revocations) Revoked(user string, issuedAt time.Time) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	at, ok := r.users[user]
	r.mu.Unlock()
	return ok && issuedAt.Unix() <= at.Unix()
}

// RevokedAt is when user's tokens were last revoked (zero: never).
func (r *Revocations) RevokedAt(user string) time.Time {
	if r == nil {
		return time.Time{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.users[user]
}

// errRevoked refuses a login whose token was revoked.
var errRevoked = fmt.Errorf("%w: token revoked", ErrBadToken)

// checkRevoked is the one place a verified token is held against the
// revocations (whatever the token's format: it needs the user and the
// issue time).
func (s *Server) checkRevoked(c Claims) error {
	if !s.cfg.Revocations.Revoked(c.User, time.Unix(c.Issued, 0)) {
		return nil
	}
	if c.Issued == 0 {
		// Without iat a token may be one issued before the revocation:
		// it stays refused, and the backend must learn why.
		at := s.cfg.Revocations.RevokedAt(c.User).Format(time.RFC3339)
		return fmt.Errorf("%w: it has no iat, and the tokens of %s were revoked at %s: mint tokens with an iat", errRevoked, c.User, at)
	}
	return errRevoked
}

// Disconnect closes the connections of user's device (every device of the
// user when device is empty) with code 109 DISCONNECTED, and returns how
// many it closed. The device may log in again: to keep it out, revoke.
func (s *Server) Disconnect(user, device string) int {
	return s.closeConns(user, device, wire.CodeDisconnected, "disconnected by the server")
}

// RevokeTokens refuses every token of user issued up to now (persisted in
// Config.Revocations) and closes the user's connections with code 102
// UNAUTHORIZED. It returns the revocation time and how many connections
// it closed.
func (s *Server) RevokeTokens(user string) (time.Time, int, error) {
	if s.cfg.Revocations == nil {
		return time.Time{}, 0, errors.New("transport: the server has no revocation list (Config.Revocations)")
	}
	now := s.cfg.Now()
	if err := s.cfg.Revocations.Revoke(user, now); err != nil {
		return time.Time{}, 0, err
	}
	// A login verified before Revoke is either admitted already (closed
	// here) or checked again once admitted (serveConn).
	return now, s.closeConns(user, "", wire.CodeUnauthorized, "token revoked"), nil
}

func (s *Server) closeConns(user, device string, code uint32, msg string) int {
	s.mu.Lock()
	var victims []*conn
	for _, c := range s.perUser[user] {
		if device == "" || c.device == device {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	for _, c := range slices.Backward(victims) {
		c.qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
	}
	return len(victims)
}
