package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/imsync/imsync/transport/wire"
)

// Defaults of Config.KeepAlive and Config.IdleTimeout: a server that is
// gone (a crash, a lost network) is noticed within 8 s, and four pings
// fit in that time, so that one or two lost packets do not end a healthy
// connection.
const (
	DefaultKeepAlive   = 2 * time.Second
	DefaultIdleTimeout = 8 * time.Second
)

// errLost marks a call that failed because its connection or its request
// stream ended under it: the request may or may not have been run.
var errLost = errors.New("client: connection lost")

// session is one QUIC connection.
type session struct {
	c        *Client
	qc       *quic.Conn
	control  *quic.Stream
	cmu      sync.Mutex // writes to control
	maxFrame int        // the server's frame limit, from Welcome

	rmu  sync.Mutex
	main *requests // long-lived request stream for small calls; replaced when it ends

	reauthed chan *wire.ReauthResult // answers to Reauth

	done   chan struct{}
	err    error // why the session ended; read it after done is closed
	closer sync.Once

	amu   sync.Mutex
	calls int  // calls in flight on this session
	away  bool // the server is going away: no new calls; close when calls is 0
}

// errGoingAway ends a session whose server said it is going away (error
// 105 on the control stream) once its calls in flight are answered.
var errGoingAway = errors.New("client: server going away")

// begin counts a call on s; false if s takes no new calls.
func (s *session) begin() bool {
	s.amu.Lock()
	defer s.amu.Unlock()
	if s.away {
		return false
	}
	s.calls++
	return true
}

// end uncounts a call; the last call of a session going away closes it.
func (s *session) end() {
	s.amu.Lock()
	s.calls--
	idle := s.away && s.calls == 0
	s.amu.Unlock()
	if idle {
		s.close(errGoingAway)
	}
}

// goAway: the server is draining. New calls wait for the next connection
// (forget); this one closes once its calls in flight are answered, and
// the client reconnects with its usual back-off.
func (s *session) goAway() {
	s.c.forget(s)
	s.amu.Lock()
	s.away = true
	idle := s.calls == 0
	s.amu.Unlock()
	if idle {
		s.close(errGoingAway)
	}
}

func newSession(c *Client, qc *quic.Conn) *session {
	return &session{c: c, qc: qc, done: make(chan struct{}), maxFrame: wire.DefaultMaxFrameSize, reauthed: make(chan *wire.ReauthResult, 1)}
}

// start runs the session's background work once it is logged in.
func (s *session) start(w *wire.Welcome) {
	if w.MaxFrameSize > 0 {
		s.maxFrame = int(w.MaxFrameSize)
	}
	go s.keepAlive(s.c.cfg.KeepAlive)
	if s.c.cfg.TokenSource != nil && w.TokenExpires > 0 {
		go s.refresh(time.Unix(w.TokenExpires, 0))
	}
}

// refreshLead is how long before its token expires a session
// re-authenticates: a quarter of the remaining lifetime, at most a minute.
func refreshLead(remaining time.Duration) time.Duration {
	return min(remaining/4, time.Minute)
}

// refresh re-authenticates the session with a token from TokenSource
// before each token expires. If no fresh token is accepted in time, the
// server closes the connection at expiry and the client logs in again.
func (s *session) refresh(expires time.Time) {
	log := s.c.cfg.Logger
	for {
		remaining := time.Until(expires)
		if remaining <= 0 {
			return
		}
		select {
		case <-s.done:
			return
		case <-time.After(remaining - refreshLead(remaining)):
		}
		ctx, cancel := context.WithDeadline(context.Background(), expires)
		next, err := s.reauth(ctx)
		cancel()
		if err != nil {
			log.Warn("re-authentication failed", "err", err)
			select { // try again, well before the expiry
			case <-s.done:
				return
			case <-time.After(min(time.Until(expires)/4, 10*time.Second)):
			}
			continue
		}
		expires = next
	}
}

