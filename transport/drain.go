package transport

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/imsync/imsync/transport/wire"
)

// goAwayMessage is the message of the going-away notice and of the
// connection close that ends a drain (both with code 105 SHUTDOWN).
const goAwayMessage = "server going away: reconnect (to another server)"

// Draining reports whether Drain has begun.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Drain stops the server gracefully. New connections are refused at once
// (QUIC close 105 SHUTDOWN); every logged-in device is told to go
// elsewhere with ServerPush{error{code: 105}} on its control stream, and
// its requests are still served: a client finishes the calls it has in
// flight, then closes the connection itself and reconnects (the Go client
// does). Drain returns when every connection has closed, or when ctx ends;
// then it closes what is left, with 105, as Close does. It returns ctx's
// error if connections had to be closed.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.draining = true
	var notify []*conn
	for _, list := range s.perUser {
		notify = append(notify, list...)
	}
	s.mu.Unlock()
	s.cfg.Logger.Info("draining", "connections", s.counts().conns)
	for _, c := range notify {
		go c.goAway() // a write may wait for a slow client
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	var err error
	for err == nil && s.counts().conns > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			s.cfg.Logger.Warn("drain timeout: closing the connections left", "connections", s.counts().conns)
		case <-t.C:
		}
	}
	s.Close()
	return err
}

// goAway tells a welcomed device that the server is going away (once).
// One not yet welcomed is told right after its welcome (serveConn checks
// Draining then).
func (c *conn) goAway() {
	c.cmu.Lock()
	welcomed := c.welcomed
	c.cmu.Unlock()
	if !welcomed {
		return
	}
	c.away.Do(func() {
		c.writeControl(&wire.ServerPush{Push: &wire.ServerPush_Error{Error: &wire.Error{Code: wire.CodeShutdown, Message: goAwayMessage}}})
	})
}

// serverCounts are the gauges of a server.
type serverCounts struct {
	conns, preauth, users, devices int
}

func (s *Server) counts() serverCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := serverCounts{conns: len(s.conns), preauth: s.preauth, users: len(s.perUser)}
	for _, list := range s.perUser {
		seen := map[string]bool{}
		for _, c := range list {
			if !seen[c.device] {
				seen[c.device] = true
				n.devices++
			}
		}
	}
	return n
}

// warnings are the slow-consumer conditions of a connection, each logged
// once (the metrics count every occurrence).
type warnings struct{ bits atomic.Uint32 }

const (
	warnCoalesced = 1 << iota
	warnControl
	warnAnswers
	warnRate
	warnReadBudget
	warnWriteBudget
)

func (c *conn) warnOnce(bit uint32, msg string, args ...any) {
	for {
		old := c.warned.bits.Load()
		if old&bit != 0 {
			return
		}
		if c.warned.bits.CompareAndSwap(old, old|bit) {
			break
		}
	}
	c.s.cfg.Logger.Info(msg, append([]any{"user", c.user, "device", c.device, "remote", c.qc.RemoteAddr().String()}, args...)...)
}

// logDisconnect logs the end of a welcomed connection with its reason:
// at Debug when the client closed it or the server stopped, at Info when
// the server ended it for a cause (token expiry, replacement, a slow or
// broken client, an idle timeout).
func (c *conn) logDisconnect(since time.Time) {
	// The streams fail a moment before the connection's context has its
	// cause: wait for it (it comes at once when the connection is closing).
	select {
	case <-c.qc.Context().Done():
	case <-time.After(time.Second):
	}
	cause := context.Cause(c.qc.Context())
	reason, level := "closed", c.s.cfg.Logger.Debug
	var (
		app  *quic.ApplicationError
		idle *quic.IdleTimeoutError
	)
	switch {
	case errors.As(cause, &app) && app.Remote:
		reason = "client closed"
	case errors.As(cause, &app) && app.ErrorCode == quic.ApplicationErrorCode(wire.CodeShutdown):
		reason = "server stopping"
	case errors.As(cause, &app):
		reason, level = codeName(uint32(app.ErrorCode))+": "+app.ErrorMessage, c.s.cfg.Logger.Info
	case errors.As(cause, &idle):
		reason, level = "idle timeout", c.s.cfg.Logger.Info
	case cause != nil:
		reason, level = cause.Error(), c.s.cfg.Logger.Info
	}
	c.s.cfg.Metrics.disconnected(metricReason(cause))
	level("device disconnected", "user", c.user, "device", c.device, "remote", c.qc.RemoteAddr().String(), "reason", reason, "connected", time.Since(since).Round(time.Millisecond).String())
}

// metricReason is a bounded label for a connection's end.
func metricReason(cause error) string {
	var (
		app  *quic.ApplicationError
		idle *quic.IdleTimeoutError
	)
	switch {
	case errors.As(cause, &app) && app.Remote:
		return "client_closed"
	case errors.As(cause, &app):
		return codeName(uint32(app.ErrorCode))
	case errors.As(cause, &idle):
		return "idle_timeout"
	}
	return "other"
}

// timedOut: err is a write deadline that passed (the peer did not read),
// not a connection or stream that ended.
func timedOut(err error) bool {
	var ne net.Error
	var idle *quic.IdleTimeoutError
	return errors.As(err, &ne) && ne.Timeout() && !errors.As(err, &idle)
}
