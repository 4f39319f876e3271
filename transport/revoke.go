package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/actors"
	"github.com/imsync/imsync/transport/wire"
)

// Revocations remember, per user, when their tokens were revoked: a token
// issued at or before that second is refused (see Revoked).
//
// Opened on an event store (OpenRevocations, what `imsync serve` does),
// they are TokensRevoked events in the store's stream RevocationsStream:
// every node sharing the store loads them at start and follows the stream,
// so a revocation through one node reaches every node (and closes the
// user's connections there) as soon as the store delivers the event. The
// stream also carries the servers' device disconnects (DeviceDisconnected,
// see Server.DisconnectDevice). Loaded from a data directory alone
// (LoadRevocations), they live in that directory's file RevocationsFile
// and stay on that node.
type Revocations struct {
	path   string  // file mode: the file written on each Revoke
	stream *revLog // store mode: the stream appended to and followed
	mu     sync.Mutex
	users  map[string]time.Time
	// watchers learn of revocations (made through these Revocations or
	// read from the store) and of disconnects read from the store: the
	// servers using them close the connections concerned.
	watchers []*revWatcher
}

// revWatcher is one server's interest in the revocations (watch).
type revWatcher struct {
	revoked      func(user string, at time.Time)
	disconnected func(user, device string, at time.Time)
}

// RevocationsFile is the file in the data directory.
const RevocationsFile = "revoked-tokens.json"

// LoadRevocations reads dir's revocations (none when the file is absent).
// Revoke writes the file again: these revocations are this node's alone.
func LoadRevocations(dir string) (*Revocations, error) {
	users, err := readRevocationsFile(dir)
	if err != nil {
		return nil, err
	}
	return &Revocations{path: filepath.Join(dir, RevocationsFile), users: users}, nil
}

func readRevocationsFile(dir string) (map[string]time.Time, error) {
	path := filepath.Join(dir, RevocationsFile)
	users := map[string]time.Time{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return users, nil
	}
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	if err := json.Unmarshal(b, &users); err != nil {
		return nil, fmt.Errorf("transport: %s is damaged: %w", path, err)
	}
	if users == nil { // the file held null
		users = map[string]time.Time{}
	}
	return users, nil
}

// Revoke refuses from now on every token of user issued at or before at,
// and makes that durable (in the store or the file) before returning. A
// time at or before the user's last revocation changes nothing.
//
// The servers using r (Config.Revocations) close the user's connections
// whose token it refuses, on this node at once and, in store mode, on the
// other nodes as they read it.
func (r *Revocations) Revoke(user string, at time.Time) error {
	return r.revoke(user, at, nil)
}

// revoke is Revoke without telling skip (the server that closes its
// connections itself, to count them).
func (r *Revocations) revoke(user string, at time.Time, skip *revWatcher) error {
	at = at.UTC()
	if r.stream != nil {
		if !at.After(r.RevokedAt(user)) {
			return nil
		}
		// Appended first, applied after: a failed append changes nothing.
		if err := r.stream.append(user, at); err != nil {
			return err
		}
		if r.apply(user, at) {
			r.notify(user, at, skip)
		}
		return nil
	}
	r.mu.Lock()
	prev, had := r.users[user]
	if had && !at.After(prev) {
		r.mu.Unlock()
		return nil
	}
	r.users[user] = at
	if err := r.save(); err != nil {
		if had {
			r.users[user] = prev
		} else {
			delete(r.users, user)
		}
		r.mu.Unlock()
		return err
	}
	r.mu.Unlock()
	r.notify(user, at, skip)
	return nil
}

// apply records a revocation; it reports whether it moved the user's time.
func (r *Revocations) apply(user string, at time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, had := r.users[user]; had && !at.After(prev) {
		return false
	}
	r.users[user] = at.UTC()
	return true
}

// watch registers w to learn of the revocations r applies (made through
// r, or read from the store) and of the disconnects read from the store,
// until unwatch. w's functions must not block.
func (r *Revocations) watch(w *revWatcher) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchers = append(r.watchers, w)
}

// unwatch forgets w (its server closed).
func (r *Revocations) unwatch(w *revWatcher) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchers = slices.DeleteFunc(r.watchers, func(o *revWatcher) bool { return o == w })
}

func (r *Revocations) watching() []*revWatcher {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.watchers)
}

func (r *Revocations) notify(user string, at time.Time, skip *revWatcher) {
	for _, w := range r.watching() {
		if w != skip {
			w.revoked(user, at)
		}
	}
}