// reauth sends a fresh token and waits for the server's answer.
func (s *session) reauth(ctx context.Context) (time.Time, error) {
	token, err := s.c.cfg.TokenSource(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("client: token source: %w", err)
	}
	select { // an answer to an earlier, timed-out attempt
	case <-s.reauthed:
	default:
	}
	if err := s.writeControl(&wire.ClientControl{Control: &wire.ClientControl_Reauth{Reauth: &wire.Reauth{Token: token}}}); err != nil {
		return time.Time{}, err
	}
	select {
	case r := <-s.reauthed:
		if r.Error != nil {
			return time.Time{}, r.Error
		}
		return time.Unix(r.TokenExpires, 0), nil
	case <-s.done:
		return time.Time{}, s.err
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}

func (s *session) close(cause error) {
	s.closer.Do(func() {
		s.err = fmt.Errorf("%w: %w", errLost, cause)
		s.qc.CloseWithError(0, "")
		s.c.forget(s)
		s.rmu.Lock()
		main := s.main
		s.rmu.Unlock()
		if main != nil {
			main.failAll(s.err)
		}
		close(s.done)
	})
}

func (s *session) writeControl(m proto.Message) error {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return wire.WriteFrame(s.control, m)
}

func (s *session) readControl(rd *wire.Reader) {
	for {
		var p wire.ServerPush
		if err := rd.Read(&p); err != nil {
			s.close(err)
			return
		}
		switch {
		case p.GetNotify() != nil:
			n := p.GetNotify()
			switch {
			case n.ConversationId != "":
				s.c.change(Change{Conversation: n.ConversationId, Seq: n.ConvSeq})
			case n.RefreshList:
				s.c.change(Change{})
			default:
				s.c.pending.Store(n) // an entry to apply if it is the next one
			}
			s.c.hear(n.UserSeq)
		case p.GetReauth() != nil:
			select {
			case s.reauthed <- p.GetReauth():
			default:
			}
		case p.GetError().GetCode() == wire.CodeShutdown:
			s.c.cfg.Logger.Debug("server going away", "err", p.GetError())
			s.goAway()
		case p.GetError() != nil:
			s.c.cfg.Logger.Warn("server error", "err", p.GetError())
		}
	}
}

// keepAlive writes a ping on the control stream every period. Each ping is
// new data, sent at once (QUIC's own keep-alive PINGs are, once lost,
// repeated only at ever longer intervals): a server restarted since
// answers the first one with a stateless reset, which ends the session.
func (s *session) keepAlive(period time.Duration) {
	if period <= 0 {
		return
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for n := uint64(1); ; n++ {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.probe(n)
	}
}

// probe writes a ping; a write that fails ends the session.
//
// A server answers only packets larger than 42 bytes with a stateless
// reset (a reset must be smaller than what it answers, RFC 9000 10.3), so
// a probe is two pings with 10-byte nonces in one write: about 55 bytes
// on the wire.
func (s *session) probe(nonce uint64) {
	var b []byte
	for i := range uint64(2) {
		ping := &wire.ClientControl{Control: &wire.ClientControl_Ping{Ping: &wire.Ping{Nonce: 1<<63 | nonce<<1 | i}}}
		b, _ = wire.AppendFrame(b, ping)
	}
	s.cmu.Lock()
	_, err := s.control.Write(b)
	s.cmu.Unlock()
	if err != nil {
		s.close(err)
	}
}

// lost reports whether err means that the connection itself ended, and
// then ends the session (so that the client reconnects).
func (s *session) lost(err error) bool {
	var (
		app   *quic.ApplicationError
		tr    *quic.TransportError
		idle  *quic.IdleTimeoutError
		reset *quic.StatelessResetError
	)
	switch {
	case errors.Is(err, errLost):
		return true
	case errors.As(err, &app), errors.As(err, &tr), errors.As(err, &idle), errors.As(err, &reset):
		s.close(err)
		return true
	}
	select {
	case <-s.qc.Context().Done():
		s.close(context.Cause(s.qc.Context()))
		return true
	default:
		return false
	}
}

// requestStream returns the long-lived request stream, opening a new one
// if the server ended the last.
func (s *session) requestStream(ctx context.Context) (*requests, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.main != nil && !s.main.ended() {
		return s.main, nil
	}
	select {
	case <-s.done:
		return nil, s.err
	default:
	}
	st, err := s.qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	s.main = newRequests(st, s)
	return s.main, nil
}

// maxCallAttempts bounds how often one call is tried on fresh streams or
// connections.
const maxCallAttempts = 5

// do runs one request. Bulky requests (pages) get a stream of their own,
// so that they never delay small ones on the shared stream. A request is
// refused locally when it exceeds the server's frame limit. A request that
// is safe to repeat (see retryable) and fails because its stream or
// connection ended is tried again, on a new stream or, once the client has
// reconnected, on the new connection; ctx bounds the whole.
func (c *Client) do(ctx context.Context, req *wire.Request, bulky bool) (*wire.Response, error) {
	for attempt := 1; ; attempt++ {
		s, err := c.session(ctx)
		if err != nil {
			return nil, err
		}
		if !s.begin() { // going away: wait for the next session
			attempt--
			continue
		}
		req.Id = c.nextID.Add(1)
		if n := proto.Size(req) + 10; n > s.maxFrame {
			s.end()
			return nil, &wire.Error{Code: CodeTooLarge, Message: fmt.Sprintf("request of %d bytes exceeds the server's frame limit of %d bytes", n, s.maxFrame)}
		}
		var res *wire.Response
		if bulky {
			res, err = s.oneShot(ctx, req)
		} else {
			var r *requests
			if r, err = s.requestStream(ctx); err == nil {
				res, err = r.roundTrip(ctx, req)
			}
		}
		s.end()
		if err == nil {
			if e := res.GetError(); e != nil {
				return nil, e
			}
			return res, nil
		}
		if ctx.Err() != nil {
			// Unanswered in time: make sure the connection is still there
			// (a dead one ends at once, so that the client reconnects).
			go s.probe(0)
			return nil, err
		}
		connLost := s.lost(err)
		if !connLost && !errors.Is(err, errStreamEnded) {
			return nil, err
		}
		if !retryable(req) || attempt >= maxCallAttempts || (connLost && c.cfg.NoReconnect) {
			return nil, err
		}
		c.cfg.Logger.Debug("retrying a call", "attempt", attempt, "err", err)
	}
}

// retryable: requests that the server runs at most once however often
// they arrive, or that only read.
func retryable(req *wire.Request) bool {
	switch op := req.Op.(type) {
	case *wire.Request_Send:
		return op.Send.ClientMsgId != ""
	case *wire.Request_CreateGroup:
		return op.CreateGroup.Id != ""
	case *wire.Request_OpenDirect, *wire.Request_MarkRead, *wire.Request_Sync,
		*wire.Request_History, *wire.Request_Conversations, *wire.Request_Conversation:
		return true
	}
	return false
}

// errStreamEnded: the server ended a request stream with calls pending.
var errStreamEnded = errors.New("client: request stream ended")

// requests multiplexes calls over one stream by request id.
type requests struct {
	st      *quic.Stream
	sess    *session
	wmu     sync.Mutex
	mu      sync.Mutex
	pending map[uint64]chan *wire.Response
	err     error // set once the stream ended; never nil after
}

func newRequests(st *quic.Stream, s *session) *requests {
	r := &requests{st: st, sess: s, pending: map[uint64]chan *wire.Response{}}
	go r.readLoop()
	return r
}

func (r *requests) ended() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err != nil
}

func (r *requests) readLoop() {
	rd := wire.NewReader(r.st, wire.DefaultMaxFrameSize)
	var why error // an error the server sent for the stream as a whole
	for {
		var res wire.Response
		if err := rd.Read(&res); err != nil {
			if r.sess.lost(err) {
				r.failAll(r.sess.errOr(err))
				return
			}
			if why == nil {
				why = err
			}
			// The server ended this stream (not the connection): calls
			// still pending on it fail; later calls get a new stream.
			r.st.CancelWrite(0)
			r.failAll(fmt.Errorf("%w: %w", errStreamEnded, why))
			return
		}
		if res.Id == 0 {
			// An answer to no request: the server could not read one and
			// ends the stream; remember why.
			if e := res.GetError(); e != nil && why == nil {
				why = e
			}
			continue
		}
		r.mu.Lock()
		ch := r.pending[res.Id]
		delete(r.pending, res.Id)
		r.mu.Unlock()
		if ch != nil {
			ch <- &res
		}
	}
}

// errOr is the session's end, once it has ended, or else err.
func (s *session) errOr(err error) error {
	select {
	case <-s.done:
		return s.err
	default:
		return fmt.Errorf("%w: %w", errLost, err)
	}
}

func (r *requests) failAll(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		r.err = err
	}
	for id, ch := range r.pending {
		close(ch)
		delete(r.pending, id)
	}
}

func (r *requests) roundTrip(ctx context.Context, req *wire.Request) (*wire.Response, error) {
	ch := make(chan *wire.Response, 1)
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return nil, r.err
	}
	r.pending[req.Id] = ch
	r.mu.Unlock()
	r.wmu.Lock()
	err := wire.WriteFrame(r.st, req)
	r.wmu.Unlock()
	if err != nil {
		r.mu.Lock()
		delete(r.pending, req.Id)
		r.mu.Unlock()
		if r.sess.lost(err) {
			return nil, r.sess.errOr(err)
		}
		// The server stopped reading this stream: it is of no more use.
		err = fmt.Errorf("%w: %w", errStreamEnded, err)
		r.failAll(err)
		return nil, err
	}
	select {
	case res, ok := <-ch:
		if !ok {
			r.mu.Lock()
			defer r.mu.Unlock()
			return nil, r.err // set before the channel was closed
		}
		return res, nil
	case <-ctx.Done():
		r.mu.Lock()
		delete(r.pending, req.Id)
		r.mu.Unlock()
		return nil, ctx.Err()
	}
}