func (r *Revocations) notifyDisconnect(user, device string, at time.Time) {
	for _, w := range r.watching() {
		w.disconnected(user, device, at)
	}
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

// Close stops following the store (nothing to do in file mode).
func (r *Revocations) Close() error {
	if r == nil || r.stream == nil {
		return nil
	}
	r.stream.stop()
	return nil
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

// Disconnect closes this node's connections of user's device (every device
// of the user when device is empty) with code 109 DISCONNECTED, and returns
// how many it closed. DisconnectDevice reaches every node.
func (s *Server) Disconnect(user, device string) int {
	return s.closeConns(user, device, func(*conn) bool { return true }, wire.CodeDisconnected, disconnectedMsg)
}

const disconnectedMsg = "disconnected by the server"

// DisconnectDevice closes the connections of user's device on every node of
// the cluster with code 109 DISCONNECTED. The device may log in again: to
// keep it out, revoke.
//
// This node closes its own, then asks the device grain, which knows where
// the device's connections are attached and tells each to close (the fast
// path, and the count). With revocations on a shared store
// (OpenRevocations) the disconnect is then recorded in RevocationsStream:
// every node, following the stream, closes the device's connections
// established up to the call (within about a second), whether or not the
// grain knew them. Without a shared store only the grain reaches other
// nodes.
//
// The count is what the cluster knew: the larger of the connections this
// node closed and those attached to the device grain. Connections on other
// nodes close whether or not they are counted: 0 does not mean that none
// was there (the grain may have moved and not relearnt them yet). A
// connection still logging in is not counted and not closed.
//
// If recording the disconnect in the store fails, the connections closed
// already (by this node and through the grain) stay closed: the count of
// those comes with the error, and a retry is safe.
func (s *Server) DisconnectDevice(ctx context.Context, user, device string) (int, error) {
	if err := actors.ValidateID("user", user); err != nil {
		return 0, err
	}
	if err := actors.ValidateID("device", device); err != nil {
		return 0, err
	}
	at := s.cfg.Now()
	local := s.closeConns(user, device, func(*conn) bool { return true }, wire.CodeDisconnected, disconnectedMsg)
	if s.cfg.Revocations == nil || s.cfg.Revocations.stream == nil {
		known, err := s.cfg.Service.DisconnectDevice(ctx, user, device, wire.CodeDisconnected, disconnectedMsg)
		if err != nil {
			return local, err // this node's are closed all the same
		}
		return max(local, known), nil
	}
	// Asked before the stream is written: otherwise the other nodes could
	// close (and detach) the connections before the grain counts them.
	gctx, cancel := context.WithTimeout(ctx, disconnectGrainTimeout)
	known, gerr := s.cfg.Service.DisconnectDevice(gctx, user, device, wire.CodeDisconnected, disconnectedMsg)
	cancel()
	closed := local
	if gerr == nil {
		closed = max(local, known)
	}
	if err := s.cfg.Revocations.stream.appendDisconnect(user, device, at); err != nil {
		// What is closed stays closed: say how many along with the error.
		return closed, fmt.Errorf("%w (%d connection(s) of the device closed already; other nodes may keep theirs: ask again)", err, closed)
	}
	if gerr != nil {
		s.cfg.Logger.Warn("disconnect: the device grain did not answer; the other nodes close the device's connections from the revocations stream", "user", user, "device", device, "err", gerr)
	}
	return closed, nil
}

// disconnectGrainTimeout bounds the device grain's answer to a disconnect
// when the store reaches every node anyway.
const disconnectGrainTimeout = 5 * time.Second

// CloseConnection ends the connection (the device grain asks, for
// DisconnectDevice on any node).
func (c *conn) CloseConnection(code uint32, reason string) {
	c.qc.CloseWithError(quic.ApplicationErrorCode(code), reason)
}

// RevokeTokens refuses every token of user issued up to now (persisted in
// Config.Revocations) and closes the user's connections on this node with
// code 102 UNAUTHORIZED. It returns the revocation time (now, or a later
// one already recorded: it never moves backwards) and how many
// connections it closed. With revocations on a shared store the other
// nodes close theirs when they read the revocation (within about a
// second); they are not counted.
func (s *Server) RevokeTokens(user string) (time.Time, int, error) {
	if s.cfg.Revocations == nil {
		return time.Time{}, 0, errors.New("transport: the server has no revocation list (Config.Revocations)")
	}
	now := s.cfg.Now()
	// This server closes its own connections below, to count them; other
	// servers on the same Revocations learn of it from revoke.
	if err := s.cfg.Revocations.revoke(user, now, s.watcher); err != nil {
		return time.Time{}, 0, err
	}
	// A login verified before Revoke is either admitted already (closed
	// here) or checked again once admitted (serveConn).
	at := s.cfg.Revocations.RevokedAt(user) // now, or a later one of another node
	return at, s.closeRevoked(user, at), nil
}

// revocationWatcher closes what the revocations of other nodes (or of
// Revocations.Revoke) and the disconnects of other nodes reach.
func (s *Server) revocationWatcher() *revWatcher {
	return &revWatcher{
		revoked: func(user string, at time.Time) {
			if n := s.closeRevoked(user, at); n > 0 {
				s.cfg.Logger.Info("tokens revoked: connections closed", "user", user, "revoked_at", at.Format(time.RFC3339), "closed", n)
			}
		},
		disconnected: func(user, device string, at time.Time) {
			// Only those made by then: a device that logged in again
			// after the disconnect, before this node read it, stays.
			byThen := at.UnixMilli()
			n := s.closeConns(user, device, func(c *conn) bool { return c.admitted.UnixMilli() <= byThen }, wire.CodeDisconnected, disconnectedMsg)
			if n > 0 {
				s.cfg.Logger.Info("device disconnected: connections closed", "user", user, "device", device, "at", at.Format(time.RFC3339Nano), "closed", n)
			}
		},
	}
}

// closeRevoked closes user's connections whose token was issued in or
// before the second of at (not those re-authenticated since).
func (s *Server) closeRevoked(user string, at time.Time) int {
	issuedBy := at.Unix()
	return s.closeConns(user, "", func(c *conn) bool {
		c.emu.Lock()
		defer c.emu.Unlock()
		return c.issued <= issuedBy
	}, wire.CodeUnauthorized, "token revoked")
}

// closeConns closes the admitted connections of user (of device, unless
// empty) that close approves.
func (s *Server) closeConns(user, device string, close func(*conn) bool, code uint32, msg string) int {
	s.mu.Lock()
	var victims []*conn
	for _, c := range s.perUser[user] {
		if device == "" || c.device == device {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	n := 0
	for _, c := range slices.Backward(victims) {
		if !close(c) {
			continue
		}
		c.qc.CloseWithError(quic.ApplicationErrorCode(code), msg)
		n++
	}
	return n
}
